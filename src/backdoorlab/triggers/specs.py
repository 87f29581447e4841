"""Triggers by name: each registered class in :data:`TRIGGERS` is a trigger's parameters (a pydantic schema),
and ``make(image_shape)`` draws the trigger for images of that shape.

``TRIGGERS.build("square", {"size": 4}).make((1, 28, 28))`` is a 4x4 white square at the bottom-right.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..registry import Registry
from .base import MaskedTrigger, Trigger
from .patches import BADNETS_PATTERN, pattern_trigger, pixel_trigger, square_trigger


class TriggerSpec(BaseModel):
    """Base of every named trigger: validated parameters; :meth:`make` gives the trigger for an image shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def make(self, image_shape: Sequence[int]) -> Trigger:
        """The trigger for images of ``image_shape`` (C, H, W)."""
        raise NotImplementedError


TRIGGERS: Registry[type[TriggerSpec]] = Registry("trigger")


class PatchSpec(TriggerSpec):
    """A patch painted in one colour at a corner or an explicit place (BadNets' triggers)."""

    color: float | list[float] = Field(
        1.0, description="colour of the patch in [0, 1]: one value for every channel, or one per channel (1 = white)"
    )
    position: str | tuple[int, int] = Field(
        "bottom-right",
        description="a corner (bottom-right, bottom-left, top-right, top-left) or the [row, col] of the top-left pixel",
    )
    margin: int = Field(1, ge=0, description="pixels between the patch and the image border at a corner")


@TRIGGERS.register("square")
class SquareSpec(PatchSpec):
    """A solid ``size`` x ``size`` square (BackdoorBench's BadNets trigger: 3x3 white, bottom-right)."""

    size: int = Field(3, ge=1, description="side of the square in pixels")

    def make(self, image_shape: Sequence[int]) -> MaskedTrigger:
        return square_trigger(image_shape, self.size, color=self.color, position=self.position, margin=self.margin)


@TRIGGERS.register("pixel")
class PixelSpec(PatchSpec):
    """The BadNets paper's single-pixel backdoor: one bright pixel near a corner."""

    def make(self, image_shape: Sequence[int]) -> MaskedTrigger:
        return pixel_trigger(image_shape, color=self.color, position=self.position, margin=self.margin)


@TRIGGERS.register("pattern")
class PatternSpec(PatchSpec):
    """The BadNets paper's pattern backdoor: a small glyph of bright pixels (default a 3x3 checkerboard)."""

    glyph: list[list[float]] | None = Field(
        None, description="the pattern's 0/1 weights as rows of a 2-D grid; None: the paper's 3x3 pattern"
    )

    def make(self, image_shape: Sequence[int]) -> MaskedTrigger:
        glyph = BADNETS_PATTERN if self.glyph is None else torch.tensor(self.glyph, dtype=torch.float32)
        return pattern_trigger(image_shape, glyph=glyph, color=self.color, position=self.position, margin=self.margin)
