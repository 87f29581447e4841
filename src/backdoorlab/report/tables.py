"""Summary tables over seeds (mean ± 95% CI), rendered as Markdown or HTML."""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..experiments.store import ResultRow
from ..metrics import mean_ci

# (metric, column title) shown in the main table, in this order.
MAIN_COLUMNS = (
    ("clean_accuracy", "clean accuracy"),
    ("clean_accuracy_drop", "Δ clean acc. vs clean model"),
    ("asr", "attack success rate"),
    ("robust_accuracy", "robust accuracy"),
    ("asr_on_clean_model", "trigger on clean model"),
)


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def format_cell(values: Sequence[float], percent: bool = True) -> str:
    """``98.1 ± 0.4`` (mean ± 95% CI half-width over seeds); ``98.1`` for one seed; ``–`` when empty."""
    mean, ci = mean_ci(list(values))
    if math.isnan(mean):
        return "–"
    if not percent:
        return f"{mean:.3g}" if ci == 0 else f"{mean:.3g} ± {ci:.2g}"
    return f"{mean * 100:.1f}" if ci == 0 else f"{mean * 100:.1f} ± {ci * 100:.1f}"


def group_values(rows: Sequence[ResultRow]) -> dict[tuple[str, str, str, str], dict[str, list[float]]]:
    """{(dataset, model, attack, defense): {metric: [value per seed]}}, in first-seen order."""
    grouped: dict[tuple[str, str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        grouped[(r.dataset, r.model, r.attack, r.defense)][r.metric].append(r.value)
    return grouped


# Columns of the detection table (input detectors), in %.
DETECTION_COLUMNS = (
    ("tpr", "detection rate (TPR)"),
    ("fpr", "false positives (FPR / FRR)"),
    ("roc_auc", "ROC-AUC"),
)


def metric_table(rows: Sequence[ResultRow], columns: Sequence[tuple[str, str]], needs: str) -> Table:
    """One line per (dataset, model, attack, defense) group that has metric ``needs``; ``columns`` in %."""
    body = []
    for (dataset, model, attack, defense), metrics in group_values(rows).items():
        if needs in metrics:
            cells = [format_cell(metrics.get(m, [])) for m, _ in columns]
            body.append([dataset, model, attack, defense, *cells])
    return Table(["dataset", "model", "attack", "defense", *(t + " (%)" for _, t in columns)], body)


def main_table(rows: Sequence[ResultRow]) -> Table:
    """Clean accuracy, ASR and robust accuracy per (attack, defense) cell, mean ± 95% CI over seeds."""
    return metric_table(rows, MAIN_COLUMNS, needs="clean_accuracy")


def detection_table(rows: Sequence[ResultRow]) -> Table:
    """Detection rate, FPR and ROC-AUC of the input detectors per (attack, defense) cell."""
    return metric_table(rows, DETECTION_COLUMNS, needs="fpr")


def seeds_of(rows: Sequence[ResultRow]) -> list[int]:
    return sorted({r.seed for r in rows})


def matrix_table(rows: Sequence[ResultRow]) -> Table:
    """Rows (dataset, model, attack) x columns defense: ``CA / ASR`` in %, means over seeds."""
    groups = group_values(rows)
    defenses = list(dict.fromkeys(d for (_, _, _, d), m in groups.items() if "clean_accuracy" in m))
    lines: dict[tuple[str, str, str], dict[str, str]] = {}
    for (dataset, model, attack, defense), metrics in groups.items():
        if "clean_accuracy" not in metrics:
            continue
        ca = sum(metrics["clean_accuracy"]) / len(metrics["clean_accuracy"])
        asr = sum(metrics["asr"]) / len(metrics["asr"]) if metrics.get("asr") else None
        cell = f"{ca * 100:.1f} / {asr * 100:.1f}" if asr is not None else f"{ca * 100:.1f} / –"
        lines.setdefault((dataset, model, attack), {})[defense] = cell
    body = [[*key, *(cells.get(d, "") for d in defenses)] for key, cells in lines.items()]
    return Table(["dataset", "model", "attack", *(f"{d}: CA / ASR" for d in defenses)], body)


SHOWN_ELSEWHERE = {m for m, _ in MAIN_COLUMNS} | {m for m, _ in DETECTION_COLUMNS} | {"threshold", "seconds"}


def other_metrics_table(rows: Sequence[ResultRow]) -> Table:
    """Defense cells with figures that no other table shows (inspectors' verdicts, pruned fractions, ...)."""
    body = []
    for (dataset, model, attack, defense), metrics in group_values(rows).items():
        if defense == "none" or "clean_accuracy" in metrics or "fpr" in metrics:
            continue
        shown = [f"{k} {format_cell(v, percent=False)}" for k, v in metrics.items() if k not in SHOWN_ELSEWHERE]
        if shown:
            body.append([dataset, model, attack, defense, "; ".join(shown)])
    return Table(["dataset", "model", "attack", "defense", "figures"], body)
