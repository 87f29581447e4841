"""Report section for DeepInspect: verdict table, deviation-factor bars with the alpha = 0.05 cutoff, triggers."""

from __future__ import annotations

from pathlib import Path

from .inspection import inspection_section, population_section, population_table
from .render import Section
from .sections import SECTION_BUILDERS

__all__ = ["deepinspect_section", "population_section", "population_table"]


@SECTION_BUILDERS.register("deepinspect")
def deepinspect_section(records: list, directory: Path) -> Section | None:
    lite = sorted({r.outcome.artifacts["verdict"].method for r in records if "verdict" in r.outcome.artifacts})
    note = (
        "DeepInspect (Chen et al. 2019) trains a conditional generator G(z, t) against the frozen model on "
        "model-inverted data and measures, per label, the L1 size of the perturbations it needs; labels whose "
        "perturbations do not reach them are not counted. For the decision at alpha (the default) the index of a "
        "label is Grubbs' leave-one-out distance (mean of the other labels' s - its s) / their standard deviation, "
        "with s = log size, infected above the cutoff at the stated false-alarm rate; the paper's deviation factor "
        "(median - s) / (1.4826 MAD of the left half) of s = size, infected above 2, is the alternative. Rows marked "
        "deepinspect-lite used the clean validation images instead of model inversion. Masks show the mean "
        f"|perturbation| per pixel. Methods in this run: {', '.join(lite) or 'none'}."
    )
    return inspection_section("DeepInspect", records, directory, "deepinspect", note)
