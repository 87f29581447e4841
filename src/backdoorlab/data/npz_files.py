"""Finding and reading a dataset's single ``.npz`` file (``fsdd.npz``, ``orl_faces.npz``, ``gtsrb.npz``).

A dataset read from one file takes ``data_dir`` as either the folder that holds the file under its usual name
or the path of the file itself, so users can keep their copy anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError


def locate_file(dataset: str, data_dir: str | Path | None, filename: str, layout: str) -> Path:
    """The data file of ``dataset``: ``data_dir`` itself when it is a file, else ``data_dir / filename``.

    Raises :class:`DataError` naming the file and what it should hold when it is missing.
    """
    if data_dir is None:
        raise DataError(
            f"dataset {dataset!r} is read from {filename}: pass --data-dir (the folder that holds it, "
            f"or the file itself); expected {layout}"
        )
    path = Path(data_dir).expanduser()
    path = path if path.is_file() else path / filename
    if not path.is_file():
        raise DataError(f"{path}: file not found (dataset {dataset!r} expects {layout})")
    return path


def read_npz_arrays(path: Path, keys: Sequence[str], layout: str) -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` at ``path``, loaded without pickles; DataError when one of ``keys`` is missing."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz ({err}); expected {layout}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)}; expected {layout}")
    return arrays


def class_names(arrays: dict[str, np.ndarray]) -> list[str] | None:
    """The ``classes`` array of a file as strings, or None when it has none."""
    return [str(c) for c in arrays["classes"]] if "classes" in arrays else None
