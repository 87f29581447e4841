"""Report pieces shared by the model inspectors (Neural Cleanse, DeepInspect): anomaly-index bars with the cutoff
line, reversed triggers next to the real one, the per-model verdict table and the population table.

The section builders live in ``section_neural_cleanse.py`` and ``section_deepinspect.py``; they pass the runner's
DefenseRecords whose ``outcome.artifacts`` hold ``verdict`` (a Verdict), ``true_target`` (int or None),
``true_trigger_image`` ((C, H, W), the real trigger stamped on a black image) and ``true_mask`` when known.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..utils.files import save_with  # noqa: E402
from .render import Section  # noqa: E402
from .tables import Table  # noqa: E402

MAX_FIGURE_ROWS = 8  # models per figure; the table lists them all


def signed_index(verdict) -> torch.Tensor:
    """(K,) anomaly index, negative for labels above the median (they can never be flagged)."""
    index = verdict.anomaly_index.abs()
    return torch.where(verdict.below_median, index, -index)


def _title(record) -> str:
    return f"{record.attack} / {record.defense} (seed {record.seed})"


def anomaly_figure(records: Sequence, path: Path) -> None:
    """One bar chart per record: the signed anomaly index per label, the cutoff as a dashed line, flagged labels
    in red, the true target (when known) with a black edge."""
    records = list(records)[:MAX_FIGURE_ROWS]
    cols = min(2, len(records))
    rows = math.ceil(len(records) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(records) :]:
        ax.axis("off")
    for ax, record in zip(axes.flat, records, strict=False):
        verdict = record.outcome.artifacts["verdict"]
        target = record.outcome.artifacts.get("true_target")
        values = signed_index(verdict).numpy()
        colors = ["crimson" if k in verdict.suspected else "#7a8aa6" for k in range(len(values))]
        edges = ["black" if k == target else "none" for k in range(len(values))]
        ax.bar(range(len(values)), values, color=colors, edgecolor=edges, linewidth=1.8)
        ax.axhline(verdict.cutoff, color="crimson", linestyle="--", linewidth=1, label=f"cutoff {verdict.cutoff:g}")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(values)))
        ax.set_xlabel("label" + (f" (true target {target}, black edge)" if target is not None else ""), fontsize=8)
        ax.set_ylabel("anomaly index", fontsize=8)
        ax.set_title(f"{_title(record)}: {verdict.method}", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("Anomaly index per label (red: flagged; negative: above the median)", fontsize=9)
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def _image(ax, image: torch.Tensor, cmap: str = "gray") -> None:
    img = image.detach().float().clamp(0, 1).permute(1, 2, 0).numpy()
    ax.imshow(
        img[..., 0] if img.shape[-1] == 1 else img,
        cmap=cmap if img.shape[-1] == 1 else None,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def trigger_figure(records: Sequence, path: Path) -> None:
    """Per record two rows: the reversed mask of every label, then a clean image stamped with each label's
    reversed trigger; the last column holds the real trigger (on a black image) and its mask."""
    records = [r for r in records if r.outcome.artifacts["verdict"].masks is not None][:MAX_FIGURE_ROWS]
    if not records:
        return
    k = max(r.outcome.artifacts["verdict"].num_classes for r in records)
    fig, axes = plt.subplots(2 * len(records), k + 1, figsize=(1.1 * (k + 1), 2.4 * len(records)), squeeze=False)
    for i, record in enumerate(records):
        arts = record.outcome.artifacts
        verdict, target = arts["verdict"], arts.get("true_target")
        for label in range(k):
            top, bottom = axes[2 * i, label], axes[2 * i + 1, label]
            if label >= verdict.num_classes:
                top.axis("off")
                bottom.axis("off")
                continue
            _image(top, verdict.masks[label], cmap="magma")
            color = "crimson" if label in verdict.suspected else ("black" if label == target else "gray")
            top.set_title(f"{label}: {float(verdict.statistic[label]):.1f}", fontsize=7, color=color)
            if verdict.examples is not None and verdict.examples.shape[1] > 0:
                _image(bottom, verdict.examples[label, 0])
            else:
                bottom.axis("off")
        real_top, real_bottom = axes[2 * i, k], axes[2 * i + 1, k]
        if arts.get("true_mask") is not None:
            _image(real_top, arts["true_mask"], cmap="magma")
            real_top.set_title(f"real: {float(arts['true_mask'].sum()):.1f}", fontsize=7)
        else:
            real_top.axis("off")
        if arts.get("true_trigger_image") is not None:
            _image(real_bottom, arts["true_trigger_image"])
            real_bottom.set_title("real trigger", fontsize=7)
        else:
            real_bottom.axis("off")
        axes[2 * i, 0].set_ylabel(f"{record.attack}\nmask", fontsize=7)
        axes[2 * i + 1, 0].set_ylabel("stamped", fontsize=7)
    fig.suptitle(
        "Reversed triggers per label (title: statistic; red = flagged) and the real trigger (last column)", fontsize=9
    )
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def verdict_table(records: Sequence) -> Table:
    """One line per inspected model: verdict, model score, the true target's index and rank, run time."""
    body = []
    for r in records:
        verdict = r.outcome.artifacts["verdict"]
        m = r.outcome.metrics
        target = r.outcome.artifacts.get("true_target")
        body.append(
            [
                r.attack,
                r.defense,
                str(r.seed),
                verdict.method,
                "yes" if verdict.infected else "no",
                ", ".join(map(str, verdict.suspected)) or "–",
                f"{verdict.score:.2f}",
                "–" if target is None else str(target),
                "–" if "target_anomaly_index" not in m else f"{m['target_anomaly_index']:.2f}",
                "–" if "target_ranked_first" not in m else ("yes" if m["target_ranked_first"] else "no"),
                f"{verdict.seconds:.1f}",
            ]
        )
    return Table(
        [
            "attack",
            "defense",
            "seed",
            "method",
            "infected",
            "flagged labels",
            "max anomaly index",
            "true target",
            "target's index",
            "target ranked first",
            "seconds",
        ],
        body,
    )


