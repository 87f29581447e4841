"""Fine-Pruning's Table 1 (Liu, Dolan-Gavitt, Garg, RAID 2018) of one run.

The paper's table: one row per dataset / model; column groups for the baseline attack (BadNets) and the
pruning-aware attack; within each, the defenses None / Fine-Tuning / Fine-Pruning; each cell ``cl`` (clean accuracy)
and ``bd`` (backdoor success, i.e. ASR). The study is a *view*: it runs no cells of its own; its figures are the
run's attack and defense rows, and :func:`table1_columns` picks which of the run's attacks and defenses fill the
columns, by registered name. The report lays the table out (``report/section_fine_pruning.py``).

In a config: ``studies: [fine_pruning_table1]`` beside the attacks and the repairs it reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from .base import STUDIES, Study, StudyModels

# (registered name, or family for attacks, -> column title); a label may carry a sweep tag, e.g.
# ``fine_tuning[lr=0.05]``.
ATTACK_TITLES = (("badnets", "Baseline"), ("pruning_aware", "Pruning-aware"))
DEFENSE_TITLES = (("none", "None"), ("fine_tuning", "Fine-Tuning"), ("fine_pruning", "Fine-Pruning"))
Columns = list[tuple[str, str]]


def split_label(label: str) -> tuple[str, str]:
    """``fine_tuning[lr=0.05]`` -> (``fine_tuning``, `` [lr=0.05]``): the base label and its sweep tag."""
    m = re.fullmatch(r"([^\[]+)(\[.*\])?", label)
    return (m.group(1), f" {m.group(2)}" if m and m.group(2) else "") if m else (label, "")


def label_columns(labels: Sequence[str], titles: Sequence[tuple[str, str]]) -> Columns:
    """(title, label) of the labels whose base label is in ``titles``, in the order of ``titles``."""
    out = []
    for name, title in titles:
        out += [(title + tag, label) for label in labels for base, tag in [split_label(label)] if base == name]
    return out


def attack_family(name: str) -> str | None:
    """``badnets`` or ``pruning_aware`` for a registered attack of that family (the domain variants
    ``badnets_glasses``, ``pruning_aware_audio``, ... included), else None."""
    return next((family for family, _ in ATTACK_TITLES if name == family or name.startswith(f"{family}_")), None)


def table1_columns(attacks: Sequence[tuple[str, str]], defenses: Sequence[tuple[str, str]]) -> tuple[Columns, Columns]:
    """(attack columns, defense columns) of Table 1 for a run with these (label, registered name) pairs.

    Attack columns: every attack of the BadNets family ("Baseline (label)") and of the pruning-aware family; defense
    columns: "None", then every ``fine_tuning`` and ``fine_pruning`` defense (titled by the method, with the label's
    sweep tag, or the label in parentheses when it is not the method's name)."""
    titles = dict(ATTACK_TITLES)
    chosen_attacks = [
        (f"{titles[family]} ({label})", label) for label, name in attacks if (family := attack_family(name)) is not None
    ]
    repair_titles = dict(DEFENSE_TITLES)
    chosen_defenses = [("None", "none")] + [
        (f"{repair_titles[name]}{split_label(label)[1] if label.startswith(name) else f' ({label})'}", label)
        for label, name in defenses
        if name in ("fine_tuning", "fine_pruning")
    ]
    return chosen_attacks, chosen_defenses


@STUDIES.register("fine_pruning_table1")
class FinePruningTable1(Study):
    """Fine-Pruning's Table 1 of the run: None / Fine-Tuning / Fine-Pruning under the baseline and the pruning-aware
    attack, ``cl`` and ``bd`` in %, mean ± 95% CI over seeds. No cells: the table is laid out from the run's attack
    and defense rows. The run needs an attack of the BadNets or pruning-aware family and a ``fine_tuning`` or
    ``fine_pruning`` defense."""

    name: ClassVar[str] = "fine_pruning_table1"
    runs_on: ClassVar[tuple[StudyModels, ...]] = ()

    def check_run(self, attacks: Sequence[tuple[str, str]], defenses: Sequence[tuple[str, str]]) -> None:
        chosen_attacks, chosen_defenses = table1_columns(attacks, defenses)
        if not chosen_attacks:
            raise ValueError(
                "fine_pruning_table1 needs a BadNets-style or pruning-aware attack in attacks "
                "(badnets, pruning_aware or a domain variant)"
            )
        if len(chosen_defenses) == 1:
            raise ValueError("fine_pruning_table1 needs fine_tuning or fine_pruning in defenses")
