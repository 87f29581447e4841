"""Refool's reflection trigger (Liu, Ma, Bailey, Lu, ECCV 2020; docs/methods.md section 4).

A reflection image R is added to the picture T as through a window, x' = T + R (x) k, in linear light
(pixels raised to the power gamma = 2.2, the result brought back with 1/gamma and clipped to [0, 1]):

- **type I, same depth** (``same_depth``): k = a scalar, x' = alpha_t T + (1 - alpha_t) R;
- **type II, out of focus** (``out_of_focus``): k = a Gaussian blur of sigma ~ U(1, 5) (kernel size
  2 ceil(2 sigma) + 1, reflect-101 border); the blurred R is lowered per channel where T + R saturates (by the
  mean excess times att ~ 1.08 + U(0, 0.1)) and faded by a Gaussian vignette (3 sigma over the long side)
  times (1 - alpha_t / 2);
- **type III, ghost** (``ghost``): two copies of R offset by delta ~ U{3..8} pixels on each axis, weighted
  g and 1 - g with g = |b - U(0.15, 0.5)|, b ~ {0, 1}, cropped by delta and resized back; then as type I.

``mixed`` (the default) is what the reference code generates: a ghost with probability ``ghost_rate`` (0.49),
else an out-of-focus reflection (type I appears only as a mode name there). The background weight is
alpha_t = 1 - U(0.05, 0.45). All of these are the reference code's defaults.

Departures, said once: we blend at the dataset's own resolution, while the reference code first resizes both
images to 560 pixels on the long side, so sigma and delta (in pixels) weigh relatively more on 28-32 pixel
images; the vignette spans the long side (560 pixels in the reference). The reference's pair filtering (SSIM
between 0.7 and 0.85 and a brightness check) is not applied.

Every image draws its reflection and its parameters from one generator seeded with ``seed``, a row of draws
per image, so the trigger is a pure function of (its parameters, the batch), and ``apply(x)[:k]`` equals
``apply(x[:k])`` up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.nn import functional as F

from ..errors import ConfigError, check_range
from ..utils.seeding import make_generator
from .base import Trigger, register_trigger_type

ReflectionModel = Literal["mixed", "same_depth", "out_of_focus", "ghost"]
REFLECTION_MODELS = ("mixed", "same_depth", "out_of_focus", "ghost")
REFERENCE_WEIGHT = (0.05, 0.45)  # 1 - alpha_t, alpha_t = 1 - U(0.05, 0.45) in the reference code's blend_images
_DRAWS = 10  # random numbers drawn per image


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (N, C, H, W) with its own ``sigma`` (N,) > 0.

    The kernel of image n has radius ceil(2 sigma_n) (size 2 ceil(2 sigma) + 1, as OpenCV's GaussianBlur is
    called in the reference), capped at the image size minus one; borders are reflected (reflect-101).
    """
    n, c, h, w = x.shape
    radius = min(int(math.ceil(2 * float(sigma.max()))), h - 1, w - 1)
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    own = torch.ceil(2 * sigma).clamp(max=radius)  # (N,)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    kernel = kernel * (taps[None].abs() <= own[:, None])
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, S)
    flat = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    return flat.reshape(n, c, h, w)


