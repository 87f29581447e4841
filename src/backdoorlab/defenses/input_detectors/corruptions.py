"""The 15 common corruptions of ImageNet-C (Hendrycks and Dietterich, ICLR 2019), batched in torch, for TeCo.

Each ``corrupt(x, name, severity, gen)`` maps a batch (N, C, H, W) in [0, 1] to its corrupted copy in [0, 1],
one severity (1-5) at a time, always from the original images. The severity constants are those of the CIFAR-10-C
generator (``make_cifar_c.py``), meant for 32 px images; spatial ones in pixels scale with the image size.

Our implementations, written from the published formulas (OpenCV only for JPEG). Departures from the reference
code, which needs Wand/ImageMagick and frost photographs we do not ship:

- ``motion_blur``: a one-sided line kernel with Gaussian weights exp(-i^2 / 2 sigma^2), i < radius, at a random
  angle in [-45, 45] degrees (ImageMagick's motion blur, re-implemented with bilinear shifts);
- ``glass_blur``: each pass moves every pixel to a random neighbour within ``max_delta`` at once (a gather), not
  the reference's sequential swaps;
- ``fog``: fractal value noise (octaves of bilinearly upsampled uniform noise, amplitude divided by
  ``wibble_decay`` per octave) in place of the diamond-square plasma fractal;
- ``frost``: no frost photographs: a procedural frost layer (fractal noise with a steep decay, sharpened by
  squaring) blended as the reference blends its photographs;
- ``snow``: the reference's snow layer and blending, with our motion blur;
- grey images: ``brightness`` and ``snow`` use the grey value for HSV value and luminance.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)

_ZOOMS = [np.arange(1, 1 + top, 0.01) for top in (0.06, 0.11, 0.16, 0.21, 0.26)]
SEVERITY = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
    "zoom_blur": _ZOOMS,
    "snow": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of ``x`` with ``kernel`` (kh, kw), reflect padding (OpenCV's default border)."""
    kh, kw = kernel.shape
    c = x.shape[1]
    pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    mode = "reflect" if min(x.shape[-2:]) > max(kh, kw) // 2 else "replicate"
    weight = kernel.to(x)[None, None].expand(c, 1, kh, kw)
    return F.conv2d(F.pad(x, pad, mode=mode), weight, groups=c)


def _gaussian_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma)) if radius is None else radius
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    g = _gaussian_kernel(sigma)
    return _depthwise(_depthwise(x, g[None, :]), g[:, None])


def _sample(x: torch.Tensor, grid: torch.Tensor, padding: str = "reflection") -> torch.Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _affine(x: torch.Tensor, theta: torch.Tensor, padding: str = "reflection") -> torch.Tensor:
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return _sample(x, grid, padding)


def _shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Each image moved by (dx, dy) (N,) pixels, edge pixels repeated."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2], theta[:, 1, 2] = -2 * dx / w, -2 * dy / h
    return _affine(x, theta, "border")


def _motion(x: torch.Tensor, radius: int, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    i = torch.arange(radius, dtype=torch.float32)
    w = torch.exp(-(i**2) / (2 * sigma**2))
    w = w[w >= 1e-4 * w[0]]  # taps too light to matter are skipped
    w = w / w.sum()
    a = torch.deg2rad(angle_deg)
    out = torch.zeros_like(x)
    for k in range(len(w)):
        out += w[k] * _shift(x, k * torch.cos(a), k * torch.sin(a))
    return out


def _zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """The centre 1/z of each image, enlarged back to full size (the reference's clipped_zoom)."""
    theta = torch.tensor([[1 / z, 0.0, 0.0], [0.0, 1 / z, 0.0]]).expand(len(x), 2, 3)
    return _affine(x, theta, "border")


def _fractal(n: int, h: int, w: int, decay: float, gen: torch.Generator) -> torch.Tensor:
    """Fractal value noise (n, 1, h, w), each map scaled to [0, 1]."""
    size = 2 ** math.ceil(math.log2(max(h, w, 2)))
    out, amp, res = torch.zeros(n, 1, size, size), 1.0, 2
    while res <= size:
        noise = torch.rand(n, 1, res + 1, res + 1, generator=gen) * 2 - 1
        out += amp * F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=True)
        amp /= decay
        res *= 2
    out = out[..., :h, :w]
    low = out.amin(dim=(2, 3), keepdim=True)
    return (out - low) / (out.amax(dim=(2, 3), keepdim=True) - low).clamp_min(1e-8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:
        return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    return x


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    imgs = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for img in imgs:
        img = img[..., ::-1] if img.shape[-1] == 3 else img[..., 0]  # OpenCV expects BGR
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        out.append(dec[..., ::-1].copy() if dec.ndim == 3 else dec[..., None])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def _glass(x: torch.Tensor, sigma: float, delta: int, passes: int, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    x = gaussian_blur(x, sigma)
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    for _ in range(passes):
        dy, dx = torch.randint(-delta, delta + 1, (2, n, h, w), generator=gen)
        r, q = (rows + dy).clamp(0, h - 1), (cols + dx).clamp(0, w - 1)
        flat = (r * w + q).view(n, 1, h * w).expand(n, c, h * w)
        x = x.flatten(2).gather(2, flat).view(n, c, h, w)
    return gaussian_blur(x, sigma)


def _elastic(x: torch.Tensor, alpha: float, sigma: float, affine: float, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    size = max(h, w) / 32 * 32  # constants are fractions of the 32 px image side
    alpha, sigma, affine = alpha * size, sigma * size, affine * size
    cx, cy, sq = w / 2, h / 2, min(h, w) / 3
    src = torch.tensor([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]])
    dst = src + (torch.rand(n, 3, 2, generator=gen) * 2 - 1) * affine
    norm = lambda p: torch.stack([2 * p[..., 0] / w - 1, 2 * p[..., 1] / h - 1], -1)  # noqa: E731
    ones = torch.ones(n, 3, 1)
    # theta maps output (dst) coordinates to input (src) coordinates: solve [dst 1] theta^T = src
    theta = torch.linalg.solve(torch.cat([norm(dst), ones], -1), norm(src).expand(n, 3, 2)).transpose(1, 2)
    x = _affine(x, theta)
    if alpha == 0 or sigma == 0:
        return x
    field = gaussian_blur(torch.rand(n, 2, h, w, generator=gen) * 2 - 1, sigma) * alpha
    base = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 1, h, w], align_corners=False)
    grid = base + torch.stack([field[:, 0] * 2 / w, field[:, 1] * 2 / h], -1)
    return _sample(x, grid)


