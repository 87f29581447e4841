"""Run every ``benchmarks/bench_*.py`` (or the ones named on the command line) and print their tables.

Each benchmark module has ``main() -> bool`` (True when every target is met). Exit code 1 if any missed.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    chosen = [n for n in names if not argv or any(a in n for a in argv)]
    ok = True
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        passed = importlib.import_module(f"benchmarks.{name}").main()
        print(f"--- {name}: {'all targets met' if passed else 'TARGET MISSED'} ({time.perf_counter() - start:.0f} s)")
        ok &= bool(passed)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
