"""Report section of STRIP: the detection table, the paper's Table 3 figures, and entropy histograms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .detectors import detection_matrix_table, file_stem, first_seed_panels, histogram_figure, mean_metrics, percent
from .render import Section
from .sections import SECTION_BUILDERS
from .tables import Table


def boundary_table(records: Sequence) -> Table:
    """Per (detector, attack): clean val entropy mean and std, boundary (bits), FRR on clean test inputs and
    FAR on triggered ones (%), as in the paper's Table 3; means over seeds."""
    body = []
    for config, per in mean_metrics(records).items():
        for attack, m in per.items():
            far = 1.0 - m["tpr"] if "tpr" in m else float("nan")
            body.append(
                [
                    config,
                    attack,
                    f"{m.get('clean_entropy_mean', float('nan')):.3f}",
                    f"{m.get('clean_entropy_std', float('nan')):.3f}",
                    f"{m.get('entropy_boundary', float('nan')):.4f}",
                    percent(m.get("fpr", float("nan"))),
                    percent(far),
                ]
            )
    return Table(["detector", "attack", "clean entropy μ", "σ", "boundary", "FRR (%)", "FAR (%)"], body)


@SECTION_BUILDERS.register("strip")
def strip_section(records: Sequence, directory: Path) -> Section | None:
    """The STRIP section: detection table, boundary table, one entropy-histogram figure per configuration."""
    if not records:
        return None
    figures = []
    for config, panels in first_seed_panels(records, transform=lambda s: -s).items():
        figures.append(
            histogram_figure(
                panels,
                Path(directory) / f"strip_entropy_{file_stem(config)}.png",
                xlabel="mean entropy (bits)",
                title=f"STRIP {config}: entropy of benign vs trojaned test inputs (dashed: boundary)",
                names=("benign", "trojaned", "boundary"),
            )
        )
    return Section(
        "STRIP",
        paragraphs=[
            "STRIP superimposes N clean val images on each input and flags it when the mean entropy (bits) of "
            "the model's predictions stays below the boundary, set on the clean val split at the chosen FRR. "
            "Detection = triggered test inputs flagged (1 - FAR); FPR = FRR on clean test inputs.",
        ],
        tables=[detection_matrix_table(records), boundary_table(records)],
        figures=figures,
    )