def corrupt(x: torch.Tensor, name: str, severity: int, gen: torch.Generator) -> torch.Tensor:
    """``x`` (N, C, H, W) in [0, 1] under corruption ``name`` at ``severity`` (1-5), clipped to [0, 1]."""
    c = SEVERITY[name][severity - 1]
    n, ch, h, w = x.shape
    if name == "gaussian_noise":
        out = x + torch.randn(x.shape, generator=gen) * c
    elif name == "shot_noise":
        out = torch.poisson(x * c, generator=gen) / c
    elif name == "impulse_noise":
        u = torch.rand(x.shape, generator=gen)
        out = torch.where(u < c / 2, 1.0, torch.where(u < c, 0.0, x))
    elif name == "defocus_blur":
        r = math.ceil(c[0]) + 1
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= c[0] ** 2).float()
        g = _gaussian_kernel(c[1], 1)
        disk = F.conv2d((disk / disk.sum())[None, None], (g[:, None] * g[None, :])[None, None], padding=1)[0, 0]
        out = _depthwise(x, disk)
    elif name == "glass_blur":
        out = _glass(x, c[0], c[1], c[2], gen)
    elif name == "motion_blur":
        out = _motion(x, c[0], c[1], torch.rand(n, generator=gen) * 90 - 45)
    elif name == "zoom_blur":
        out = (x + sum(_zoom(x, float(z)) for z in c)) / (len(c) + 1)
    elif name == "snow":
        snow = torch.randn(n, 1, h, w, generator=gen) * c[1] + c[0]
        snow = _zoom(snow, c[2])
        snow = torch.where(snow < c[3], 0.0, snow)
        snow = _motion(snow, c[4], c[5], torch.rand(n, generator=gen) * 90 - 135).clamp(0, 1)
        out = c[6] * x + (1 - c[6]) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
        out = out + snow + snow.flip(2, 3)
    elif name == "frost":
        frost = _fractal(n, h, w, 1.2, gen) ** 2
        out = c[0] * x + c[1] * frost
    elif name == "fog":
        top = x.amax(dim=(1, 2, 3), keepdim=True)
        out = (x + c[0] * _fractal(n, h, w, c[1], gen)) * top / (top + c[0])
    elif name == "brightness":
        v = x.amax(dim=1, keepdim=True)
        v2 = (v + c).clamp(max=1.0)
        out = torch.where(v > 0, x * v2 / v.clamp_min(1e-8), v2.expand_as(x))
    elif name == "contrast":
        mean = x.mean(dim=(2, 3), keepdim=True)
        out = (x - mean) * c + mean
    elif name == "elastic_transform":
        out = _elastic(x, *c, gen)
    elif name == "pixelate":
        small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
        out = F.interpolate(small, size=(h, w), mode="nearest")
    elif name == "jpeg_compression":
        out = _jpeg(x, c)
    else:
        raise KeyError(f"unknown corruption {name!r}; one of {', '.join(CORRUPTIONS)}")
    return out.clamp(0.0, 1.0)
