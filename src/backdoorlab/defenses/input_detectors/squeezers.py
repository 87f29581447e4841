"""Feature Squeezing's squeezers (Xu, Evans, Qi, NDSS 2018; EvadeML-Zoo ``utils/squeeze.py``), parsed from names.

Every squeezer maps images (N, C, H, W) float in [0, 1] to images of the same shape and range:

- ``bit_depth_B`` (B = 1..8): ``round(x * (2^B - 1)) / (2^B - 1)``, rounding half to even as ``np.rint``;
  1 bit binarizes at 0.5. A batched tensor operation.
- ``median_HxW`` (also ``median_H_W``, EvadeML's spelling): the median over an H x W window, per channel,
  with ``scipy.ndimage.median_filter`` semantics: ``reflect`` padding (the edge pixel repeats), the window
  anchored at offset ``-(H // 2)`` / ``-(W // 2)`` (so 2x2 covers the pixel, the one above, the one to the
  left and the one above-left) and, for an even window, the upper of the two middle values. PyTorch's
  ``torch.median`` and OpenCV's ``medianBlur`` differ on all three counts; we follow scipy as EvadeML does.
  A batched tensor operation.
- ``nlm_S-T-H`` (also ``nlm_S_T_H``): OpenCV's non-local means with search window S, template window T and
  filter strength H (EvadeML's ``non_local_means_color_S_T_H``), on the image rounded to uint8:
  ``fastNlMeansDenoising`` for one channel, ``fastNlMeansDenoisingColored`` (h = hColor = H) for three.
  Departure: we hand OpenCV BGR channel order, as it expects; EvadeML passes RGB. One OpenCV call per image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import ConfigError

FORMS = (
    "bit_depth_B (B = 1..8), median_HxW (e.g. median_2x2) or nlm_S-T-H "
    "(search window, template window, strength; e.g. nlm_11-3-4)"
)


@dataclass(frozen=True)
class BitDepth:
    """Reduce each value to ``bits`` bits (2^bits levels spread over [0, 1])."""

    bits: int

    @property
    def name(self) -> str:
        return f"bit_depth_{self.bits}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels


def reflect_index(size: int, before: int, after: int) -> torch.Tensor:
    """Source indices (before + size + after,) of a 1-D axis of ``size`` padded in scipy's ``reflect`` mode.

    ``d c b a | a b c d | d c b a``: the edge value repeats; a pad wider than the axis keeps reflecting.
    """
    i = torch.arange(-before, size + after) % (2 * size)
    return torch.where(i < size, i, 2 * size - 1 - i)


@dataclass(frozen=True)
class Median:
    """Median filter over a ``height`` x ``width`` window, per channel, with scipy's semantics (see module doc)."""

    height: int
    width: int

    @property
    def name(self) -> str:
        return f"median_{self.height}x{self.width}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.height, self.width
        rows = reflect_index(x.shape[2], kh // 2, kh - 1 - kh // 2)
        cols = reflect_index(x.shape[3], kw // 2, kw - 1 - kw // 2)
        padded = x[:, :, rows][:, :, :, cols]  # (N, C, H + kh - 1, W + kw - 1)
        windows = padded.unfold(2, kh, 1).unfold(3, kw, 1).flatten(-2)  # (N, C, H, W, kh * kw)
        return windows.kthvalue(kh * kw // 2 + 1, dim=-1).values  # scipy's rank size // 2 (0-based)


@dataclass(frozen=True)
class NonLocalMeans:
    """OpenCV non-local means denoising with ``search`` and ``template`` windows and strength ``strength``."""

    search: int
    template: int
    strength: float

    @property
    def name(self) -> str:
        return f"nlm_{self.search}-{self.template}-{self.strength:g}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import cv2

        if x.shape[1] not in (1, 3):
            raise ConfigError(f"{self.name}: non-local means needs 1 or 3 channels, got {x.shape[1]}")
        images = np.rint(x.permute(0, 2, 3, 1).cpu().numpy() * 255).clip(0, 255).astype(np.uint8)  # NHWC
        out = np.empty_like(images)
        h, t, s = float(self.strength), self.template, self.search
        for i, img in enumerate(images):
            if img.shape[2] == 1:
                out[i, :, :, 0] = cv2.fastNlMeansDenoising(
                    img[:, :, 0], None, h=h, templateWindowSize=t, searchWindowSize=s
                )
            else:
                bgr = np.ascontiguousarray(img[:, :, ::-1])
                den = cv2.fastNlMeansDenoisingColored(
                    bgr, None, h=h, hColor=h, templateWindowSize=t, searchWindowSize=s
                )
                out[i] = den[:, :, ::-1]
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.dtype).div(255.0).to(x.device)


Squeezer = BitDepth | Median | NonLocalMeans

_BIT_DEPTH = re.compile(r"bit_depth_(\d+)")
_MEDIAN = re.compile(r"median_(\d+)[x_](\d+)")
_NLM = re.compile(r"nlm_(\d+)([-_])(\d+)\2(\d+(?:\.\d+)?)")


def parse_squeezer(name: str) -> Squeezer:
    """The squeezer called ``name`` (forms in the module doc); :class:`ConfigError` naming the valid forms."""
    text = name.strip() if isinstance(name, str) else ""
    if m := _BIT_DEPTH.fullmatch(text):
        bits = int(m[1])
        if not 1 <= bits <= 8:
            raise ConfigError(f"squeezer {name!r}: bit depth must be 1..8, got {bits}")
        return BitDepth(bits)
    if m := _MEDIAN.fullmatch(text):
        kh, kw = int(m[1]), int(m[2])
        if min(kh, kw) < 1 or max(kh, kw) > 31:
            raise ConfigError(f"squeezer {name!r}: the median window must be 1..31 pixels on each side")
        return Median(kh, kw)
    if m := _NLM.fullmatch(text):
        search, template, strength = int(m[1]), int(m[3]), float(m[4])
        if search % 2 == 0 or template % 2 == 0 or template > search or strength <= 0:
            raise ConfigError(
                f"squeezer {name!r}: non-local means needs odd windows with template <= search "
                "and a strength above 0, e.g. nlm_11-3-4"
            )
        return NonLocalMeans(search, template, strength)
    raise ConfigError(f"unknown squeezer {name!r}; use {FORMS}")
