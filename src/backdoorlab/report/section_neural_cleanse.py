"""Report section for Neural Cleanse: verdict table, anomaly-index bars with the cutoff, reversed triggers."""

from __future__ import annotations

from pathlib import Path

from .inspection import inspection_section, population_section, population_table
from .render import Section
from .sections import SECTION_BUILDERS

__all__ = ["neural_cleanse_section", "population_section", "population_table"]


@SECTION_BUILDERS.register("neural_cleanse")
def neural_cleanse_section(records: list, directory: Path) -> Section | None:
    note = (
        "Neural Cleanse (Wang et al. 2019) reverse-engineers, for every label, the smallest mask + pattern that sends "
        "clean images to it; the statistic is the mask's L1 norm. For the decision at alpha (the default) the index "
        "of a label is Grubbs' leave-one-out distance (mean of the other labels' s - its s) / their standard "
        "deviation, with s = log L1; the paper's anomaly index |s - median| / (1.4826 MAD) of s = L1 with its fixed "
        "cutoff 2 is the alternative (index: paper, cutoff: 2). A label below the median with an index above the "
        "cutoff is flagged, the cutoff chosen so that a model without a backdoor is flagged with probability alpha. "
        "The real trigger's mask L1 is shown beside the reversed ones."
    )
    return inspection_section("Neural Cleanse", records, directory, "neural_cleanse", note)
