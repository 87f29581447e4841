"""Summary tables over seeds (mean ± 95% CI), rendered as Markdown or HTML."""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..experiments.store import ResultRow
from ..metrics import defense_effectiveness_rate, mean_ci, robust_improvement_rate

# (metric, column title) shown in the main table, in this order.
MAIN_COLUMNS = (
    ("clean_accuracy", "clean accuracy"),
    ("clean_accuracy_drop", "Δ clean acc. vs clean model"),
    ("asr", "attack success rate"),
    ("robust_accuracy", "robust accuracy"),
    ("asr_on_clean_model", "trigger on clean model"),
)
# Repairs' rates (BackdoorBench), in the main table where some cell has them.
REPAIR_RATE_COLUMNS = (("der", "DER"), ("rir", "RIR"))


@dataclass(frozen=True)
class Table:
    """Headers and string cells; ``styles`` (same shape as ``rows``, "" for none) are inline CSS for the HTML."""

    headers: list[str]
    rows: list[list[str]]
    styles: list[list[str]] | None = None

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        styles = self.styles or [[""] * len(r) for r in self.rows]
        body = "".join(
            "<tr>"
            + "".join(
                f'<td style="{html.escape(css)}">{html.escape(c)}</td>' if css else f"<td>{html.escape(c)}</td>"
                for c, css in zip(r, st, strict=True)
            )
            + "</tr>"
            for r, st in zip(self.rows, styles, strict=True)
        )
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


