"""BadNets-style triggers: single pixel, pixel pattern, square patch; and the image-with-alpha blend."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError, check_range
from .base import MaskedTrigger

Position = str | Sequence[int]
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")

# The BadNets "pattern backdoor": a small pattern of bright pixels (a 3x3 checkerboard-like glyph).
BADNETS_PATTERN = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])


def _top_left(position: Position, size: tuple[int, int], image_hw: tuple[int, int], margin: int) -> tuple[int, int]:
    """Top-left (row, col) of a ``size`` patch at a named corner or an explicit (row, col)."""
    (ph, pw), (h, w) = size, image_hw
    if isinstance(position, str):
        if position not in CORNERS:
            raise ConfigError(f"unknown trigger position {position!r}; use one of {', '.join(CORNERS)} or [row, col]")
        row = h - ph - margin if position.startswith("bottom") else margin
        col = w - pw - margin if position.endswith("right") else margin
    else:
        if len(position) != 2:
            raise ConfigError(f"trigger position must be a corner name or [row, col], got {position!r}")
        row, col = int(position[0]), int(position[1])
    if row < 0 or col < 0 or row + ph > h or col + pw > w:
        raise ConfigError(f"a {ph}x{pw} trigger at ({row}, {col}) does not fit in a {h}x{w} image")
    return row, col


def _color_tensor(color: float | Sequence[float], channels: int) -> torch.Tensor:
    values = [float(color)] * channels if isinstance(color, (int, float)) else [float(c) for c in color]
    if len(values) not in (1, channels):
        raise ConfigError(f"trigger colour needs 1 or {channels} values, got {len(values)}")
    for v in values:
        check_range("trigger colour", v, 0.0, 1.0)
    return torch.tensor(values * channels if len(values) == 1 else values).view(-1, 1, 1)


def stamp_trigger(
    glyph: torch.Tensor,
    image_shape: Sequence[int],
    *,
    position: Position = "bottom-right",
    margin: int = 1,
    color: float | Sequence[float] = 1.0,
    kind: str = "patch",
    params: dict | None = None,
) -> MaskedTrigger:
    """A patch trigger from a 2-D ``glyph`` (h, w) of 0/1 weights, painted in ``color`` at ``position``.

    Pixels where the glyph is 0 are left to the image; where it is 1 they are set to ``color``.
    """
    c, h, w = (int(v) for v in image_shape)
    if glyph.ndim != 2:
        raise ConfigError(f"trigger glyph must be 2-D, got shape {tuple(glyph.shape)}")
    if glyph.shape[0] > h or glyph.shape[1] > w:
        raise ConfigError(f"a {glyph.shape[0]}x{glyph.shape[1]} trigger is larger than the {h}x{w} image")
    row, col = _top_left(position, tuple(glyph.shape), (h, w), margin)
    mask = torch.zeros(1, h, w)
    mask[0, row : row + glyph.shape[0], col : col + glyph.shape[1]] = glyph.float()
    pattern = _color_tensor(color, c).expand(c, h, w).clone()
    return MaskedTrigger(mask, pattern, kind=kind, params=params or {})


def square_trigger(
    image_shape: Sequence[int],
    size: int = 3,
    *,
    color: float | Sequence[float] = 1.0,
    position: Position = "bottom-right",
    margin: int = 1,
) -> MaskedTrigger:
    """A ``size`` x ``size`` solid square (default 3x3 white, bottom-right, 1 pixel from the border)."""
    if size < 1:
        raise ConfigError(f"trigger size must be >= 1, got {size}")
    params = {"size": size, "color": color, "position": position, "margin": margin}
    return stamp_trigger(
        torch.ones(size, size), image_shape, position=position, margin=margin, color=color, kind="square", params=params
    )


def pixel_trigger(
    image_shape: Sequence[int],
    *,
    color: float | Sequence[float] = 1.0,
    position: Position = "bottom-right",
    margin: int = 1,
) -> MaskedTrigger:
    """The BadNets single-pixel backdoor: one bright pixel near the bottom-right corner."""
    params = {"color": color, "position": position, "margin": margin}
    return stamp_trigger(
        torch.ones(1, 1), image_shape, position=position, margin=margin, color=color, kind="pixel", params=params
    )


def pattern_trigger(
    image_shape: Sequence[int],
    *,
    glyph: torch.Tensor | None = None,
    color: float | Sequence[float] = 1.0,
    position: Position = "bottom-right",
    margin: int = 1,
) -> MaskedTrigger:
    """The BadNets pattern backdoor: a small pattern of bright pixels (default the 3x3 ``BADNETS_PATTERN``)."""
    glyph = BADNETS_PATTERN if glyph is None else torch.as_tensor(glyph, dtype=torch.float32)
    params = {"glyph": glyph.tolist(), "color": color, "position": position, "margin": margin}
    return stamp_trigger(
        glyph, image_shape, position=position, margin=margin, color=color, kind="pattern", params=params
    )


def blend_trigger(image: torch.Tensor, alpha: float = 0.2, *, kind: str = "blend") -> MaskedTrigger:
    """``x' = (1 - alpha) * x + alpha * image`` over the whole picture (Chen et al. 2017's blended injection).

    Args:
        image: (C, H, W) or (1, H, W) in [0, 1], the pattern to blend in.
        alpha: blend weight in (0, 1]; Chen et al. use 0.2.
    """
    check_range("blend alpha", alpha, 0.0, 1.0, low_open=True)
    if image.ndim != 3:
        raise ConfigError(f"blend image must be (C, H, W), got shape {tuple(image.shape)}")
    mask = torch.full((1, *image.shape[-2:]), float(alpha))
    return MaskedTrigger(mask, image.float(), kind=kind, params={"alpha": alpha})
