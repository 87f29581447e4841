"""Sticker-like patch triggers for photos: a pair of glasses or sunglasses on a face.

The glasses are a 2-D 0/1 glyph stamped with :func:`~backdoorlab.triggers.stamp_trigger` (a
:class:`MaskedTrigger`): two elliptical lenses joined by a bridge, with short temple arms. ``filled=True`` gives
sunglasses (solid lenses, the Fine-Pruning face trigger; docs/methods.md §7), ``filled=False`` only the rims. The
glyph is left-right symmetric, so a face flipped with its glasses keeps them in place.

The yellow square of the BadNets stop-sign experiment needs no glyph: ``square_trigger(shape, 4,
color=(1, 1, 0), position=(row, col))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError
from .base import MaskedTrigger
from .patches import stamp_trigger


def ellipse(height: int, width: int, shrink: float = 0.0) -> torch.Tensor:
    """(height, width) bool: pixel centres inside the ellipse inscribed in the box, shrunk by ``shrink`` pixels."""
    ry, rx = height / 2 - shrink, width / 2 - shrink
    if ry <= 0 or rx <= 0:
        return torch.zeros(height, width, dtype=torch.bool)
    yy = (torch.arange(height) + 0.5 - height / 2)[:, None]
    xx = (torch.arange(width) + 0.5 - width / 2)[None, :]
    return (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0


def glasses_glyph(width: int = 60, lens_height: int = 14, *, thickness: int = 3, filled: bool = True) -> torch.Tensor:
    """(lens_height, width) 0/1 glyph of glasses.

    Two elliptical lenses, ``width // 6`` apart; a bar ``thickness`` rows high at the lenses' upper third forms
    the bridge between them and the temple arms out to the glyph's border. With ``filled=False`` the lenses
    are rims ``thickness`` pixels wide and the bar stops at them.
    """
    if thickness < 1 or lens_height < 2 * thickness or width < 6 * thickness:
        raise ConfigError(
            f"glasses of width {width} and lens height {lens_height} cannot have {thickness}-pixel "
            "rims; use width >= 6 x thickness and lens_height >= 2 x thickness"
        )
    arm = max(1, width // 15)
    bridge = max(thickness, width // 6)
    lens_w = (width - bridge - 2 * arm) // 2
    if lens_w < 2 * thickness:
        raise ConfigError(f"glasses of width {width} leave no room for the lenses")
    outer, inner = ellipse(lens_height, lens_w), ellipse(lens_height, lens_w, shrink=thickness)
    left = arm + (width - 2 * arm - 2 * lens_w - bridge) // 2
    right = left + lens_w + bridge
    glyph = torch.zeros(lens_height, width, dtype=torch.bool)
    top = lens_height // 3 - thickness // 2
    glyph[top : top + thickness, :] = True  # temple arm, bridge and arm: one bar across the glyph ...
    for col in (left, right):
        if filled:
            glyph[:, col : col + lens_w] |= outer
        else:  # ... that stops at the rims
            glyph[:, col : col + lens_w] &= ~inner
            glyph[:, col : col + lens_w] |= outer & ~inner
    glyph |= glyph.flip(1)  # exact left-right symmetry whatever the rounding
    return glyph.float()


def glasses_trigger(
    image_shape: Sequence[int],
    *,
    width: int | None = None,
    lens_height: int | None = None,
    thickness: int = 3,
    filled: bool = True,
    color: float | Sequence[float] = 0.0,
    position: Sequence[int] | None = None,
) -> MaskedTrigger:
    """Glasses (``filled``: sunglasses) of ``color`` (default 0 = black) on images of ``image_shape`` (C, H, W).

    Defaults fit a frontal face filling the frame, as in ORL's 112x92 photos: ``width`` 65% of the image width,
    ``lens_height`` 12.5% of its height, and ``position`` (top-left row, col) centred left-right with the lenses'
    top at 42% of the height, where ORL's eyes are.
    """
    c, h, w = (int(v) for v in image_shape)
    width = width if width is not None else max(6 * thickness, round(0.65 * w))
    lens_height = lens_height if lens_height is not None else max(2 * thickness, round(0.125 * h))
    glyph = glasses_glyph(width, lens_height, thickness=thickness, filled=filled)
    if position is None:
        position = (round(0.42 * h), (w - glyph.shape[1]) // 2)
    params = {
        "width": width,
        "lens_height": lens_height,
        "thickness": thickness,
        "filled": filled,
        "color": color,
        "position": [int(position[0]), int(position[1])],
    }
    kind = "sunglasses" if filled else "glasses"
    return stamp_trigger(glyph, (c, h, w), position=list(position), margin=0, color=color, kind=kind, params=params)
