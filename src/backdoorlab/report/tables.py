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
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.1f}" if ci == 0 else f"{mean * scale:.1f} ± {ci * scale:.1f}"


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
