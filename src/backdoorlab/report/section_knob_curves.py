"""Report sections of the repairs with one main knob: ANP's pruning threshold and CLP's ``u``.

Each record's artifact (``anp_curve`` or ``clp_curve``) holds the knob's grid, the clean *validation* accuracy at
each point (what the defender saw and chose by), and, for the report only, test clean accuracy and ASR at each point.
One panel per (dataset, model, attack, defense label): the three curves, mean over seeds, and a dashed line at the
value each seed's repair chose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .render import Section
from .section_pruning import LINES, GroupKey, group_records, group_title, panel_grid, save_figure
from .sections import SECTION_BUILDERS
from .tables import Table, format_cell


@dataclass(frozen=True)
class Knob:
    """How one repair's knob curve is stored and read."""

    method: str
    title: str
    artifact: str  # the record's artifact holding the curve
    grid_key: str  # the curve's list of knob values
    label: str  # x-axis label
    chosen: Callable[[object], float]  # the knob value the repair used, from a record
    rule: str  # how the repair chose it, one sentence


PERCENT = ("pruned_fraction", "clean_accuracy", "asr")  # the table's columns after the chosen value
KNOBS = (
    Knob(
        "anp",
        "ANP: the pruning threshold",
        "anp_curve",
        "thresholds",
        "threshold on the learnt neuron masks (neurons with mask below it are pruned)",
        lambda r: r.outcome.metrics["pruning_threshold"],
        "ANP prunes the neurons whose learnt mask lies below the threshold; it takes the largest threshold whose "
        "clean validation accuracy stays within its bound of the unpruned model's (2 points by default).",
    ),
    Knob(
        "clp",
        "CLP: the channel Lipschitz cut-off u",
        "clp_curve",
        "grid",
        "u (channels above mean + u std of their layer's Lipschitz bounds are pruned)",
        lambda r: r.outcome.artifacts["clp_curve"]["u"],
        "CLP is data-free: it prunes at the paper's u = 3 whatever the curve shows; the validation curve only "
        "shows what another u would have cost.",
    ),
)


def knob_figure(knob: Knob, groups: dict[GroupKey, list], path: Path) -> Path:
    """One panel per group: validation CA, test CA and ASR (means over seeds) against the knob; dashed: each seed's
    chosen value."""
    fig, axes = panel_grid(len(groups))
    for ax, (key, recs) in zip(axes, groups.items(), strict=False):
        curves = [r.outcome.artifacts[knob.artifact] for r in recs]
        x = np.array(curves[0][knob.grid_key])
        for attr, label, style, color in LINES:
            values = [c[attr] for c in curves if c.get(attr) is not None]
            if values and all(len(v) == len(x) for v in values):
                ax.plot(x, np.mean(values, axis=0), style, color=color, label=label)
        for r in recs:
            ax.axvline(knob.chosen(r), color="gray", linestyle="--", linewidth=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(knob.label, fontsize=7)
        ax.set_title(group_title(key), fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{knob.title} (dashed: each seed's choice)", fontsize=8)
    return save_figure(fig, path)


def knob_table(knob: Knob, groups: dict[GroupKey, list]) -> Table:
    """Per group (mean ± 95% CI over seeds): the chosen knob, and the pruned fraction, CA and ASR after (in %)."""
    body = []
    for key, recs in groups.items():
        metric = [format_cell([r.outcome.metrics[m] for r in recs if m in r.outcome.metrics]) for m in PERCENT]
        body.append([group_title(key), format_cell([knob.chosen(r) for r in recs], percent=False), *metric])
    return Table(["setting", "chosen", "pruned (%)", "CA (%)", "ASR (%)"], body)


def knob_section(knob: Knob, records: Sequence, directory: Path) -> Section | None:
    """The section of one knob's repair, or ``None`` when no record carries its curve."""
    groups = group_records(records, knob.artifact)
    if not groups:
        return None
    note = "The test-split curves are drawn for this report only; the repair never saw them."
    figure = knob_figure(knob, groups, directory / f"{knob.method}_knob.png")
    return Section(knob.title, [f"{knob.rule} {note}"], [knob_table(knob, groups)], [figure])


for _knob in KNOBS:
    SECTION_BUILDERS.register(_knob.method)(partial(knob_section, _knob))
