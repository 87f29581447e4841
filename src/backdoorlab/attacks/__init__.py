"""Attacks, one module each; every attack returns a :class:`Backdoor`.

Each module registers its attack in :data:`ATTACKS`; every module of this package is imported here, so a
new attack is one new file.
"""

from ..utils.discovery import import_submodules
from .base import ATTACKS, Attack, Backdoor, PoisonedSet, PoisoningAttack, TargetRule, poison_split

import_submodules(__name__, __path__)

from .badnets import BadNets  # noqa: E402

__all__ = [
    "ATTACKS",
    "Attack",
    "Backdoor",
    "BadNets",
    "PoisonedSet",
    "PoisoningAttack",
    "TargetRule",
    "make_attack",
    "poison_split",
]


def make_attack(name: str, params: dict | None = None) -> Attack:
    """An attack by registered name, its parameters validated (unknown or ill-typed ones raise ConfigError)."""
    from ..utils.validation import build_validated

    return build_validated(ATTACKS.get(name), params or {}, where=f"attack {name}")
