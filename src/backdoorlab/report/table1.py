"""Fine-Pruning's Table 1 on the source's three application domains, with STRIP and Neural Cleanse beside it: the
layout of the domain study (:mod:`backdoorlab.studies.domains`, which holds the paper's figures and the findings).

:func:`table1` lays out ours like the paper (one row per domain; None / Fine-Tuning / Fine-Pruning under the
baseline and the pruning-aware attack, ``cl`` and ``bd`` in %, mean ± 95% CI over seeds), and :func:`strip_table`
/ :func:`neural_cleanse_table` give STRIP (FAR at its FRR target, 1% by default) and Neural Cleanse (anomaly index)
on the same models. Each table ends with the published reference rows, labelled as the paper's and carrying their
confidence tag; :func:`markdown` is the whole report of the three domains.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..studies.domains import (
    ATTACKS,
    AUDIO_NOT_APPLICABLE,
    DOMAIN_TITLES,
    FP_NOTE,
    FP_PAPER,
    FP_PAPER_CL,
    NC_PAPER,
    REPAIRS,
    STRIP_PAPER,
    DomainResults,
    PaperValue,
    findings,
    share,
    strip_far,
    values_of,
)
from .section_fine_pruning import fine_pruning_table
from .tables import Table, format_cell


def _paper_cell(value: PaperValue | None) -> str:
    return f"{value.text} †" if value is not None else "–"


def _tags(values) -> str:
    """One line per distinct paper figure: ``† text: source [tag]``."""
    return "\n".join(dict.fromkeys(f"† {v.text}: {v.tag}" for v in values))


def table1(results: Sequence[DomainResults]) -> Table:
    """Fine-Pruning's Table 1: per domain, ``cl`` and ``bd`` (in %, mean ± 95% CI over seeds) for None /
    Fine-Tuning / Fine-Pruning under the baseline and the pruning-aware attack; then the paper's rows."""
    headers: list[str] | None = None
    body = []
    for domain in results:
        table = fine_pruning_table(domain.rows, attacks=ATTACKS, defenses=REPAIRS)
        headers = headers or ["domain", "ours: dataset / model", *table.headers[2:]]
        body += [[domain.title, f"{r[0]} / {r[1]}", *r[2:]] for r in table.rows] or [[domain.title, "–"]]
    if headers is None:
        headers = ["domain", "ours: dataset / model"] + [
            f"{a} / {d} {m}" for a, _ in ATTACKS for d, _ in REPAIRS for m in ("cl", "bd")
        ]
    for title in DOMAIN_TITLES:
        cells = []
        for _, attack in ATTACKS:
            for _, defense in REPAIRS:
                key = (title, attack, defense)
                cells += [_paper_cell(FP_PAPER_CL.get(key)), _paper_cell(FP_PAPER.get(key))]
        body.append([title, "paper †", *cells])
    width = len(headers)
    return Table(headers, [r + ["–"] * (width - len(r)) for r in body])


def strip_table(results: Sequence[DomainResults]) -> Table:
    """STRIP on each domain: FRR on the clean model's clean test inputs, and FAR / FRR / ROC-AUC under each attack
    (in %).

    STRIP's boundary is set on the defenders' clean ``val`` data for the FRR target of the config (1%, the
    paper's headline); the FRR shown is what that boundary gives on clean test inputs. The ROC-AUC of the entropy
    (triggered vs clean test inputs) needs no boundary: it shows whether the entropy separates them at all when
    the boundary fails."""
    headers = ["domain", "ours: dataset / model", "clean model FRR"]
    for title, _ in ATTACKS:
        headers += [f"{title} FAR", f"{title} FRR", f"{title} ROC-AUC"]
    body = []
    for domain in results:
        g = domain.grouped()
        cells = [domain.title, domain.setting, format_cell(values_of(g, "none", "strip", "fpr"))]
        for _, attack in ATTACKS:
            cells += [
                format_cell(strip_far(g, attack)),
                format_cell(values_of(g, attack, "strip", "fpr")),
                format_cell(values_of(g, attack, "strip", "roc_auc")),
            ]
        body.append(cells)
    for title in DOMAIN_TITLES:
        cells = [title, "paper †", "–"]
        for _, attack in ATTACKS:
            cells += [_paper_cell(STRIP_PAPER.get((title, attack, "far"))), "–", "–"]
        body.append(cells)
    return Table(headers, body)


