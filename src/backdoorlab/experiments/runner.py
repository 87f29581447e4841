"""`backdoorlab run`: expand the grid, compute each cell once, commit it, and write the report.

A run is resumable: its name is derived from the config (or given), every cell is committed to SQLite with its
rows in one transaction, and a restarted run skips the committed cells. Models come from the content-hashed
cache, so nothing finished is recomputed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.progress import console, progress_enabled
from .artifacts import artifact_path, save_artifacts
from .config import ExperimentConfig
from .executors import make_executor
from .grid import PHASES, Cell, expand_cells
from .store import ResultRow, ResultsStore
from .workbench import CellResult, Workbench

Log = Callable[[str], None]


@dataclass
class RunResult:
    """What a run produced: its name and folder, the report files, the rows it measured, and its wall time."""

    run: str
    directory: Path
    report_md: Path
    report_html: Path
    rows: list[ResultRow]
    seconds: float
    computed: int = 0
    skipped: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def default_run_name(cfg: ExperimentConfig) -> str:
    """``<config name>-<8 hex digits of the config's hash>``: the same config resumes the same run."""
    digest = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:8]
    return f"{cfg.name}-{digest}"


def cell_rows(run: str, dataset: str, result: CellResult) -> list[ResultRow]:
    c = result.cell
    return [ResultRow(run, dataset, c.model, c.attack, c.defense, c.seed, k, v) for k, v in result.metrics.items()]


class Runner:
    """Runs one :class:`ExperimentConfig`. Everything is validated in ``__init__``, before anything is written."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        output_dir: str | Path = "runs",
        *,
        run_name: str | None = None,
        progress: bool | None = None,
        log: Log = print,
        executor: str = "local",
        workers: int = 1,
        ray_address: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.progress = progress_enabled(progress)
        self.log = log
        self.bench = Workbench(cfg, self.output_dir, progress=False)
        self.bench.check()
        self.cells = expand_cells(cfg)
        self.run_name = run_name or default_run_name(cfg)
        self.executor_args = dict(name=executor, workers=workers, ray_address=ray_address)
        if executor not in ("local", "ray"):
            from ..errors import ConfigError

            raise ConfigError(f"unknown executor {executor!r}; valid: local, ray")

    @property
    def directory(self) -> Path:
        return self.output_dir / self.run_name

    def _dataset_name(self, cell: Cell) -> str:
        return self.bench.dataset(cell.setting).name

    def run(self) -> RunResult:
        from ..report.build import build_run_report  # the report is the layer above; imported when used

        start = time.perf_counter()
        self.log(f"run {self.run_name}: {len(self.cells)} cells, device {self.bench.device}")
        with ResultsStore(self.output_dir / "results.sqlite") as store:
            store.start_or_resume(self.run_name, self.cfg.model_dump(mode="json"))
            done = store.finished_cells(self.run_name)
            todo = [c for c in self.cells if c.id not in done]
            if done:
                self.log(f"  resuming: {len(self.cells) - len(todo)} of {len(self.cells)} cells already finished")
            stage_seconds = self._compute(todo, store)
            rows = store.rows(self.run_name)
            seconds = time.perf_counter() - start
            md, page = build_run_report(
                self.directory, self.run_name, self.cfg, self.bench, rows, self.cells, seconds, stage_seconds
            )
            store.finish_run(self.run_name)
        return RunResult(
            self.run_name,
            self.directory,
            md,
            page,
            rows,
            seconds,
            len(todo),
            len(self.cells) - len(todo),
            stage_seconds,
        )

    def _compute(self, todo: list[Cell], store: ResultsStore) -> dict[str, float]:
        """Compute ``todo`` phase by phase; commit each cell as its result arrives. Returns seconds per phase."""
        stage_seconds: dict[str, float] = {}
        if not todo:
            return stage_seconds
        executor = make_executor(
            self.executor_args["name"],
            self.bench,
            self.cfg,
            self.output_dir,
            workers=self.executor_args["workers"],
            ray_address=self.executor_args["ray_address"],
            device=str(self.bench.device),
        )
        bar = _Bar(len(todo), self.progress)
        try:
            for phase in PHASES:
                cells = [c for c in todo if c.kind == phase]
                if not cells:
                    continue
                phase_start = time.perf_counter()
                for result in executor.map(cells):
                    self._commit(result, store)
                    bar.advance(f"{result.cell.id} ({result.seconds:.1f} s)")
                    self.log(f"  done {_describe(result)}")
                stage_seconds[phase] = time.perf_counter() - phase_start
        finally:
            bar.close()
            executor.close()
        return stage_seconds

    def _commit(self, result: CellResult, store: ResultsStore) -> None:
        if result.artifacts:
            save_artifacts(artifact_path(self.directory, result.cell.id), result.artifacts)
        rows = cell_rows(self.run_name, self._dataset_name(result.cell), result)
        store.commit_cell(self.run_name, result.cell.id, rows, result.seconds)


def _describe(result: CellResult) -> str:
    c = result.cell
    what = {"clean": "clean model", "attack": c.attack, "defense": f"{c.defense} on {c.attack}"}[c.kind]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items() if k != "seconds")
    return f"{c.dataset}/{c.model} seed {c.seed}: {what}: {shown} ({result.seconds:.1f} s)"


class _Bar:
    """One overall progress bar (cells done / total, ETA) on a terminal; nothing otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.progress = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("cells"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                console=console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("", total=total)

    def advance(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def run_experiment(cfg: ExperimentConfig, output_dir: str | Path = "runs", **kwargs) -> RunResult:
    """Validate, run and report ``cfg``; see :class:`Runner`."""
    return Runner(cfg, output_dir, **kwargs).run()
