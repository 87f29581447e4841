"""Helpers shared by the benchmarks: seeds from the environment, a plain-text table, target checks."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from backdoorlab.metrics import mean_ci


def bench_seeds(default: int = 3) -> list[int]:
    """Seeds 0..N-1, N from ``BENCH_SEEDS`` (default 3)."""
    return list(range(int(os.environ.get("BENCH_SEEDS", default))))


def bench_workers(default: int = 1) -> int:
    """Worker processes from ``BENCH_WORKERS`` (default ``default``)."""
    return max(1, int(os.environ.get("BENCH_WORKERS", default)))


def _one_thread_then(fn: Callable, arg):
    import torch

    torch.set_num_threads(1)
    return fn(arg)


def map_in_workers(fn: Callable, args: Sequence, workers: int) -> list:
    """``[fn(a) for a in args]``, in ``workers`` spawned processes at one torch thread each when ``workers`` > 1.

    ``fn`` must be a module-level function and its arguments and results picklable.
    """
    if workers <= 1 or len(args) <= 1:
        return [fn(a) for a in args]
    with ProcessPoolExecutor(min(workers, len(args)), mp_context=get_context("spawn")) as pool:
        return list(pool.map(_one_thread_then, [fn] * len(args), args))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def fmt(values: Sequence[float]) -> str:
    mean, ci = mean_ci(list(values))
    return f"{mean:.4f} ± {ci:.4f}" if ci else f"{mean:.4f}"


def check(name: str, value: float, target: str, ok: bool) -> list[object]:
    return [name, f"{value:.4f}", target, "ok" if ok else "MISSED"]
