"""`backdoorlab run`: expand the grid, compute each cell once and commit it to the results store.

A run is resumable: its name is derived from the config and the code (or given), every cell is committed to the
results store (SQLite, or PostgreSQL by URL) with its rows in one transaction, and a restarted run skips the
committed cells. Models come from the content-hashed cache, so nothing finished is recomputed. When it starts, a run
records in the store what its report needs besides the rows (each setting's dataset summary, class names and input
shape) and the code that computes it (:mod:`.fingerprint`); results made by other code are never reused. A cell that
raises does not stop the run: it is recorded as failed (its error in the store, its traceback in ``failures/`` of
the run folder), the cells that depend on it are recorded as skipped, the others run, and a resumed run tries them
again (``fail_fast`` stops at the first failure instead). The report is the layer above:
:func:`backdoorlab.report.write_run_report` builds it from the store.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..utils.files import write_atomic
from ..utils.progress import console, progress_enabled
from .artifacts import artifact_path, save_artifacts
from .config import ExperimentConfig
from .executors import FailedCell, make_executor
from .fingerprint import code_fingerprint
from .grid import PHASES, Cell, expand_cells
from .store import CellFailure, ResultRow, ResultsStore, RunCode, SettingInfo
from .store_url import store_url
from .workbench import CellResult, Workbench

Log = Callable[[str], None]


@dataclass
class RunResult:
    """What a run produced: its name, its folder (under the output folder, beside ``results.sqlite``), every row of
    the run, its wall time, the cells computed and skipped (finished before), the seconds of each phase, and the
    cells that failed or were skipped because one they depend on failed (``failed``)."""

    run: str
    directory: Path
    rows: list[ResultRow]
    seconds: float
    computed: int = 0
    skipped: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failed: list[CellFailure] = field(default_factory=list)

    @property
    def failed_count(self) -> int:
        """How many cells raised (the skipped ones not counted)."""
        return sum(f.status == "failed" for f in self.failed)

    def failure_summary(self) -> str:
        """One line: how many cells failed and were skipped, and the first failure; empty when none did."""
        failed = [f for f in self.failed if f.status == "failed"]
        if not failed:
            return ""
        skipped = len(self.failed) - len(failed)
        first = f"first: {failed[0].cell}: {failed[0].error}"
        return f"{len(failed)} cell(s) failed, {skipped} skipped as dependent on them ({first})"


def default_run_name(cfg: ExperimentConfig) -> str:
    """``<config name>-<8 hex digits of a hash of the config and the model sources>``: the same config resumes the
    same run, as long as the code that determines its models is the same."""
    payload = cfg.model_dump_json() + code_fingerprint().source
    return f"{cfg.name}-{hashlib.sha256(payload.encode()).hexdigest()[:8]}"


def run_code() -> RunCode:
    """This process's code fingerprint, as the store records it with a run."""
    fp = code_fingerprint()
    return RunCode(fp.version, fp.source, fp.commit)


def cell_rows(run: str, dataset: str, result: CellResult) -> list[ResultRow]:
    c = result.cell
    return [ResultRow(run, dataset, c.model, c.attack, c.defense, c.seed, k, v) for k, v in result.metrics.items()]


