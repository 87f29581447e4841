"""Report sections of the field's input detectors and sequential STRIP: detection table and score histograms."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from .detectors import detection_matrix_table, file_stem, first_seed_panels, histogram_figure
from .render import Section
from .sections import SECTION_BUILDERS

# registered name -> (title, what the score is, x-axis label)
SCORES = {
    "sequential_strip": (
        "Sequential STRIP",
        "minus the running mean entropy (bits) of the overlays an input drew before it stopped; same boundary as STRIP",
        "minus mean entropy (bits)",
    ),
    "scale_up": (
        "SCALE-UP",
        "scaled prediction consistency (the fraction of pixel scalings that keep the label), z-scored with the clean "
        "val statistics; flagged above T",
        "normalised SPC",
    ),
    "teco": (
        "TeCo",
        "standard deviation over 15 corruptions of the first severity that flips the label",
        "std of flip severities",
    ),
    "ibd_psc": (
        "IBD-PSC",
        "mean confidence in the input's label of the BN-amplified copies of the model; flagged above T",
        "PSC",
    ),
    "badexpert": (
        "BaDExpert",
        "the backdoor expert's confidence in the model's label",
        "expert confidence",
    ),
}


def field_detector_section(method: str, records: Sequence, directory: Path) -> Section | None:
    """Detection table (ROC-AUC, TPR at 1% / 5% FPR, ...) and one histogram figure per configuration."""
    if not records:
        return None
    title, meaning, xlabel = SCORES[method]
    figures = [
        histogram_figure(
            panels,
            Path(directory) / f"{method}_scores_{file_stem(config)}.png",
            xlabel=xlabel,
            title=f"{title} {config}: scores of clean vs triggered test inputs (dashed: threshold)",
            names=("clean", "triggered", "threshold"),
        )
        for config, panels in first_seed_panels(records).items()
    ]
    paragraph = (
        f"Score: {meaning}. Higher is more suspicious; the direction is fixed before any attacked input is seen."
    )
    return Section(title, paragraphs=[paragraph], tables=[detection_matrix_table(records)], figures=figures)


for _method in SCORES:
    SECTION_BUILDERS.register(_method)(partial(field_detector_section, _method))
