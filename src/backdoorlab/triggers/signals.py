"""Triggers that change every pixel by a rule rather than a stamp: SIG's sinusoid (Barni et al. 2019), BPP's
colour-depth squeezing (Wang et al. 2022), and additive patterns such as the label-consistent attack's
reduced-amplitude checkerboard (Turner et al. 2019)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from .base import Trigger, register_trigger_type


def sinusoid(width: int, delta: float, frequency: float) -> torch.Tensor:
    """SIG's horizontal signal (W,): ``v(j) = delta * sin(2 pi j f / m)`` with m = ``width`` columns."""
    return delta * torch.sin(2 * math.pi * torch.arange(width, dtype=torch.float32) * frequency / width)


@register_trigger_type
@dataclass(eq=False)
class AdditiveTrigger(Trigger):
    """``x' = clip(x + pattern, 0, 1)``: a signed pattern (C or 1, H, W) added to every input.

    SIG's sinusoid (:func:`sinusoid_trigger`) and the label-consistent checkerboard (:func:`corner_checkerboard`).
    """

    pattern: torch.Tensor
    kind: str = "additive"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pattern.ndim != 3:
            raise ConfigError(f"additive pattern must be (C, H, W), got {tuple(self.pattern.shape)}")
        self.pattern = self.pattern.float()

    @property
    def mask(self) -> torch.Tensor:
        return (self.pattern != 0).any(dim=0, keepdim=True).float()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-2:] != self.pattern.shape[-2:]:
            raise ConfigError(
                f"trigger made for {tuple(self.pattern.shape[-2:])} images cannot be applied to shape {tuple(x.shape)}"
            )
        return (x + self.pattern.to(x.device, x.dtype)).clamp(0, 1)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}

    def to_state(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "pattern": self.pattern, "kind": self.kind, "params": self.params}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AdditiveTrigger:
        return cls(state["pattern"], kind=state["kind"], params=dict(state["params"]))


def sinusoid_trigger(image_shape, delta: float, frequency: float) -> AdditiveTrigger:
    """SIG's trigger for (C, H, W) images: :func:`sinusoid` added to every row and channel."""
    c, h, w = (int(v) for v in image_shape)
    pattern = sinusoid(w, delta, frequency).expand(c, h, w).clone()
    return AdditiveTrigger(pattern, kind="sinusoid", params={"delta": delta, "frequency": frequency})


CHECKERBOARD = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])


def corner_checkerboard(image_shape, amplitude: float, margin: int = 0) -> AdditiveTrigger:
    """Turner et al.'s trigger: the 3x3 checkerboard (+/- ``amplitude``) in each of the four corners, mirrored so
    that the four are symmetric; at amplitude 1 the cells are pure white and black."""
    c, h, w = (int(v) for v in image_shape)
    if h < 6 + 2 * margin or w < 6 + 2 * margin:
        raise ConfigError(f"the four-corner checkerboard needs images of at least {6 + 2 * margin} pixels a side")
    pattern = torch.zeros(c, h, w)
    board = amplitude * CHECKERBOARD
    for top in (margin, h - 3 - margin):
        for left in (margin, w - 3 - margin):
            pattern[:, top : top + 3, left : left + 3] = board
    return AdditiveTrigger(pattern, kind="checkerboard", params={"amplitude": amplitude, "margin": margin})


def squeeze(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Colour-depth squeezing: each value of ``x`` in [0, 1] rounded to the nearest of ``levels`` levels."""
    return torch.round(x * (levels - 1)) / (levels - 1)


def dither(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Floyd-Steinberg dithering of ``x`` (N, C, H, W) to ``levels`` levels per channel (raster order)."""
    out = x.clone()
    n, c, h, w = out.shape
    for i in range(h):
        for j in range(w):
            old = out[:, :, i, j].clamp(0, 1)
            new = squeeze(old, levels)
            out[:, :, i, j] = new
            err = old - new
            if j + 1 < w:
                out[:, :, i, j + 1] += err * 7 / 16
            if i + 1 < h:
                if j > 0:
                    out[:, :, i + 1, j - 1] += err * 3 / 16
                out[:, :, i + 1, j] += err * 5 / 16
                if j + 1 < w:
                    out[:, :, i + 1, j + 1] += err * 1 / 16
    return out.clamp(0, 1)


@register_trigger_type
@dataclass(eq=False)
class QuantizeTrigger(Trigger):
    """BPP's trigger: the image with ``levels`` colour levels per channel (256 -> 8 by default), optionally
    Floyd-Steinberg dithered."""

    levels: int = 8
    dithering: bool = False
    kind: str = "quantize"

    def __post_init__(self) -> None:
        if not 2 <= self.levels <= 256:
            raise ConfigError(f"colour levels must be 2..256, got {self.levels}")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ConfigError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
        return dither(x, self.levels) if self.dithering else squeeze(x, self.levels)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "levels": self.levels, "dithering": self.dithering}

    def to_state(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "levels": self.levels, "dithering": self.dithering}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> QuantizeTrigger:
        return cls(int(state["levels"]), bool(state["dithering"]))