class Runner:
    """Runs one :class:`ExperimentConfig`. Everything is validated in ``__init__``, before anything is written.
    ``store``: the results store's URL or SQLite path (default ``output_dir/results.sqlite``; see :mod:`.store_url`);
    the run folder (artifacts, tracebacks) and the model cache stay under ``output_dir``."""

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
        fail_fast: bool = False,
        store: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.fail_fast = fail_fast
        self.output_dir = Path(output_dir)
        self.store_url = store_url(store, self.output_dir)  # checked here; opened by run()
        self.progress = progress_enabled(progress)
        self.log = log
        self.bench = Workbench(cfg, self.output_dir, progress=False)
        self.bench.check()
        self.cells = expand_cells(cfg)
        self.run_name = run_name or default_run_name(cfg)
        self.executor_args = dict(name=executor, workers=workers, ray_address=ray_address)
        if executor not in ("local", "ray"):
            raise ConfigError(f"unknown executor {executor!r}; valid: local, ray")

    @property
    def directory(self) -> Path:
        return self.output_dir / self.run_name

    def _dataset_name(self, cell: Cell) -> str:
        return self.bench.dataset(cell.setting).name

    def setting_infos(self) -> list[SettingInfo]:
        """What the report says of each (dataset, model) setting (the datasets are loaded already, by ``check``)."""
        infos = []
        for index, (_, model) in enumerate(self.bench.settings):
            ds = self.bench.dataset(index)
            infos.append(SettingInfo(index, ds.name, model, ds.summary(), tuple(ds.classes), tuple(ds.input_shape)))
        return infos

    def run(self) -> RunResult:
        """Compute every cell not finished yet and commit it; the report is written by the layer above."""
        start = time.perf_counter()
        self.log(f"run {self.run_name}: {len(self.cells)} cells, device {self.bench.device}")
        code = run_code()
        with ResultsStore(self.store_url) as store:
            done = store.finished_cells(self.run_name)
            _check_same_code(self.run_name, store.run_code(self.run_name), code, bool(done))
            store.start_or_resume(self.run_name, self.cfg.model_dump(mode="json"), code, self.setting_infos())
            todo = [c for c in self.cells if c.id not in done]
            if done:
                self.log(f"  resuming: {len(self.cells) - len(todo)} of {len(self.cells)} cells already finished")
            stage_seconds = self._compute(todo, store)
            rows, failed = store.rows(self.run_name), store.failures(self.run_name)
            seconds = time.perf_counter() - start
            store.finish_run(
                self.run_name,
                "incomplete" if failed else "finished",
                seconds=seconds if todo else None,
                stage_seconds=stage_seconds,
            )
        return RunResult(
            self.run_name, self.directory, rows, seconds, len(todo), len(self.cells) - len(todo), stage_seconds, failed
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
        broken: dict[str, str] = {}  # id of a failed or skipped cell -> the failed cell at its root
        try:
            for phase in PHASES:
                cells = []
                for cell in (c for c in todo if c.kind == phase):
                    root = broken.get(upstream(cell) or "")
                    if root is None:
                        cells.append(cell)
                        continue
                    broken[cell.id] = root
                    store.record_failure(self.run_name, CellFailure(cell.id, "skipped", f"depends on {root}"))
                    bar.advance(f"{cell.id} (skipped)")
                if not cells:
                    continue
                phase_start = time.perf_counter()
                for result in executor.map(cells):
                    if isinstance(result, FailedCell):
                        broken[result.cell.id] = result.cell.id
                        self._record_failure(result, store)
                    else:
                        self._commit(result, store)
                        self.log(f"  done {_describe(result)}")
                    bar.advance(f"{result.cell.id} ({result.seconds:.1f} s)")
                stage_seconds[phase] = time.perf_counter() - phase_start
        finally:
            bar.close()
            executor.close()
        return stage_seconds

    def _record_failure(self, failed: FailedCell, store: ResultsStore) -> None:
        """Store the failure and its traceback file; with ``fail_fast``, raise the cell's error."""
        name = Path("failures") / f"{hashlib.sha1(failed.cell.id.encode()).hexdigest()[:16]}.txt"
        write_atomic(self.directory / name, f"cell {failed.cell.id}\n\n{failed.traceback}")
        store.record_failure(
            self.run_name, CellFailure(failed.cell.id, "failed", failed.error, name.as_posix(), failed.seconds)
        )
        self.log(f"  FAILED {failed.cell.id}: {failed.error} (traceback: {self.directory / name})")
        if self.fail_fast:
            if failed.exception is not None:
                raise failed.exception
            raise RuntimeError(f"cell {failed.cell.id} failed: {failed.error}\n{failed.traceback}")

    def _commit(self, result: CellResult, store: ResultsStore) -> None:
        if result.artifacts:
            save_artifacts(artifact_path(self.directory, result.cell.id), result.artifacts)
        rows = cell_rows(self.run_name, self._dataset_name(result.cell), result)
        store.commit_cell(self.run_name, result.cell.id, rows, result.seconds)


def upstream(cell: Cell) -> str | None:
    """The id of the cell whose model ``cell`` uses (None for a clean cell): an attack cell measures against the
    clean model of its setting and seed; a defense or study cell runs on the attacked model, or the clean one."""
    if cell.kind == "clean":
        return None
    base = (cell.setting, cell.dataset, cell.model, cell.seed)
    if cell.kind == "attack" or cell.attack == "none":
        return Cell("clean", *base).id
    return Cell("attack", *base, attack=cell.attack).id


def _describe(result: CellResult) -> str:
    c = result.cell
    what = {
        "clean": "clean model",
        "attack": c.attack,
        "defense": f"{c.defense} on {c.attack}",
        "study": f"study {c.defense} on {'the clean model' if c.attack == 'none' else c.attack}",
    }[c.kind]
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


def _check_same_code(run: str, recorded: RunCode | None, code: RunCode, has_cells: bool) -> None:
    """Refuse to resume ``run`` when its finished cells were computed by other model-determining code (or by a
    version that did not record it): they would be stale results."""
    if not has_cells or (recorded is not None and recorded.source_hash == code.source_hash):
        return
    was = (
        f"model sources sha256 {recorded.source_hash[:12]}" if recorded and recorded.source_hash else "unrecorded code"
    )
    raise ConfigError(
        f"run {run!r} holds cells computed by other code ({was}; now {code.source_hash[:12]}): its results cannot be "
        "reused; give another --run-name (the default name follows the code)"
    )


def run_experiment(cfg: ExperimentConfig, output_dir: str | Path = "runs", **kwargs) -> RunResult:
    """Validate and run ``cfg``; see :class:`Runner`. The report: :func:`backdoorlab.report.write_run_report`."""
    return Runner(cfg, output_dir, **kwargs).run()
