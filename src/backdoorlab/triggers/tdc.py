"""The Trojan Detection Challenge 2022's trigger distribution (Mazeika et al., NeurIPS 2022 competition;
``generate_attack_specifications`` in mmazeika/tdc-starter-kit ``utils.py``).

Two kinds, both :class:`~.base.MaskedTrigger` (``x' = (1 - m) x + m p`` with ``m = alpha * mask``):

- ``patch``: a rectangle whose height and width are drawn independently in [``min_side``, ``max_side``] (TDC:
  3-10 px), at a uniform position that fits, filled with a random binary pattern (each pixel and channel 0 or 1
  with probability 1/2), alpha 1 (TDC's detection tracks; 0.2 in its evasive track);
- ``blended``: a full-image pattern, each pixel and channel U(0, 1), alpha 0.1.

Departures: the draw uses a ``torch.Generator`` seeded with ``seed`` (TDC draws a batch of specifications with
numpy), so one seed gives one trigger; on images smaller than 11 px the largest side is ``H - 1`` / ``W - 1``
(TDC's position rule needs at least one free row and column), e.g. 3-7 px on the 8x8 digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from ..errors import ConfigError
from ..utils.seeding import make_generator
from .base import MaskedTrigger
from .specs import TRIGGERS, TriggerSpec

TriggerType = Literal["patch", "blended"]
TDC_ALPHA = {"patch": 1.0, "blended": 0.1}
TDC_MIN_SIDE, TDC_MAX_SIDE = 3, 10


def _side(low: int, high: int, size: int, gen: torch.Generator) -> int:
    high = min(high, size - 1)
    if low > high:
        raise ConfigError(f"a TDC patch side of at least {low} px does not fit (with a free row) in {size} px")
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def tdc_trigger(
    trigger_type: TriggerType,
    image_shape: Sequence[int],
    seed: int,
    *,
    min_side: int = TDC_MIN_SIDE,
    max_side: int = TDC_MAX_SIDE,
    alpha: float | None = None,
) -> MaskedTrigger:
    """The TDC trigger of ``trigger_type`` drawn from ``seed`` for images of ``image_shape`` (C, H, W).

    ``alpha`` defaults to TDC's (patch 1.0, blended 0.1). ``params`` of the result record the draw (type,
    seed, alpha, and the patch's ``top_left`` / ``bottom_right`` (row, col), the latter exclusive).
    """
    if trigger_type not in TDC_ALPHA:
        raise ConfigError(f"unknown TDC trigger type {trigger_type!r}; use patch or blended")
    c, h, w = (int(v) for v in image_shape)
    alpha = TDC_ALPHA[trigger_type] if alpha is None else float(alpha)
    if not 0 < alpha <= 1:
        raise ConfigError(f"TDC trigger alpha must lie in (0, 1], got {alpha}")
    gen = make_generator(seed)
    params: dict = {"trigger_type": trigger_type, "seed": seed, "alpha": alpha}
    if trigger_type == "blended":
        pattern = torch.rand(c, h, w, generator=gen)
        return MaskedTrigger(torch.full((1, h, w), alpha), pattern, kind="tdc_blended", params=params)
    ph, pw = _side(min_side, max_side, h, gen), _side(min_side, max_side, w, gen)
    row = int(torch.randint(0, h - ph, (1,), generator=gen))
    col = int(torch.randint(0, w - pw, (1,), generator=gen))
    pattern = (torch.rand(c, h, w, generator=gen) > 0.5).float()
    mask = torch.zeros(1, h, w)
    mask[0, row : row + ph, col : col + pw] = alpha
    params |= {"top_left": [row, col], "bottom_right": [row + ph, col + pw]}
    return MaskedTrigger(mask, pattern, kind="tdc_patch", params=params)


@TRIGGERS.register("tdc")
class TDCSpec(TriggerSpec):
    """A trigger drawn from the Trojan Detection Challenge 2022's distribution (patch or blended)."""

    trigger_type: TriggerType = Field(
        "patch",
        description="patch (random rectangle, random binary pattern, alpha 1) or blended (full-image "
        "U(0, 1) noise, alpha 0.1)",
    )
    seed: int = Field(0, ge=0, description="seed of the draw: the rectangle, its position and the pattern")
    min_side: int = Field(TDC_MIN_SIDE, ge=1, description="smallest side of a patch in pixels (TDC: 3)")
    max_side: int = Field(TDC_MAX_SIDE, ge=1, description="largest side of a patch in pixels (TDC: 10)")
    alpha: float | None = Field(
        None, gt=0, le=1, description="blend weight of the pattern; None: TDC's (patch 1.0, blended 0.1)"
    )

    def make(self, image_shape: Sequence[int]) -> MaskedTrigger:
        return tdc_trigger(
            self.trigger_type,
            image_shape,
            self.seed,
            min_side=self.min_side,
            max_side=self.max_side,
            alpha=self.alpha,
        )
