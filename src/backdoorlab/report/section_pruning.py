"""Report section of the pruning defense (and the shared parts of fine-pruning's): CA/ASR vs pruned fraction,
the activation plot of Fine-Pruning's Fig. 4, and a table of where pruning left the backdoor.

Builders read each record's ``pruning`` artifact (a :class:`~backdoorlab.defenses.repair.pruning.PruningCurve`
as a dict) and ``activations`` artifact (clean and triggered mean activation per channel, and the defender's
pruning ``order``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..defenses.repair.pruning import PruningCurve  # noqa: E402
from ..utils.files import save_with  # noqa: E402
from .render import Section  # noqa: E402
from .sections import SECTION_BUILDERS  # noqa: E402
from .tables import Table, format_cell  # noqa: E402

GroupKey = tuple[str, str, str, str]  # (dataset, model, attack, defense label)
# (curve attribute, legend, line style, colour) of the curves figure
LINES = (
    ("test_accuracy", "clean acc. (test)", "-", "tab:blue"),
    ("val_accuracy", "clean acc. (val)", ":", "tab:blue"),
    ("asr", "ASR (test)", "-", "crimson"),
)


def group_records(records: Sequence, artifact: str = "pruning") -> dict[GroupKey, list]:
    """Records that carry the curve ``artifact`` (default ``pruning``), by (dataset, model, attack, defense label),
    in first-seen order."""
    groups: dict[GroupKey, list] = defaultdict(list)
    for r in records:
        if isinstance(r.outcome.artifacts.get(artifact), dict):
            groups[(getattr(r, "dataset", ""), getattr(r, "model", ""), r.attack, r.defense)].append(r)
    return groups


def group_title(key: GroupKey) -> str:
    dataset, model, attack, defense = key
    return " · ".join(p for p in (dataset, model, attack, defense) if p)


def panel_grid(n: int) -> tuple[plt.Figure, np.ndarray]:
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def save_figure(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


def curves_figure(groups: dict[GroupKey, list], path: Path) -> Path:
    """One panel per group: test CA, validation CA and ASR (mean over seeds) against the pruned fraction, and
    the fraction the defense chose (dotted line, per seed)."""
    fig, axes = panel_grid(len(groups))
    for ax, (key, recs) in zip(axes, groups.items(), strict=False):
        curves = [PruningCurve(**r.outcome.artifacts["pruning"]) for r in recs]
        x = np.array(curves[0].ratios)
        for attr, label, style, color in LINES:
            values = [getattr(c, attr) for c in curves if getattr(c, attr) is not None]
            if values and all(len(v) == len(x) for v in values):
                ax.plot(x, np.mean(values, axis=0), style, color=color, label=label)
        for c in curves:
            ax.axvline(c.pruned / c.channels, color="gray", linestyle="--", linewidth=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"fraction of {curves[0].layer} pruned ({curves[0].channels} channels)", fontsize=8)
        ax.set_title(group_title(key), fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Pruning by increasing clean activation (dashed: where the defense stopped)", fontsize=9)
    return save_figure(fig, path)


def activations_figure(groups: dict[GroupKey, list], path: Path) -> Path:
    """Fine-Pruning's Fig. 4, one panel per group (first seed): mean activation of each channel on clean and on
    triggered test inputs, channels in the defender's pruning order (increasing clean activation on val)."""
    fig, axes = panel_grid(len(groups))
    for ax, (key, recs) in zip(axes, groups.items(), strict=False):
        act = recs[0].outcome.artifacts.get("activations") or {}
        if "clean" not in act:
            ax.axis("off")
            continue
        order = np.array(act.get("order", range(len(act["clean"]))))
        idx = np.arange(len(order))
        width = 0.45 if act.get("triggered") is not None else 0.9
        ax.bar(
            idx - (width / 2 if width < 0.9 else 0),
            np.array(act["clean"])[order],
            width,
            color="tab:blue",
            label="clean",
        )
        if act.get("triggered") is not None:
            ax.bar(idx + width / 2, np.array(act["triggered"])[order], width, color="crimson", label="triggered")
        ax.set_xlabel(f"channels of {act.get('layer', '?')}, in pruning order", fontsize=8)
        ax.set_ylabel("mean activation", fontsize=8)
        ax.set_title(group_title(key), fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Mean activation per channel on clean vs triggered test inputs (Fine-Pruning Fig. 4)", fontsize=9)
    return save_figure(fig, path)


def halving_text(curve: PruningCurve) -> str:
    """Where ASR first fell below half its unpruned value, and the test CA drop at that point."""
    point = curve.asr_halving()
    if curve.asr is None:
        return "no backdoor"
    if point is None:
        return "never"
    ratio, drop = point
    return f"at {ratio:.0%} ({drop * 100:.1f} pt CA drop{'' if drop <= 0.04 else ', > 4'})"


def summary_table(groups: dict[GroupKey, list], extra: Sequence[tuple[str, str]] = ()) -> Table:
    """Per group (mean ± 95% CI over seeds, in %): pruned fraction, CA and ASR after the defense, ``extra``
    metrics, and (first seed) where pruning alone halved the ASR."""
    columns = [("pruned_fraction", "pruned"), ("clean_accuracy", "CA"), ("asr", "ASR"), *extra]
    body = []
    for key, recs in groups.items():
        cells = [format_cell([r.outcome.metrics[m] for r in recs if m in r.outcome.metrics]) for m, _ in columns]
        body.append([group_title(key), *cells, halving_text(PruningCurve(**recs[0].outcome.artifacts["pruning"]))])
    return Table(["setting", *(f"{t} (%)" for _, t in columns), "ASR halved by pruning (first seed)"], body)


MECHANISM = (
    "Fine-Pruning's premise is that the backdoor lives in channels dormant on clean inputs, so ASR falls while "
    "clean accuracy holds; the last column says where ASR first fell below half its unpruned value and how much "
    "test clean accuracy had fallen there (the mechanism shows when that is at most 4 points)."
)


def pruning_section(
    records: Sequence, directory: Path, method: str, title: str, extra: Sequence[tuple[str, str]] = ()
) -> Section | None:
    """The section of ``method`` (``pruning`` or ``fine_pruning``): curves, activation plot, summary table."""
    groups = group_records(records)
    if not groups:
        return None
    figures = [
        curves_figure(groups, directory / f"{method}_curves.png"),
        activations_figure(groups, directory / f"{method}_activations.png"),
    ]
    paragraphs = [
        "Channels of the pruned layer are zeroed in increasing order of mean activation on the clean validation "
        "split; the defense stops before validation accuracy falls more than its threshold. The test-split curves "
        "use the same order and are for this report only. " + MECHANISM,
    ]
    return Section(title, paragraphs, [summary_table(groups, extra)], figures)


@SECTION_BUILDERS.register("pruning")
def build_pruning_section(records: Sequence, directory: Path) -> Section | None:
    return pruning_section(records, directory, "pruning", "Pruning (Fine-Pruning's pruning step alone)")
