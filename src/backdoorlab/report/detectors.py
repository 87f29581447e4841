"""Report parts shared by the input detectors' sections: the detection table and per-attack score histograms.

Both read the runner's defense records (``attack``, ``defense`` label, ``seed``, ``outcome`` with
``metrics`` and the ``clean_scores`` / ``attacked_scores`` artifacts written by
:class:`~backdoorlab.defenses.input_detectors.calibrated.CalibratedDetector`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..metrics import detection_matrix  # noqa: E402
from ..utils.files import save_with  # noqa: E402
from .tables import OPTIONAL_DETECTION_COLUMNS, Table  # noqa: E402


def _setting(records: Sequence) -> Callable[[object], str]:
    """A record's configuration label: the defense label, plus dataset and model when the records span several."""
    settings = {(getattr(r, "dataset", ""), getattr(r, "model", "")) for r in records}
    if len(settings) <= 1:
        return lambda r: r.defense
    return lambda r: f"{r.defense} ({r.dataset}, {r.model})"


def mean_metrics(records: Sequence) -> dict[str, dict[str, dict[str, float]]]:
    """configuration -> attack -> metric -> mean over seeds, in first-seen order."""
    label = _setting(records)
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in records:
        cell = values.setdefault(label(r), {}).setdefault(r.attack, defaultdict(list))
        for k, v in r.outcome.metrics.items():
            cell[k].append(float(v))
    return {c: {a: {k: sum(v) / len(v) for k, v in m.items()} for a, m in per.items()} for c, per in values.items()}


def percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:.1f}"


def detection_matrix_table(records: Sequence) -> Table:
    """Rows: detector configuration; columns: attacks (detection rate = TPR on triggered test inputs), then
    FPR on clean test inputs (mean over every model scored, the clean one included) and ROC-AUC (mean over
    attacks), then PR-AUC and TPR at 1% / 5% FPR (means over attacks) where the records have them; in %, means
    over seeds."""
    cells = mean_metrics(records)
    attacks, rows = detection_matrix(cells)
    extra = [
        (m, title) for m, title in OPTIONAL_DETECTION_COLUMNS if any(m in c for p in cells.values() for c in p.values())
    ]
    body = []
    for config, tprs, fpr, auc in rows:
        means = [_mean_over_attacks(cells[config], m) for m, _ in extra]
        body.append([config, *(percent(t) for t in tprs), percent(fpr), percent(auc), *(percent(v) for v in means)])
    headers = ["detector", *(f"{a}: detection" for a in attacks), "FPR", "ROC-AUC", *(t for _, t in extra)]
    return Table(headers, body)


def _mean_over_attacks(per_attack: dict[str, dict[str, float]], metric: str) -> float:
    values = [m[metric] for m in per_attack.values() if metric in m and not math.isnan(m[metric])]
    return sum(values) / len(values) if values else math.nan


@dataclass(frozen=True)
class Panel:
    """One histogram: clean scores, attacked scores (None for a clean model), the threshold, a title."""

    title: str
    clean: np.ndarray
    attacked: np.ndarray | None
    threshold: float


def first_seed_panels(
    records: Sequence,
    transform: Callable[[np.ndarray], np.ndarray] = lambda s: s,
) -> dict[str, list[Panel]]:
    """configuration -> one panel per attack, from the first seed of each; ``transform`` maps scores (and the
    threshold) to the plotted quantity. Records without saved scores are left out."""
    label = _setting(records)
    panels: dict[str, dict[str, Panel]] = defaultdict(dict)
    for r in sorted(records, key=lambda r: r.seed):
        clean, attacked = r.outcome.artifacts.get("clean_scores"), r.outcome.artifacts.get("attacked_scores")
        if not isinstance(clean, torch.Tensor) or r.attack in panels[label(r)] or "threshold" not in r.outcome.metrics:
            continue
        attacked_np = transform(attacked.numpy()) if isinstance(attacked, torch.Tensor) else None
        threshold = float(transform(np.array([r.outcome.metrics["threshold"]]))[0])
        panels[label(r)][r.attack] = Panel(
            f"{r.attack} (seed {r.seed})", transform(clean.numpy()), attacked_np, threshold
        )
    return {c: list(p.values()) for c, p in panels.items() if p}


def histogram_figure(
    panels: Sequence[Panel], path: Path, *, xlabel: str, title: str, names: tuple[str, str, str], log_x: bool = False
) -> Path:
    """Histograms of clean vs attacked scores, one panel each (at most 3 a row), the threshold dashed.

    ``names`` are the legend entries of the clean inputs, the attacked inputs and the threshold line. With
    ``log_x`` the bins are logarithmic and scores below 1e-6 are drawn at 1e-6.
    """
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, p in zip(axes.flat, panels, strict=False):
        data = [p.clean] + ([p.attacked] if p.attacked is not None else [])
        floor = 1e-6
        if log_x:
            data = [np.maximum(d, floor) for d in data]
        everything = np.concatenate(data)
        low, high = float(everything.min()), float(everything.max())
        if log_x:
            bins = np.logspace(np.log10(low), np.log10(max(high, low * 10)), 40)
        else:
            bins = np.linspace(low, high if high > low else low + 1e-6, 40)
        for values, name, color in zip(data, names[:2], ("tab:blue", "crimson"), strict=False):
            ax.hist(values, bins=bins, alpha=0.6, color=color, label=f"{name} ({len(values)})")
        ax.axvline(
            max(p.threshold, floor) if log_x else p.threshold,
            color="black",
            linestyle="--",
            linewidth=1,
            label=names[2],
        )
        if log_x:
            ax.set_xscale("log")
        ax.set_title(p.title, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("inputs", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


def file_stem(text: str) -> str:
    """A file-name-safe version of a configuration label."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
