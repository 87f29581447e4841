"""The report's comparison with BackdoorBench's leaderboard: each cell's CA / ASR / DER beside the leaderboard's
figure for the same attack x defense at the same poisoning rate, and the difference.

A setting is comparable when its model is ``preact_resnet18`` on 3x32x32 images of CIFAR-10 (its ten class names:
the full set or a slice such as ``cifar10_png5k``) or of GTSRB (43 classes, a dataset named ``gtsrb...``); a cell
when its attack is all-to-one with target 0 at a poisoning rate the leaderboard has. Population runs (one target
per seed) are not compared. The section says how the run's setting departs from the leaderboard's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..experiments.config import ExperimentConfig
from ..experiments.grid import settings as grid_settings
from ..experiments.store import ResultRow, SettingInfo
from .leaderboard import (
    CIFAR10_CLASSES,
    DEFENDER_FRACTION,
    LEADERBOARD_MODEL,
    LEADERBOARD_TARGET,
    LEADERBOARD_TRAINING,
    SOURCE,
    LeaderboardFigure,
    leaderboard_der,
    leaderboard_figure,
)
from .render import Section
from .tables import Table, group_values, with_repair_rates

HEADERS = [
    "dataset",
    "attack",
    "defense",
    "poison (%)",
    "CA",
    "CA (LB)",
    "ΔCA",
    "ASR",
    "ASR (LB)",
    "ΔASR",
    "DER",
    "DER (LB)",
    "ΔDER",
    "leaderboard note",
]


def leaderboard_dataset(info: SettingInfo) -> str | None:
    """``cifar10`` or ``gtsrb`` when the setting is PreAct-ResNet18 on that dataset (or a slice of it), else None."""
    if info.model != LEADERBOARD_MODEL or tuple(info.input_shape) != (3, 32, 32):
        return None
    if tuple(info.classes) == CIFAR10_CLASSES:
        return "cifar10"
    if len(info.classes) == 43 and "gtsrb" in info.dataset.lower():
        return "gtsrb"
    return None


def _attack_rate(attack) -> float | None:
    """The poisoning rate of an all-to-one attack aimed at label 0, else None (not on the leaderboard's setting)."""
    if getattr(attack, "target", None) != LEADERBOARD_TARGET or getattr(attack, "mode", "all_to_one") != "all_to_one":
        return None
    rate = getattr(attack, "poison_rate", None)
    return float(rate) if rate is not None else None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _diff(ours: float | None, theirs: float | None) -> str:
    return "–" if ours is None or theirs is None else f"{ours - theirs:+.1f}"


def _mean_pct(values: Sequence[float] | None) -> float | None:
    kept = [v for v in values or [] if not math.isnan(v)]
    return 100 * sum(kept) / len(kept) if kept else None


def _row(dataset: str, attack: str, defense: str, metrics: dict, fig: LeaderboardFigure) -> list[str]:
    ours = [_mean_pct(metrics.get(m)) for m in ("clean_accuracy", "asr", "der")]
    theirs = [fig.ca, fig.asr, leaderboard_der(fig)]
    cells = [c for o, t in zip(ours, theirs, strict=True) for c in (_pct(o), _pct(t), _diff(o, t))]
    return [dataset, attack, defense, f"{fig.poison_rate * 100:g}", *cells, fig.note]


def comparison_table(cfg: ExperimentConfig, infos: Sequence[SettingInfo], rows: Sequence[ResultRow]) -> Table:
    """One line per cell of a comparable setting that the leaderboard has a figure for; ours are means over seeds
    in %, differences in percentage points (ours − leaderboard)."""
    boards = {(i.dataset, i.model): b for i in infos if (b := leaderboard_dataset(i)) is not None}
    attacks = dict(cfg.build_attacks())
    methods = {label: d.name for label, d in cfg.build_defenses()} | {"none": "none"}
    body = []
    for (dataset, model, attack, defense), metrics in group_values(with_repair_rates(rows)).items():
        board = boards.get((dataset, model))
        if board is None or attack not in attacks or defense not in methods or "clean_accuracy" not in metrics:
            continue
        rate = _attack_rate(attacks[attack])
        fig = leaderboard_figure(board, attacks[attack].name, methods[defense], rate) if rate is not None else None
        if fig is not None:
            body.append(_row(dataset, attack, defense, metrics, fig))
    return Table(HEADERS, body)


def setting_departures(cfg: ExperimentConfig, info: SettingInfo) -> str:
    """How the run's setting ``info`` departs from the leaderboard's, in one sentence."""
    training = cfg.training.model_dump()
    recipe = [f"{k} {training[k]} (leaderboard {v})" for k, v in LEADERBOARD_TRAINING.items() if training[k] != v]
    places = grid_settings(cfg)
    fraction = cfg.datasets[places[info.setting][0]].defender_fraction if info.setting < len(places) else None
    share = f"the defender's share {fraction:g} of the training set" if fraction else "the dataset's fixed val split"
    text = f"{info.summary}; {share} (leaderboard: {DEFENDER_FRACTION:g} of the full training set)"
    return text + ("; training: " + ", ".join(recipe) if recipe else "; BackdoorBench's training recipe") + "."


def leaderboard_section(
    cfg: ExperimentConfig, infos: Sequence[SettingInfo], rows: Sequence[ResultRow]
) -> Section | None:
    """The comparison section, or None when no cell of the run is on a setting the leaderboard has."""
    if cfg.population is not None:
        return None
    table = comparison_table(cfg, infos, rows)
    if not table.rows:
        return None
    shown = {line[0] for line in table.rows}
    paragraphs = [
        f"Source: {SOURCE}. Ours: mean over seeds {sorted({r.seed for r in rows})}; the leaderboard's: one run per "
        "cell. All in %; Δ = ours − leaderboard, in points. DER = [max(0, ΔASR) − max(0, ΔCA) + 1] / 2, ours "
        "against this run's undefended model, the leaderboard's computed from its own CA / ASR.",
        *(
            f"This run ({i.dataset}): {setting_departures(cfg, i)}"
            for i in infos
            if i.dataset in shown and leaderboard_dataset(i)
        ),
    ]
    return Section("Comparison with the BackdoorBench leaderboard", paragraphs=paragraphs, tables=[table])
