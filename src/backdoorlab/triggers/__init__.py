"""Trigger functions in pixel space ([0, 1], before normalization)."""

from .base import TRIGGER_TYPES, MaskedTrigger, Trigger, register_trigger_type, trigger_from_state
from .patches import (
    BADNETS_PATTERN,
    blend_trigger,
    pattern_trigger,
    pixel_trigger,
    square_trigger,
    stamp_trigger,
)
from .specs import TRIGGERS, TriggerSpec

__all__ = [
    "BADNETS_PATTERN",
    "MaskedTrigger",
    "TRIGGER_TYPES",
    "register_trigger_type",
    "trigger_from_state",
    "TRIGGERS",
    "Trigger",
    "TriggerSpec",
    "blend_trigger",
    "pattern_trigger",
    "pixel_trigger",
    "square_trigger",
    "stamp_trigger",
]

# Triggers of the attacks of issue 5 (Blend reuses blend_trigger; TrojanNet; Refool).
from .images import fit_images, read_image_file  # noqa: E402
from .reflection import REFLECTION_MODELS, ReflectionTrigger, gaussian_blur, ghost_copies, vignette  # noqa: E402
from .trojannet_patterns import NUM_PATTERNS, TrojanNetTrigger, trojannet_patterns, trojannet_trigger  # noqa: E402

__all__ += [
    "NUM_PATTERNS",
    "REFLECTION_MODELS",
    "ReflectionTrigger",
    "TrojanNetTrigger",
    "fit_images",
    "gaussian_blur",
    "ghost_copies",
    "read_image_file",
    "trojannet_patterns",
    "trojannet_trigger",
    "vignette",
]

# Triggers of the field's attacks (issue 18): WaNet's warp, SIG's sinusoid, BPP's squeezing, LC's checkerboard.
from .signals import AdditiveTrigger, QuantizeTrigger, corner_checkerboard, sinusoid, sinusoid_trigger  # noqa: E402
from .warping import WarpTrigger, warping_field  # noqa: E402

__all__ += [
    "AdditiveTrigger",
    "QuantizeTrigger",
    "WarpTrigger",
    "corner_checkerboard",
    "sinusoid",
    "sinusoid_trigger",
    "warping_field",
]

# The Trojan Detection Challenge 2022's trigger distribution (issue 22).
from .tdc import TDCSpec, tdc_trigger  # noqa: E402

__all__ += ["TDCSpec", "tdc_trigger"]
