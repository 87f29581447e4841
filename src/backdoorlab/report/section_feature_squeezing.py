"""Report section of Feature Squeezing: the detection table and histograms of the joint L1 score."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .detectors import detection_matrix_table, file_stem, first_seed_panels, histogram_figure
from .render import Section
from .sections import SECTION_BUILDERS


@SECTION_BUILDERS.register("feature_squeezing")
def feature_squeezing_section(records: Sequence, directory: Path) -> Section | None:
    """The Feature Squeezing section: detection table and one score-histogram figure per configuration."""
    if not records:
        return None
    figures = []
    for config, panels in first_seed_panels(records).items():
        figures.append(
            histogram_figure(
                panels,
                Path(directory) / f"feature_squeezing_scores_{file_stem(config)}.png",
                xlabel="max L1 distance of softmax outputs (log scale)",
                title=f"Feature Squeezing {config}: scores of clean vs triggered test inputs (dashed: threshold)",
                names=("clean", "triggered", "threshold"),
                log_x=True,
            )
        )
    return Section(
        "Feature Squeezing",
        paragraphs=[
            "Score: the largest L1 distance between the softmax of an input and of its squeezed versions; "
            "inputs above the threshold (set on the clean val split at the chosen FPR) are flagged. Feature "
            "Squeezing was designed for adversarial examples; no published figure exists for backdoor triggers.",
        ],
        tables=[detection_matrix_table(records)],
        figures=figures,
    )
