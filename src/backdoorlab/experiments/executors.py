"""Executors: where cells are computed. Results always come back to the driver, which alone writes them.

- ``local``: in this process, one cell after another (``workers=1``), or a pool of worker processes;
- ``ray``: each cell is a Ray task on a cluster (``pip install backdoorlab[ray]``).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from ..errors import ConfigError
from .config import ExperimentConfig
from .grid import Cell
from .workbench import CellResult, Workbench

_worker: Workbench | None = None
_worker_key: str | None = None


def _bench_for(cfg_json: str, output_dir: str, device: str | None, threads: int | None) -> Workbench:
    """The process's workbench for this config (made once per process and config)."""
    global _worker, _worker_key
    key = f"{cfg_json}|{output_dir}|{device}"
    if _worker is None or _worker_key != key:
        if threads:
            import torch

            torch.set_num_threads(threads)
        _worker = Workbench(ExperimentConfig.model_validate(json.loads(cfg_json)), output_dir, device=device)
        _worker_key = key
    return _worker


@dataclass
class FailedCell:
    """A cell that raised: ``error`` (``Type: first line of the message``), the formatted ``traceback``, its wall
    time, and the exception itself when it was raised in this process (None when it comes from a worker)."""

    cell: Cell
    error: str
    traceback: str
    seconds: float
    exception: BaseException | None = None


def attempt_cell(bench: Workbench, cell: Cell) -> CellResult | FailedCell:
    """``bench.run_cell(cell)``, or a :class:`FailedCell` when it raises an ``Exception`` (an interrupt passes)."""
    start = time.perf_counter()
    try:
        return bench.run_cell(cell)
    except Exception as err:  # noqa: BLE001 - any error of a method fails its cell, not the grid
        message = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        return FailedCell(
            cell,
            f"{type(err).__name__}: {message}" if message else type(err).__name__,
            "".join(traceback.format_exception(err)),
            time.perf_counter() - start,
            err,
        )


def run_cell_remote(
    cfg_json: str, output_dir: str, device: str | None, threads: int | None, cell: Cell
) -> CellResult | FailedCell:
    """Compute one cell in a worker process (pool or Ray); an error comes back as a :class:`FailedCell`."""
    outcome = attempt_cell(_bench_for(cfg_json, output_dir, device, threads), cell)
    if isinstance(outcome, FailedCell):
        outcome.exception = None  # not always picklable; the traceback text travels instead
    return outcome


class Executor:
    """Computes cells of one phase and yields each result (or :class:`FailedCell`) as it is ready."""

    def map(self, cells: Sequence[Cell]) -> Iterator[CellResult | FailedCell]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SequentialExecutor(Executor):
    def __init__(self, bench: Workbench) -> None:
        self.bench = bench

    def map(self, cells):
        for cell in cells:
            yield attempt_cell(self.bench, cell)


class _SubmitExecutor(Executor):
    """Shared logic of the pool and Ray executors: submit a phase's cells, yield results as they finish."""

    def __init__(self, cfg: ExperimentConfig, output_dir: Path, device: str | None, workers: int) -> None:
        self.args = (cfg.model_dump_json(), str(output_dir), device, max(1, (os.cpu_count() or 1) // workers))
        self.workers = workers


class ProcessPoolCellExecutor(_SubmitExecutor):
    def __init__(self, cfg, output_dir, device, workers):
        super().__init__(cfg, output_dir, device, workers)
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))

    def map(self, cells):
        pending = {self.pool.submit(run_cell_remote, *self.args, cell) for cell in cells}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()

    def close(self):
        self.pool.shutdown(cancel_futures=True)


class RayExecutor(_SubmitExecutor):
    def __init__(self, cfg, output_dir, device, workers, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray executor needs Ray: pip install 'backdoorlab[ray]'") from None
        super().__init__(cfg, output_dir, device, workers)
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
            ray.init(logging_level="ERROR", log_to_driver=False, **kwargs)
        self.remote = ray.remote(num_cpus=1)(run_cell_remote)

    def map(self, cells):
        pending = [self.remote.remote(*self.args, cell) for cell in cells]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])

    def close(self):
        if self.started:
            self.ray.shutdown()


def make_executor(
    name: str,
    bench: Workbench,
    cfg: ExperimentConfig,
    output_dir: Path,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    device: str | None = None,
) -> Executor:
    """``local`` (sequential when ``workers`` is 1, else a process pool) or ``ray``."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if name == "local":
        return SequentialExecutor(bench) if workers == 1 else ProcessPoolCellExecutor(cfg, output_dir, device, workers)
    if name == "ray":
        return RayExecutor(cfg, output_dir, device, workers, ray_address)
    raise ConfigError(f"unknown executor {name!r}; valid: local, ray")


Callback = Callable[[CellResult], None]
