"""Defenses: input detectors, repairs and model inspectors, each registered by name in :data:`DEFENSES`.

The registry is filled by the defense modules as they land (STRIP, Feature Squeezing, pruning, ...).
"""

from ..registry import Registry

DEFENSES: Registry[type] = Registry("defense")

__all__ = ["DEFENSES"]
