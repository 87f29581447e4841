"""Study cells: one study (:mod:`backdoorlab.studies`) on one model of the grid, measured like any other cell."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..studies import StudyContext
from .grid import Cell

if TYPE_CHECKING:
    from .workbench import Workbench


def run_study_cell(bench: Workbench, cell: Cell) -> tuple[dict[str, float], dict[str, Any]]:
    """(rows, artifacts) of the study labelled ``cell.defense`` on the clean model (``cell.attack`` is ``none``) or
    on the attacked model ``cell.attack`` of the cell's setting and seed; the study sees that model's backdoor."""
    study = dict(bench.cfg.build_studies())[cell.defense]
    if cell.attack == "none":
        model, backdoor = bench.clean_model(cell.setting, cell.seed), None
    else:
        backdoor = bench.backdoor(cell.setting, cell.attack, cell.seed)
        model = backdoor.model
    ctx = StudyContext(bench.dataset(cell.setting), seed=cell.seed, device=bench.device, progress=bench.progress)
    outcome = study.run(model, backdoor, ctx)
    return {k: float(v) for k, v in outcome.metrics.items()}, outcome.artifacts
