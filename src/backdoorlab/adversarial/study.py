"""The attacks of Feature Squeezing's detection table (Xu, Evans, Qi, NDSS 2018), per dataset, as the study ran them.

Parameters from EvadeML-Zoo's ``Reproduce_FeatureSqueezing.md`` (docs/methods.md section 5). Each column of the table is
a :class:`StudyAttack`: a key (``cw2_next``), the column's title and variant, the registered attack and its
parameters. ``mnist`` has the study's 10 MNIST columns (no DeepFool, which the study did not run on MNIST);
``cifar10`` its 11 CIFAR-10 columns.

Departures:

- CW-infinity Next/LL use :class:`~.attacks.MinimalEpsilonBIM` (ART's CW-infinity cannot run targeted); its
  confidence is the study's CW confidence.
- CW2 and CW0 run Carlini's own algorithms in torch (:mod:`.carlini`, ``solver: carlini``), as the study did, with
  a cut budget: CW2 3 binary-search steps from c = 1 (the study: 9 from 1e-3; Carlini's x10 search spends its
  first 3 steps reaching 1) with the study's 1000 iterations each; CW0 from Carlini's c0 1e-3 with 100 iterations
  per constant (the study: 1000) and at most 3000 Adam steps per input over all its rounds. Callers with more time
  pass overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError
from .attacks import ADVERSARIAL_ATTACKS, EvasionAttack

Preset = Literal["mnist", "cifar10"]


@dataclass(frozen=True)
class StudyAttack:
    """One column of the table: ``key`` (``cw2_next``), ``title`` (``CW2``), ``variant`` (``Next``, ``LL`` or
    empty), and the attack."""

    key: str
    title: str
    variant: str
    attack: EvasionAttack

    @property
    def label(self) -> str:
        return f"{self.title} {self.variant}".strip()


# (key, title, variant, registered attack, parameters); CW-family parameters get the dataset's confidence.
_CW2 = {"initial_const": 1.0, "binary_search_steps": 3, "max_iter": 1000}
_CW0 = {"initial_const": 1e-3, "max_iter": 100, "max_total_iter": 3000}
_COLUMNS: dict[str, list[tuple[str, str, str, str, dict[str, Any]]]] = {
    "mnist": [
        ("fgsm", "FGSM", "", "fgsm", {"eps": 0.3}),
        ("bim", "BIM", "", "bim", {"eps": 0.3, "eps_step": 0.06}),
        ("cw_inf_next", "CW∞", "Next", "min_eps_bim", {"target": "next", "confidence": 10}),
        ("cw_inf_ll", "CW∞", "LL", "min_eps_bim", {"target": "ll", "confidence": 10}),
        ("cw2_next", "CW2", "Next", "cw2", {"target": "next", "confidence": 10, **_CW2}),
        ("cw2_ll", "CW2", "LL", "cw2", {"target": "ll", "confidence": 10, **_CW2}),
        ("cw0_next", "CW0", "Next", "cw0", {"target": "next", "confidence": 10, **_CW0}),
        ("cw0_ll", "CW0", "LL", "cw0", {"target": "ll", "confidence": 10, **_CW0}),
        ("jsma_next", "JSMA", "Next", "jsma", {"target": "next"}),
        ("jsma_ll", "JSMA", "LL", "jsma", {"target": "ll"}),
    ],
    "cifar10": [
        ("fgsm", "FGSM", "", "fgsm", {"eps": 0.0156}),
        ("bim", "BIM", "", "bim", {"eps": 0.008, "eps_step": 0.0012}),
        ("cw_inf_next", "CW∞", "Next", "min_eps_bim", {"target": "next", "confidence": 5}),
        ("cw_inf_ll", "CW∞", "LL", "min_eps_bim", {"target": "ll", "confidence": 5}),
        ("deepfool", "DeepFool", "", "deepfool", {"overshoot": 10}),
        ("cw2_next", "CW2", "Next", "cw2", {"target": "next", "confidence": 5, **_CW2}),
        ("cw2_ll", "CW2", "LL", "cw2", {"target": "ll", "confidence": 5, **_CW2}),
        ("cw0_next", "CW0", "Next", "cw0", {"target": "next", "confidence": 5, **_CW0}),
        ("cw0_ll", "CW0", "LL", "cw0", {"target": "ll", "confidence": 5, **_CW0}),
        ("jsma_next", "JSMA", "Next", "jsma", {"target": "next"}),
        ("jsma_ll", "JSMA", "LL", "jsma", {"target": "ll"}),
    ],
}

# The source's column order (slides: L-infinity, L2, L0 attacks); every preset's keys appear in it.
COLUMN_ORDER = (
    "fgsm",
    "bim",
    "cw_inf_next",
    "cw_inf_ll",
    "deepfool",
    "cw2_next",
    "cw2_ll",
    "cw0_next",
    "cw0_ll",
    "jsma_next",
    "jsma_ll",
)

# key -> (column label, registered attack name), over both presets.
COLUMNS: dict[str, tuple[str, str]] = {
    key: (f"{title} {variant}".strip(), name) for cols in _COLUMNS.values() for key, title, variant, name, _ in cols
}

# Squeezers of the study's detection runs: each alone, then the joint detector (max over its squeezers).
SQUEEZERS: dict[str, tuple[list[str], list[str]]] = {
    "mnist": (["bit_depth_1", "bit_depth_2", "median_2x2", "median_3x3"], ["bit_depth_1", "median_2x2"]),
    "cifar10": (
        [
            "bit_depth_1",
            "bit_depth_2",
            "bit_depth_3",
            "bit_depth_4",
            "bit_depth_5",
            "median_2x2",
            "median_3x3",
            "nlm_11-3-2",
            "nlm_11-3-4",
            "nlm_13-3-2",
            "nlm_13-3-4",
        ],
        ["bit_depth_5", "median_2x2", "nlm_13-3-2"],
    ),
}


def preset_for_channels(channels: int) -> Preset:
    """``mnist`` for grey images (1 channel), ``cifar10`` for colour ones."""
    return "mnist" if channels == 1 else "cifar10"


def study_keys(preset: Preset) -> list[str]:
    """The column keys of ``preset``, in the table's order."""
    return [key for key, *_ in _COLUMNS[preset]]


def study_attacks(
    preset: Preset, keys: list[str] | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> list[StudyAttack]:
    """The columns of ``preset`` (all, or those in ``keys``, in table order) with their attacks built.

    ``overrides`` map a column key (``cw2_next``) or an attack name (``cw2``: both its columns) to parameters that
    replace the study's; a key's overrides win over its attack's. Unknown keys or parameters raise ConfigError.
    """
    columns = {key: rest for key, *rest in _COLUMNS[preset]}
    chosen = keys if keys is not None else list(columns)
    unknown = [k for k in chosen if k not in columns]
    if unknown:
        raise ConfigError(f"no column {unknown[0]!r} in the {preset} study; valid: {', '.join(columns)}")
    overrides = dict(overrides or {})
    names = {name for _, _, name, _ in columns.values()}
    stray = [k for k in overrides if k not in columns and k not in names]
    if stray:
        raise ConfigError(
            f"attack_params: {stray[0]!r} is neither a column nor an attack of the {preset} study; "
            f"valid: {', '.join([*columns, *sorted(names)])}"
        )
    out = []
    for key in sorted(dict.fromkeys(chosen), key=COLUMN_ORDER.index):
        title, variant, name, params = columns[key]
        merged = {**params, **overrides.get(name, {}), **overrides.get(key, {})}
        out.append(StudyAttack(key, title, variant, ADVERSARIAL_ATTACKS.build(name, merged)))
    return out
