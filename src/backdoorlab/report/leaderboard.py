"""BackdoorBench's published leaderboard figures (PreAct-ResNet18; CIFAR-10, and GTSRB's undefended rows), kept in
the package to compare runs with.

Source (:data:`SOURCE`): the BackdoorBench leaderboard at backdoorbench.github.io, ``leaderboard-cifar10.html`` and
``static/data/results.csv`` of the site's repository at commit b98eab4 (the Spectral Signatures column from
``results_old.csv``, the page's first version), as re-parsed in the project's reference notes: ``peers.md`` §1.4
(the 10% CIFAR-10 table, BadNets by poisoning rate, BadNets on GTSRB) and ``field.md`` §1 (SIG, LC, the 1% and
0.5% rows of CLP, AC and SS, and WaNet, Input-aware and BPP on GTSRB). The setting: PreAct-ResNet18, all-to-one
attacks with target 0, defenses given 5% of the training set as clean data, one run per cell (no seeds).

Figures are CA / ASR in % as published, None where the notes give none. The leaderboard's DER is not stored: it is
computed from its own CA / ASR (:func:`leaderboard_der`; BadNets x ANP gives 93.6 and BadNets x i-BAU 95.8, the
values the notes state). Methods with no counterpart here are left out: the attacks SSBA, LF and LIRA,
and the defense DBD. ``NC`` is the leaderboard's Neural Cleanse with unlearning (``nc_unlearning`` here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..metrics import defense_effectiveness_rate

SOURCE = (
    "BackdoorBench leaderboard, backdoorbench.github.io (leaderboard-cifar10.html and static/data/results.csv of "
    "the site's repository at b98eab4; Spectral Signatures from results_old.csv, the page's first version): "
    "PreAct-ResNet18, all-to-one, target 0, defenses given 5% of the training set as clean data"
)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# BackdoorBench's training recipe in TrainingConfig's fields (random crop with 4 px padding = a shift of up to 4 px).
LEADERBOARD_TRAINING = {
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "epochs": 100,
    "batch_size": 128,
    "schedule": "cosine",
    "augment_shift": 4,
    "augment_flip": True,
}
LEADERBOARD_MODEL = "preact_resnet18"
LEADERBOARD_TARGET = 0
DEFENDER_FRACTION = 0.05


@dataclass(frozen=True)
class LeaderboardFigure:
    """One leaderboard cell: ``dataset`` (``cifar10`` or ``gtsrb``), ``attack`` and ``defense`` by the names
    registered here (``defense`` ``none``: the undefended model), the poisoning rate as a fraction, CA and ASR in %
    as published (None where not given), and a note on the figure where it needs one."""

    dataset: str
    attack: str
    defense: str
    poison_rate: float
    ca: float | None
    asr: float | None
    note: str = ""


# The 10% CIFAR-10 table: attack -> {defense: (CA, ASR)}; the page's columns No defense, FT, FP, NAD, NC, ANP, AC,
# SS, ABL, CLP, i-BAU (DBD left out); SS is n/a for TrojanNN and BPP.
_CIFAR10_AT_10_PERCENT: dict[str, dict[str, tuple[float, float]]] = {
    "badnets": {
        "none": (91.32, 95.03),
        "fine_tuning": (89.96, 1.48),
        "fine_pruning": (91.31, 57.13),
        "nad": (89.87, 2.14),
        "nc_unlearning": (89.05, 1.27),
        "anp": (84.17, 0.73),
        "activation_clustering": (88.80, 86.23),
        "spectral_signatures": (89.98, 92.41),
        "abl": (83.32, 0.00),
        "clp": (90.07, 77.56),
        "i_bau": (89.16, 1.29),
    },
    "blend": {
        "none": (93.47, 99.92),
        "fine_tuning": (92.78, 96.11),
        "fine_pruning": (93.17, 99.26),
        "nad": (92.17, 97.69),
        "nc_unlearning": (93.47, 99.92),
        "anp": (86.58, 2.19),
        "activation_clustering": (88.52, 99.72),
        "spectral_signatures": (90.35, 99.84),
        "abl": (77.30, 0.73),
        "clp": (91.32, 99.74),
        "i_bau": (87.00, 50.53),
    },
    "wanet": {
        "none": (91.25, 89.73),
        "fine_tuning": (93.48, 17.10),
        "fine_pruning": (91.46, 1.09),
        "nad": (93.17, 22.98),
        "nc_unlearning": (91.80, 7.53),
        "anp": (85.73, 0.43),
        "activation_clustering": (91.93, 96.80),
        "spectral_signatures": (91.94, 90.17),
        "abl": (83.19, 0.00),
        "clp": (81.91, 78.42),
        "i_bau": (89.49, 5.21),
    },
    "trojannn": {
        "none": (93.42, 100.00),
        "fine_tuning": (92.42, 5.99),
        "fine_pruning": (92.47, 71.07),
        "nad": (91.88, 3.73),
        "nc_unlearning": (91.76, 8.22),
        "anp": (86.87, 0.20),
        "activation_clustering": (89.75, 99.97),
        "abl": (11.07, 100.0),
        "clp": (92.98, 100.0),
        "i_bau": (90.37, 2.91),
    },
    "bpp": {
        "none": (90.69, 99.78),
        "fine_tuning": (93.25, 2.54),
        "fine_pruning": (92.70, 18.39),
        "nad": (92.81, 2.46),
        "nc_unlearning": (92.68, 2.84),
        "anp": (81.78, 0.24),
        "activation_clustering": (89.29, 99.73),
        "abl": (78.55, 13.77),
        "clp": (90.40, 2.18),
        "i_bau": (90.99, 6.24),
    },
    "input_aware": {
        "none": (90.67, 98.26),
        "fine_tuning": (93.12, 1.72),
        "fine_pruning": (91.74, 0.04),
        "nad": (93.18, 1.68),
        "nc_unlearning": (92.61, 0.76),
        "anp": (90.36, 1.64),
        "activation_clustering": (91.48, 88.62),
        "spectral_signatures": (91.39, 90.43),
        "abl": (63.19, 90.16),
        "clp": (90.30, 2.17),
        "i_bau": (89.17, 27.08),
    },
}

_NOTES = {
    "anp": "BackdoorBench picks ANP's pruning threshold with the test ASR and accuracy (BackdoorBench #35)",
    "spectral_signatures": "first page version (results_old.csv)",
    "activation_clustering": "filter + retrain",
}

_OTHER_RATES = (
    LeaderboardFigure("cifar10", "badnets", "none", 0.05, 92.64, 88.74),
    LeaderboardFigure("cifar10", "badnets", "none", 0.01, 93.14, 74.73),
    LeaderboardFigure("cifar10", "badnets", "none", 0.005, 93.76, 50.06),
    LeaderboardFigure("cifar10", "badnets", "none", 0.001, 93.61, 1.23),
    LeaderboardFigure("cifar10", "badnets", "clp", 0.01, 89.46, 3.51),
    LeaderboardFigure("cifar10", "badnets", "activation_clustering", 0.01, None, 27.2, _NOTES["activation_clustering"]),
    LeaderboardFigure("cifar10", "badnets", "activation_clustering", 0.005, None, 2.3, _NOTES["activation_clustering"]),
    LeaderboardFigure("cifar10", "badnets", "spectral_signatures", 0.01, None, 74.2, _NOTES["spectral_signatures"]),
    LeaderboardFigure("cifar10", "badnets", "spectral_signatures", 0.005, None, 7.9, _NOTES["spectral_signatures"]),
    LeaderboardFigure("cifar10", "sig", "none", 0.05, 93.64, 97.09),
    LeaderboardFigure("cifar10", "sig", "none", 0.1, 84.48, 98.27, "results.csv; 10% is the whole target class"),
    LeaderboardFigure("cifar10", "label_consistent", "none", 0.05, 93.53, 99.80, "page; results.csv 93.29 / 99.50"),
    LeaderboardFigure("gtsrb", "badnets", "none", 0.1, 97.24, 59.25),
    LeaderboardFigure("gtsrb", "wanet", "none", 0.1, 97.74, 94.25),
    LeaderboardFigure("gtsrb", "bpp", "none", 0.1, 97.43, 99.90),
    LeaderboardFigure("gtsrb", "input_aware", "none", 0.1, 98.76, 95.92),
)

FIGURES: tuple[LeaderboardFigure, ...] = (
    *(
        LeaderboardFigure("cifar10", attack, defense, 0.1, ca, asr, _NOTES.get(defense, ""))
        for attack, cells in _CIFAR10_AT_10_PERCENT.items()
        for defense, (ca, asr) in cells.items()
    ),
    *_OTHER_RATES,
)


def leaderboard_figure(dataset: str, attack: str, defense: str, poison_rate: float) -> LeaderboardFigure | None:
    """The leaderboard's cell for ``dataset`` (``cifar10`` / ``gtsrb``), registered ``attack`` x ``defense``
    (``none``: undefended) at ``poison_rate`` (a fraction), or None when the leaderboard has no such cell."""
    for fig in FIGURES:
        same = (fig.dataset, fig.attack, fig.defense) == (dataset, attack, defense)
        if same and math.isclose(fig.poison_rate, poison_rate):
            return fig
    return None


def leaderboard_der(fig: LeaderboardFigure) -> float | None:
    """The leaderboard's DER of a defended cell in %, from its CA / ASR and the undefended cell of the same attack
    and rate (``[max(0, ΔASR) − max(0, ΔCA) + 1] / 2``); None for an undefended cell or a missing figure."""
    base = leaderboard_figure(fig.dataset, fig.attack, "none", fig.poison_rate) if fig.defense != "none" else None
    if base is None or None in (base.ca, base.asr, fig.ca, fig.asr):
        return None
    return 100 * defense_effectiveness_rate(base.ca / 100, fig.ca / 100, base.asr / 100, fig.asr / 100)
