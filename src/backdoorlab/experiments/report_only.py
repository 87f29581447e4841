"""`backdoorlab report RUN`: rebuild a run's report from the results database and its saved cell artifacts."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .config import parse_config
from .grid import expand_cells
from .store import ResultsStore
from .workbench import Workbench


def rebuild_report(run: str, output_dir: str | Path = "runs") -> tuple[Path, Path]:
    """(report.html, report.md) of ``run``, rewritten from ``output_dir/results.sqlite``."""
    from ..report.build import build_run_report

    db = Path(output_dir) / "results.sqlite"
    if not db.is_file():
        raise ConfigError(f"{db}: no results database (run `backdoorlab run` first, or pass --output)")
    with ResultsStore(db) as store:
        config = store.run_config(run)
        if config is None:
            names = ", ".join(r for r, _, _ in store.runs()[:10]) or "(none)"
            raise ConfigError(f"no run named {run!r} in {db}; runs: {names}")
        rows = store.rows(run)
        seconds = sum(store.finished_cells(run).values())
    cfg = parse_config(config, f"config of run {run}")
    bench = Workbench(cfg, output_dir)
    md, html = build_run_report(Path(output_dir) / run, run, cfg, bench, rows, expand_cells(cfg), seconds, {})
    return html, md
