"""Images that triggers are made of (a blend pattern, a pool of reflections), fitted to a dataset's shape."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp", ".npy")


def fit_images(x: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """Images (N, C', H', W') in [0, 1] -> (N, C, H, W) of ``image_shape``.

    Resized with bilinear interpolation (antialiased when shrinking); grey images are repeated over 3 channels,
    colour images become grey as the mean of their channels, a 4th (alpha) channel is dropped.
    """
    if x.ndim != 4:
        raise ConfigError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    c, h, w = (int(v) for v in image_shape)
    x = x.float()
    if x.shape[1] == 4:
        x = x[:, :3]
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise ConfigError(f"cannot turn {x.shape[1]}-channel images into {c}-channel ones")
    if tuple(x.shape[-2:]) != (h, w):
        shrink = x.shape[-2] > h or x.shape[-1] > w
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    return x.clamp(0, 1).contiguous()


def read_image_file(path: str | Path, image_shape: Sequence[int]) -> torch.Tensor:
    """One image file (PNG/JPEG/... via Pillow, or a ``.npy`` HW/HWC array) as (C, H, W) of ``image_shape``.

    Integer pixels are read as 0..255; float ``.npy`` arrays must already be in [0, 1].
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{p}: unsupported image type; use one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(p) as img:
                arr = np.asarray(img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB"))
    except (OSError, ValueError) as err:
        raise DataError(f"{p}: unreadable image ({err})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise DataError(f"{p}: expected an HW or HWC image with 1, 3 or 4 channels, got shape {arr.shape}")
    scale = 255.0 if np.issubdtype(arr.dtype, np.integer) else 1.0
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)) / scale
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError(f"{p}: pixel values must be 0..255 (integers) or 0..1 (floats)")
    return fit_images(x[None], image_shape)[0]