def ghost_copies(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The ghost of each image: ``weight`` x (the window starting at ``offset``) + (1 - weight) x (the window
    starting at 0), both windows (H - dy, W - dx) resized back to (H, W) with bilinear interpolation.

    Args:
        x: (N, C, H, W); offset: (N, 2) integer (dy, dx) >= 0, smaller than (H, W); weight: (N,) in [0, 1].
    """
    n, _, h, w = x.shape
    size = torch.tensor([h, w], dtype=x.dtype)
    span = (size - offset.to(x.dtype)) / size  # window size as a fraction of the image, (N, 2)

    def window(start: torch.Tensor) -> torch.Tensor:
        centre = -1 + (2 * start.to(x.dtype) + (size - offset.to(x.dtype))) / size  # (N, 2) in [-1, 1]
        theta = torch.zeros(n, 2, 3, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = span[:, 1], centre[:, 1]
        theta[:, 1, 1], theta[:, 1, 2] = span[:, 0], centre[:, 0]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    g = weight.to(x.dtype).view(n, 1, 1, 1)
    return g * window(offset) + (1 - g) * window(torch.zeros_like(offset))


def vignette(h: int, w: int, shift: torch.Tensor) -> torch.Tensor:
    """Gaussian attenuation masks (N, 1, H, W), max 1: a square kernel over the long side L = max(H, W) spanning
    +-3 sigma (the reference's ``gen_kernel(560, 3)``), cropped to (H, W) at ``shift`` (N, 2) in [0, 1] of the
    free room (none for square images)."""
    length = max(h, w)
    step = 7.0 / length
    edges = torch.linspace(-3 - step / 2, 3 + step / 2, length + 1, dtype=torch.float64)
    profile = torch.diff(torch.special.ndtr(edges))
    kernel = torch.sqrt(torch.outer(profile, profile))
    kernel = (kernel / kernel.max()).float()
    room = torch.tensor([length - h, length - w])
    start = torch.floor(shift * (room + 1)).long().clamp(max=room)  # (N, 2)
    rows = start[:, :1] + torch.arange(h)[None]  # (N, H)
    cols = start[:, 1:] + torch.arange(w)[None]  # (N, W)
    return kernel[rows[:, :, None], cols[:, None, :]][:, None]


@register_trigger_type
@dataclass(eq=False)
class ReflectionTrigger(Trigger):
    """Refool's reflection trigger: each image gets a reflection from ``reflections`` by one of the three models.

    Attributes:
        reflections: (M, C, H, W) in [0, 1], the reflection images (Refool's R_adv), already of the images' shape.
        model: ``mixed`` (default; ghost with probability ``ghost_rate``, else out of focus), ``same_depth``
            (type I), ``out_of_focus`` (type II) or ``ghost`` (type III).
        ghost_rate: probability of a ghost in ``mixed`` (default 0.49, the reference code's).
        reflection_weight: range of 1 - alpha_t, the reflection's weight (default (0.05, 0.45)).
        sigma: range of the blur's sigma in pixels (default (1, 5)).
        offset: range of the ghost's offset in pixels on each axis, inclusive (default (3, 8)).
        ghost_weight: range of the ghost copies' weight before the coin flip (default (0.15, 0.5)).
        gamma: the linear-light exponent (default 2.2).
        assign: ``random`` (default: each image draws its reflection) or ``cycle`` (image i gets reflection
            i mod M; used to poison with a chosen sequence of reflections).
        seed: seeds the per-image draws.
    """

    reflections: torch.Tensor
    model: ReflectionModel = "mixed"
    ghost_rate: float = 0.49
    reflection_weight: tuple[float, float] = REFERENCE_WEIGHT
    sigma: tuple[float, float] = (1.0, 5.0)
    offset: tuple[int, int] = (3, 8)
    ghost_weight: tuple[float, float] = (0.15, 0.5)
    gamma: float = 2.2
    assign: Literal["random", "cycle"] = "random"
    seed: int = 0
    kind: str = "reflection"

    def __post_init__(self) -> None:
        r = self.reflections
        if r.ndim != 4 or len(r) == 0:
            raise ConfigError(f"reflections must be a non-empty (M, C, H, W) batch, got shape {tuple(r.shape)}")
        if float(r.min()) < 0 or float(r.max()) > 1:
            raise ConfigError("reflection images must be in [0, 1]")
        self.reflections = r.float().contiguous()
        if self.model not in REFLECTION_MODELS:
            raise ConfigError(f"unknown reflection model {self.model!r}; use one of {', '.join(REFLECTION_MODELS)}")
        if self.assign not in ("random", "cycle"):
            raise ConfigError(f"unknown reflection assignment {self.assign!r}; use random or cycle")
        check_range("ghost_rate", self.ghost_rate, 0.0, 1.0)
        check_range("gamma", self.gamma, 0.0, 10.0, low_open=True)
        self.reflection_weight = _range("reflection_weight", self.reflection_weight, 0.0, 1.0)
        self.sigma = _range("sigma", self.sigma, 1e-3, 100.0)
        self.ghost_weight = _range("ghost_weight", self.ghost_weight, 0.0, 1.0)
        lo, hi = (int(v) for v in self.offset)
        h, w = self.reflections.shape[-2:]
        if not 1 <= lo <= hi < min(h, w):
            raise ConfigError(
                f"ghost offset range must satisfy 1 <= low <= high < {min(h, w)} (the image size), got "
                f"{self.offset}; pass a smaller offset, e.g. [1, {max(1, min(h, w) // 3)}]"
            )
        self.offset = (lo, hi)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.reflections.shape[1:]):
            raise ConfigError(
                f"reflections of shape {tuple(self.reflections.shape[1:])} cannot be applied to shape {tuple(x.shape)}"
            )
        n = len(x)
        u = torch.rand(n, _DRAWS, generator=make_generator(self.seed))
        m = len(self.reflections)
        pick = torch.arange(n) % m if self.assign == "cycle" else (u[:, 0] * m).long().clamp(max=m - 1)
        background = x.float().cpu().clamp(0, 1) ** self.gamma
        reflection = self.reflections[pick] ** self.gamma
        alpha_t = 1 - _between(u[:, 1], self.reflection_weight)
        kind = self._kinds(u[:, 2])
        out = torch.empty_like(background)
        for code, blend in enumerate((self._same_depth, self._out_of_focus, self._ghost)):
            rows = (kind == code).nonzero().flatten()
            if len(rows):
                out[rows] = blend(background[rows], reflection[rows], alpha_t[rows], u[rows])
        return (out.clamp(0, 1) ** (1 / self.gamma)).to(x.device, x.dtype)

    def _kinds(self, u: torch.Tensor) -> torch.Tensor:
        """0 same depth, 1 out of focus, 2 ghost, per image."""
        if self.model == "mixed":
            return torch.where(u < self.ghost_rate, 2, 1)
        return torch.full_like(u, ("same_depth", "out_of_focus", "ghost").index(self.model), dtype=torch.long)

    @staticmethod
    def _same_depth(t: torch.Tensor, r: torch.Tensor, alpha_t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a = alpha_t.view(-1, 1, 1, 1)
        return a * t + (1 - a) * r

    def _ghost(self, t: torch.Tensor, r: torch.Tensor, alpha_t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        lo, hi = self.offset
        offset = (lo + torch.floor(u[:, 3:5] * (hi - lo + 1))).long().clamp(max=hi)
        weight = (torch.round(u[:, 5]) - _between(u[:, 6], self.ghost_weight)).abs()
        return self._same_depth(t, ghost_copies(r, offset, weight), alpha_t, u)

    def _out_of_focus(self, t: torch.Tensor, r: torch.Tensor, alpha_t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        blurred = gaussian_blur(r, _between(u[:, 7], self.sigma))
        total = blurred + t
        over = total > 1
        mean_over = (total * over).sum(dim=(2, 3)) / (over.sum(dim=(2, 3)) + 1e-6)  # (N, C)
        att = 1.08 + u[:, 8:9] / 10
        blurred = (blurred - ((mean_over.clamp(min=1) - 1) * att)[:, :, None, None]).clamp(0, 1)
        fade = vignette(t.shape[-2], t.shape[-1], u[:, 9:10].expand(-1, 2)) * (1 - alpha_t / 2).view(-1, 1, 1, 1)
        return fade * blurred + alpha_t.view(-1, 1, 1, 1) * t

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "reflections": len(self.reflections),
            "ghost_rate": self.ghost_rate,
            "reflection_weight": list(self.reflection_weight),
            "sigma": list(self.sigma),
            "offset": list(self.offset),
            "seed": self.seed,
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "reflections": self.reflections,
            "model": self.model,
            "ghost_rate": self.ghost_rate,
            "reflection_weight": list(self.reflection_weight),
            "sigma": list(self.sigma),
            "offset": list(self.offset),
            "ghost_weight": list(self.ghost_weight),
            "gamma": self.gamma,
            "assign": self.assign,
            "seed": self.seed,
            "kind": self.kind,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReflectionTrigger:
        ranges = {k: tuple(state[k]) for k in ("reflection_weight", "sigma", "offset", "ghost_weight")}
        return cls(
            state["reflections"],
            state["model"],
            float(state["ghost_rate"]),
            gamma=float(state["gamma"]),
            assign=state["assign"],
            seed=int(state["seed"]),
            kind=state["kind"],
            **ranges,
        )


def _range(name: str, value: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    check_range(f"{name} low", lo, low, high)
    check_range(f"{name} high", hi, low, high)
    if lo > hi:
        raise ConfigError(f"{name} range must be (low, high) with low <= high, got {value}")
    return lo, hi


def _between(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return bounds[0] + u * (bounds[1] - bounds[0])