def neural_cleanse_table(results: Sequence[DomainResults]) -> Table:
    """Neural Cleanse on each domain: the anomaly index of the clean and attacked models (the largest index below
    the median, mean ± 95% CI over seeds), the target label's own index, in how many seeds the model (clean) or the
    target label (attacked) was flagged (by the inspector's decision: at its false-alarm rate alpha, or at the papers'
    cutoff 2 when the config sets ``cutoff: 2``), and in how many the target's reversed trigger was the smallest
    of all labels."""
    headers = ["domain", "ours: dataset / model", "clean: anomaly index", "clean: flagged"]
    for title, _ in ATTACKS:
        headers += [
            f"{title}: anomaly index",
            f"{title}: target's index",
            f"{title}: target flagged",
            f"{title}: target ranked first",
        ]
    body = []
    for domain in results:
        g = domain.grouped()
        cells = [
            domain.title,
            domain.setting,
            format_cell(values_of(g, "none", "neural_cleanse", "anomaly_index_max"), percent=False),
            share(values_of(g, "none", "neural_cleanse", "flagged")),
        ]
        for _, attack in ATTACKS:
            cells += [
                format_cell(values_of(g, attack, "neural_cleanse", "anomaly_index_max"), percent=False),
                format_cell(values_of(g, attack, "neural_cleanse", "target_anomaly_index"), percent=False),
                share(values_of(g, attack, "neural_cleanse", "target_flagged")),
                share(values_of(g, attack, "neural_cleanse", "target_ranked_first")),
            ]
        body.append(cells)
    for title in DOMAIN_TITLES:
        cells = [title, "paper †", _paper_cell(NC_PAPER.get((title, "none", "index"))), "–"]
        for _, attack in ATTACKS:
            cells += [_paper_cell(NC_PAPER.get((title, attack, "index"))), "–", "–", "–"]
        body.append(cells)
    return Table(headers, body)


def markdown(results: Sequence[DomainResults]) -> str:
    """The whole Table 1 report as Markdown: the three tables with their paper rows and tags, and the findings."""
    seeds = sorted({s for d in results for s in d.seeds})
    bullets = lambda lines: "\n".join(f"- {line}" for line in lines)  # noqa: E731
    parts = [
        "# Fine-Pruning's Table 1 on faces, speech and traffic signs",
        f"Ours: mean ± 95% CI over seeds {seeds}, in %. † marks the paper's figures, with their source and "
        "confidence tag in docs/methods.md; they come from different data, models and triggers.",
        "## Fine-Pruning (cl = clean accuracy, bd = attack success rate)",
        table1(results).markdown(),
        _tags(FP_PAPER.values()),
        FP_NOTE,
        "## STRIP (FAR at the FRR target; FRR measured on clean test inputs; ROC-AUC of the entropy)",
        strip_table(results).markdown(),
        _tags(STRIP_PAPER.values()),
        "## Neural Cleanse (anomaly index; flagged by the run's decision: at the stated false-alarm rate alpha, or "
        "above the papers' cutoff 2 where the config sets it; the paper's rows used 2)",
        neural_cleanse_table(results).markdown(),
        _tags(NC_PAPER.values()),
        "## Findings",
        bullets(findings(results)),
        "## Defenses that do not apply to audio",
        bullets(AUDIO_NOT_APPLICABLE),
    ]
    return "\n\n".join(parts) + "\n"
