"""Trigger functions in pixel space ([0, 1], before normalization)."""

from .base import TRIGGER_TYPES, MaskedTrigger, Trigger, register_trigger_type, trigger_from_state
from .patches import (
    BADNETS_PATTERN,
    TRIGGER_KINDS,
    blend_trigger,
    make_patch_trigger,
    pattern_trigger,
    pixel_trigger,
    square_trigger,
    stamp_trigger,
)

__all__ = [
    "BADNETS_PATTERN",
    "MaskedTrigger",
    "TRIGGER_TYPES",
    "register_trigger_type",
    "trigger_from_state",
    "TRIGGER_KINDS",
    "Trigger",
    "blend_trigger",
    "make_patch_trigger",
    "pattern_trigger",
    "pixel_trigger",
    "square_trigger",
    "stamp_trigger",
]
