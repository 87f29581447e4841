"""``python -m backdoorlab``: the same as the ``backdoorlab`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
