"""Defenses: input detectors, repairs and model inspectors, each registered by name in :data:`DEFENSES`.

Defense modules register themselves on import; this package imports them all so the registry is complete.
"""

from .base import DEFENSES, Defense, DefenseContext, DefenseOutcome, InputDetector, Repair, triggered_test_inputs

__all__ = [
    "DEFENSES",
    "Defense",
    "DefenseContext",
    "DefenseOutcome",
    "InputDetector",
    "Repair",
    "triggered_test_inputs",
]