def inspection_section(title: str, records: Sequence, directory: Path, stem: str, note: str) -> Section | None:
    """The verdict table, the anomaly-index bars and the reversed triggers of ``records``."""
    records = [r for r in records if "verdict" in r.outcome.artifacts]
    if not records:
        return None
    bars, triggers = directory / f"{stem}_anomaly.png", directory / f"{stem}_triggers.png"
    anomaly_figure(records, bars)
    trigger_figure(records, triggers)
    figures = [bars] + ([triggers] if triggers.exists() else [])
    return Section(title, [note], [verdict_table(records)], figures)


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.0f}%"


def population_table(result) -> Table:
    """Model-level detection over a population (a ``PopulationResult``): per inspector the counts, TPR, FPR,
    ROC-AUC, PR-AUC, FPR at 95% TPR, the target-ranked-first and target-flagged rates, mean scores and mean seconds
    per model."""
    body = []
    for name, s in result.summary().items():
        auc = "–" if math.isnan(s["roc_auc"]) else f"{s['roc_auc']:.2f}"
        pr_auc = s.get("pr_auc", math.nan)
        body.append(
            [
                name,
                result.attack,
                f"{int(s['n_clean'])} + {int(s['n_backdoored'])}",
                _pct(s["tpr"]),
                _pct(s["fpr"]),
                auc,
                "–" if math.isnan(pr_auc) else f"{pr_auc:.2f}",
                _pct(s.get("fpr_at_95pct_tpr", math.nan)),
                _pct(s["target_ranked_first"]),
                _pct(s["target_flagged"]),
                f"{s['score_clean']:.2f}",
                f"{s['score_backdoored']:.2f}",
                f"{s['seconds']:.1f}",
            ]
        )
    return Table(
        [
            "inspector",
            "attack",
            "clean + backdoored models",
            "TPR",
            "FPR",
            "ROC-AUC",
            "PR-AUC",
            "FPR at 95% TPR",
            "target ranked first",
            "target flagged",
            "mean score (clean)",
            "mean score (backdoored)",
            "seconds per model",
        ],
        body,
    )


def population_figure(result, path: Path) -> None:
    """Model scores per inspector: clean models (blue) and backdoored ones (red, labelled with their target),
    with each inspector's cutoff as a dashed line."""
    names = result.inspectors()
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.2))
    for i, name in enumerate(names):
        recs = [r for r in result.records if r.inspector == name]
        for r in recs:
            dx = -0.12 if r.role == "clean" else 0.12
            ax.scatter(i + dx, r.verdict.score, color="#3b6fd6" if r.role == "clean" else "crimson", s=22)
            if r.target is not None:
                ax.annotate(
                    str(r.target), (i + dx, r.verdict.score), xytext=(4, -3), textcoords="offset points", fontsize=6
                )
        cutoff = recs[0].verdict.cutoff if recs else 2.0
        ax.hlines(cutoff, i - 0.35, i + 0.35, colors="black", linestyles="--", linewidth=1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("model score (max anomaly index)", fontsize=8)
    ax.set_title(f"Population: clean (blue) vs {result.attack} (red, target labelled); dashed = cutoff", fontsize=8)
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def populations_from_records(records: Sequence) -> list:
    """``PopulationResult`` per (dataset, model, attack) from the runner's inspector records: the inspections of the
    clean models of that dataset and model (one per seed) against those of the attack's models (one per seed,
    each with its own target in a ``population`` run). Attacks with no clean counterpart are left out."""
    from ..experiments.population import InspectionRecord, PopulationResult

    records = [r for r in records if "verdict" in r.outcome.artifacts]

    def inspection(r, role: str) -> InspectionRecord:
        target = r.outcome.artifacts.get("true_target") if role == "backdoored" else None
        return InspectionRecord(r.defense, role, r.seed, target, r.outcome.artifacts["verdict"], r.outcome.metrics)

    out = []
    settings = dict.fromkeys((r.dataset, r.model) for r in records)
    for dataset, model in settings:
        mine = [r for r in records if (r.dataset, r.model) == (dataset, model)]
        clean = [inspection(r, "clean") for r in mine if r.attack == "none"]
        for attack in dict.fromkeys(r.attack for r in mine if r.attack != "none"):
            bad = [inspection(r, "backdoored") for r in mine if r.attack == attack]
            if clean and bad:
                out.append(PopulationResult(attack, [], clean + bad))
    return out


def population_section(result, directory: Path, stem: str = "population") -> Section:
    """A report section for a ``PopulationResult``: the detection table and the per-model score plot."""
    path = directory / (re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}_{result.attack}") + ".png")
    population_figure(result, path)
    models = len(result.members) or len({(r.role, r.seed) for r in result.records})
    note = (
        f"{models} models ({result.attack}): each inspector's verdict per model. TPR = backdoored models "
        "flagged, FPR = clean models flagged, ROC-AUC of the model score (largest anomaly index among labels below "
        "the median), PR-AUC with backdoored models as positives, FPR at 95% TPR = clean models flagged at the "
        "highest threshold on the model score that flags 95% of the backdoored ones (TDC 2022), target ranked "
        "first = the true target has the smallest reversed trigger."
    )
    return Section(f"Model inspection over a population ({result.attack})", [note], [population_table(result)], [path])