# Columns of the detection table (input detectors), in %; the optional ones only where some cell has them.
DETECTION_COLUMNS = (
    ("tpr", "detection rate (TPR)"),
    ("fpr", "false positives (FPR / FRR)"),
    ("roc_auc", "ROC-AUC"),
)
OPTIONAL_DETECTION_COLUMNS = (
    ("pr_auc", "PR-AUC"),
    ("tpr_at_1pct_fpr", "TPR at 1% FPR"),
    ("tpr_at_5pct_fpr", "TPR at 5% FPR"),
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
    """Clean accuracy, ASR, robust accuracy, DER and RIR per (attack, defense) cell, mean ± 95% CI over seeds
    (DER and RIR computed by :func:`with_repair_rates` where the run did not store them)."""
    rows = with_repair_rates(rows)
    present = {r.metric for r in rows}
    columns = [*MAIN_COLUMNS, *(c for c in REPAIR_RATE_COLUMNS if c[0] in present)]
    return metric_table(rows, columns, needs="clean_accuracy")


def detection_table(rows: Sequence[ResultRow]) -> Table:
    """Detection rate, FPR and ROC-AUC of the input detectors per (attack, defense) cell, then PR-AUC and TPR at
    1% / 5% FPR where any cell has those rows."""
    present = {r.metric for r in rows}
    columns = [*DETECTION_COLUMNS, *(c for c in OPTIONAL_DETECTION_COLUMNS if c[0] in present)]
    return metric_table(rows, columns, needs="fpr")


def seeds_of(rows: Sequence[ResultRow]) -> list[int]:
    return sorted({r.seed for r in rows})


def with_repair_rates(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """``rows`` plus ``der`` and ``rir`` rows for the repair cells of each seed that lack them (runs stored before
    the evaluator wrote them): before = the same (dataset, model, attack, seed) with defense ``none``, after = the
    repair cell. A repair cell is one with ``clean_accuracy`` and ``asr``; RIR also needs ``robust_accuracy`` on
    both sides."""
    cells: dict[tuple[str, str, str, str, int], dict[str, ResultRow]] = defaultdict(dict)
    for r in rows:
        cells[(r.dataset, r.model, r.attack, r.defense, r.seed)][r.metric] = r
    added = []
    for (dataset, model, attack, defense, seed), after in cells.items():
        before = cells.get((dataset, model, attack, "none", seed), {})
        if defense == "none" or not {"clean_accuracy", "asr"} <= before.keys() & after.keys():
            continue
        ca = (before["clean_accuracy"].value, after["clean_accuracy"].value)
        template = after["clean_accuracy"]
        if "der" not in after:
            der = defense_effectiveness_rate(*ca, before["asr"].value, after["asr"].value)
            added.append(replace(template, metric="der", value=der))
        if "rir" not in after and "robust_accuracy" in before and "robust_accuracy" in after:
            rir = robust_improvement_rate(*ca, before["robust_accuracy"].value, after["robust_accuracy"].value)
            added.append(replace(template, metric="rir", value=rir))
    return [*rows, *added]


def der_style(der: float) -> str:
    """Background of a matrix cell by DER: red at 0.5 and below (no better than doing nothing), through yellow,
    to green at 1 (ASR gone at no cost in clean accuracy); no colour for NaN."""
    if math.isnan(der):
        return ""
    hue = 120 * min(1.0, max(0.0, (der - 0.5) / 0.5))
    return f"background:hsl({hue:.0f},70%,80%)"


def _mean(values: Sequence[float] | None) -> float:
    kept = [v for v in values or [] if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def matrix_table(rows: Sequence[ResultRow]) -> Table:
    """Rows (dataset, model, attack) x columns defense: ``CA / ASR`` in %, means over seeds; repair cells add
    ``(DER x)`` in % and are coloured by it in the HTML (:func:`der_style`)."""
    groups = group_values(with_repair_rates(rows))
    defenses = list(dict.fromkeys(d for (_, _, _, d), m in groups.items() if "clean_accuracy" in m))
    with_der = {d for (_, _, _, d), m in groups.items() if "der" in m}
    lines: dict[tuple[str, str, str], dict[str, tuple[str, str]]] = {}
    for (dataset, model, attack, defense), metrics in groups.items():
        if "clean_accuracy" not in metrics:
            continue
        ca, asr, der = (_mean(metrics.get(m)) for m in ("clean_accuracy", "asr", "der"))
        cell = f"{ca * 100:.1f} / " + ("–" if math.isnan(asr) else f"{asr * 100:.1f}")
        cell += "" if math.isnan(der) else f" (DER {der * 100:.1f})"
        lines.setdefault((dataset, model, attack), {})[defense] = (cell, der_style(der))
    body = [[*key, *(cells.get(d, ("", ""))[0] for d in defenses)] for key, cells in lines.items()]
    styles = [["", "", "", *(cells.get(d, ("", ""))[1] for d in defenses)] for cells in lines.values()]
    headers = [f"{d}: CA / ASR (DER)" if d in with_der else f"{d}: CA / ASR" for d in defenses]
    return Table(["dataset", "model", "attack", *headers], body, styles)


_TABLE_COLUMNS = (*MAIN_COLUMNS, *REPAIR_RATE_COLUMNS, *DETECTION_COLUMNS, *OPTIONAL_DETECTION_COLUMNS)
SHOWN_ELSEWHERE = {m for m, _ in _TABLE_COLUMNS} | {"threshold", "seconds"}


STEALTH_COLUMNS = (
    ("stealth_psnr", "PSNR (dB)"),
    ("stealth_ssim", "SSIM"),
    ("stealth_linf", "L∞"),
    ("stealth_l2", "L2"),
)


def stealth_table(rows: Sequence[ResultRow]) -> Table:
    """Per (dataset, model, attack): PSNR (dB), SSIM, L∞ and L2 of triggered against clean test inputs (pixels in
    [0, 1]), mean ± 95% CI over seeds; attacks without a trigger (label flip) have no line."""
    body = []
    for (dataset, model, attack, defense), metrics in group_values(rows).items():
        if defense == "none" and any(m in metrics for m, _ in STEALTH_COLUMNS):
            cells = [format_cell(metrics.get(m, []), percent=False) for m, _ in STEALTH_COLUMNS]
            body.append([dataset, model, attack, *cells])
    return Table(["dataset", "model", "attack", *(t for _, t in STEALTH_COLUMNS)], body)


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
