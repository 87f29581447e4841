"""WaNet's trigger (Nguyen & Tran, ICLR 2021): a fixed, smooth warping of the image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from ..errors import ConfigError
from .base import Trigger, register_trigger_type


def identity_grid(h: int, w: int) -> torch.Tensor:
    """The sampling grid (1, H, W, 2) of ``grid_sample`` that returns the image unchanged (x, y in [-1, 1])."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack([xs, ys], dim=-1)[None]


def warping_field(h: int, w: int, k: int, strength: float, grid_rescale: float, gen: torch.Generator) -> torch.Tensor:
    """WaNet's warped sampling grid (1, H, W, 2): a random k x k flow in [-1, 1], divided by its mean absolute
    value, upsampled bicubically to H x W, scaled by ``strength / H``, added to the identity grid, times
    ``grid_rescale``, clamped to [-1, 1]."""
    if k < 2:
        raise ConfigError(f"WaNet's control grid k must be >= 2, got {k}")
    flow = torch.rand(1, 2, k, k, generator=gen) * 2 - 1
    flow = flow / flow.abs().mean()
    flow = F.interpolate(flow, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    return ((identity_grid(h, w) + strength * flow / h) * grid_rescale).clamp(-1, 1)


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) resampled at ``grid`` (1 or N, H, W, 2), bilinear, as WaNet (align_corners=True)."""
    grid = grid.to(x.device, x.dtype).expand(len(x), -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True).clamp(0, 1)


@register_trigger_type
@dataclass(eq=False)
class WarpTrigger(Trigger):
    """``x' = grid_sample(x, grid)``: every input warped by the same field ``grid`` (1, H, W, 2).

    ``noisy(x, gen)`` gives WaNet's noise-mode inputs: the field plus a random per-input perturbation in
    [-1/H, 1/H], which keep their true labels during training.
    """

    grid: torch.Tensor
    kind: str = "warp"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.grid.ndim != 4 or self.grid.shape[0] != 1 or self.grid.shape[-1] != 2:
            raise ConfigError(f"warping grid must be (1, H, W, 2), got {tuple(self.grid.shape)}")
        self.grid = self.grid.float()

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != tuple(self.grid.shape[1:3]):
            raise ConfigError(
                f"warp made for {tuple(self.grid.shape[1:3])} images cannot be applied to shape {tuple(x.shape)}"
            )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return warp(x, self.grid)

    def noisy(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """WaNet's noise mode: each input warped by the field plus its own random offsets (``cross`` samples)."""
        self._check(x)
        h = x.shape[-2]
        offsets = (torch.rand(len(x), *self.grid.shape[1:], generator=gen) * 2 - 1) / h
        return warp(x, (self.grid + offsets).clamp(-1, 1))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}

    def to_state(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "grid": self.grid, "kind": self.kind, "params": self.params}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WarpTrigger:
        return cls(state["grid"], kind=state["kind"], params=dict(state["params"]))
