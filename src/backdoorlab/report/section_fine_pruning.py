"""Report section of Fine-Pruning, and the layout of the paper's Table 1 (Liu, Dolan-Gavitt, Garg 2018), the study
``fine_pruning_table1`` (:mod:`backdoorlab.studies.fine_pruning_table1` picks its columns).

Table 1 of the paper: one row per dataset/model; column groups for the baseline attack and the pruning-aware
attack; within each, the defenses None / Fine-Tuning / Fine-Pruning; each cell ``cl`` (clean accuracy) and ``bd``
(backdoor success, i.e. ASR). :func:`fine_pruning_table` lays out the same from result rows, mean ± 95% CI over
seeds, in %.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..experiments.store import ResultRow
from ..studies.fine_pruning_table1 import ATTACK_TITLES, DEFENSE_TITLES, label_columns, table1_columns
from .render import Section
from .section_pruning import pruning_section
from .sections import SECTION_BUILDERS
from .tables import Table, format_cell, group_values


def fine_pruning_table(
    rows: Sequence[ResultRow],
    *,
    attacks: Sequence[tuple[str, str]] | None = None,
    defenses: Sequence[tuple[str, str]] | None = None,
) -> Table:
    """The paper's Table 1 from result rows: one row per (dataset, model), then for each attack and each defense
    two columns ``cl`` (clean accuracy) and ``bd`` (ASR), mean ± 95% CI over seeds, in %.

    ``attacks`` and ``defenses`` are (column title, label in the rows) pairs. By default: attack labels
    ``badnets...`` (title "Baseline") and ``pruning_aware...`` ("Pruning-aware"); defense labels ``none``,
    ``fine_tuning...`` and ``fine_pruning...`` (a sweep tag such as ``[lr=0.05]`` is kept in the title).
    Attacks that have no row are left out; a missing cell shows ``–``.
    """
    grouped = group_values(rows)
    attack_labels = list(dict.fromkeys(k[2] for k in grouped))
    defense_labels = list(dict.fromkeys(k[3] for k in grouped))
    attacks = list(attacks) if attacks is not None else label_columns(attack_labels, ATTACK_TITLES)
    attacks = [(t, a) for t, a in attacks if a in attack_labels]
    defenses = list(defenses) if defenses is not None else label_columns(defense_labels, DEFENSE_TITLES)
    headers = ["dataset", "model"]
    for a_title, _ in attacks:
        for d_title, _ in defenses:
            headers += [f"{a_title} / {d_title} cl", f"{a_title} / {d_title} bd"]
    body = []
    for dataset, model in dict.fromkeys((k[0], k[1]) for k in grouped):
        cells = [dataset, model]
        for _, attack in attacks:
            for _, defense in defenses:
                metrics = grouped.get((dataset, model, attack, defense), {})
                cells += [format_cell(metrics.get("clean_accuracy", [])), format_cell(metrics.get("asr", []))]
        body.append(cells)
    return Table(headers, body)


def table1_section(
    rows: Sequence[ResultRow], attacks: Sequence[tuple[str, str]], defenses: Sequence[tuple[str, str]]
) -> Section | None:
    """The study ``fine_pruning_table1`` of a run: ``attacks`` and ``defenses`` are the run's (label, registered
    name) pairs; the study picks the columns (:func:`~backdoorlab.studies.fine_pruning_table1.table1_columns`).
    None when the run has no fine-tuning or fine-pruning defense, or neither attack."""
    chosen_attacks, chosen_defenses = table1_columns(attacks, defenses)
    if not chosen_attacks or len(chosen_defenses) == 1:
        return None
    table = fine_pruning_table(rows, attacks=chosen_attacks, defenses=chosen_defenses)
    note = (
        "The layout of Fine-Pruning's Table 1 (Liu, Dolan-Gavitt, Garg 2018): cl = clean accuracy, bd = attack "
        "success rate, on the test split, in %, mean ± 95% CI over seeds."
    )
    return Section("Fine-Pruning's Table 1", [note], [table])


@SECTION_BUILDERS.register("fine_pruning")
def build_fine_pruning_section(records: Sequence, directory: Path) -> Section | None:
    """Fine-pruning's pruning curves and activation plot, with CA/ASR after pruning alone and after fine-tuning."""
    return pruning_section(
        records,
        directory,
        "fine_pruning",
        "Fine-Pruning (pruning, then fine-tuning)",
        extra=[
            ("clean_accuracy_after_pruning", "CA after pruning only"),
            ("asr_after_pruning", "ASR after pruning only"),
        ],
    )
