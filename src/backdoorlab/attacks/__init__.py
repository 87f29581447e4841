"""Attacks, one module each; every attack returns a :class:`Backdoor`."""

from .badnets import BadNets
from .base import ATTACKS, Attack, Backdoor, PoisonedSet, PoisoningAttack, TargetRule, poison_split

__all__ = ["ATTACKS", "Attack", "Backdoor", "BadNets", "PoisonedSet", "PoisoningAttack", "TargetRule", "poison_split"]


def make_attack(name: str, params: dict | None = None) -> Attack:
    """An attack by registered name, its parameters validated (unknown or ill-typed ones raise ConfigError)."""
    from ..utils.validation import build_validated

    return build_validated(ATTACKS.get(name), params or {}, where=f"attack {name}")
