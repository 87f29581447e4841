"""Attacks, one module each; every attack returns a :class:`Backdoor`.

Each module registers its attack in :data:`ATTACKS` (``ATTACKS.build(name, params)`` makes one); every module
of this package is imported here, so a new attack is one new file.
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
    "poison_split",
]
