"""How visible a trigger is: PSNR, SSIM, L-inf and L2 distance between clean inputs and their triggered copies.

Images are (N, C, H, W) in [0, 1]; each figure is the mean over the N pairs. SSIM is scikit-image's
``structural_similarity`` (Gaussian-free 7x7 window, or the largest odd window that fits smaller images, channels
averaged), PSNR uses a data range of 1; identical pairs have an infinite PSNR, reported as 100 dB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .attacks.base import TargetRule
    from .data import Split

PSNR_CAP = 100.0  # dB reported for pairs that do not differ
STEALTH_IMAGES = 500  # eligible test images a trigger's stealth figures are averaged over


def psnr(clean: torch.Tensor, triggered: torch.Tensor) -> torch.Tensor:
    """PSNR (N,) in dB of each pair, data range 1, capped at :data:`PSNR_CAP`."""
    mse = ((clean.float() - triggered.float()) ** 2).flatten(1).mean(dim=1)
    out = 10 * torch.log10(1.0 / mse.clamp_min(1e-30))
    return out.clamp(max=PSNR_CAP)


def ssim(clean: torch.Tensor, triggered: torch.Tensor) -> torch.Tensor:
    """SSIM (N,) of each pair (scikit-image, data range 1, channels averaged)."""
    from skimage.metrics import structural_similarity

    a = clean.float().permute(0, 2, 3, 1).numpy()
    b = triggered.float().permute(0, 2, 3, 1).numpy()
    win = min(7, *a.shape[1:3])
    win -= 1 - win % 2  # odd
    values = [
        structural_similarity(x, y, data_range=1.0, channel_axis=2, win_size=win) for x, y in zip(a, b, strict=True)
    ]
    return torch.tensor(np.asarray(values, dtype=np.float32))


def stealth_metrics(clean: torch.Tensor, triggered: torch.Tensor) -> dict[str, float]:
    """``psnr``, ``ssim``, ``linf`` and ``l2`` (means over the pairs) of ``triggered`` against ``clean``."""
    if clean.shape != triggered.shape or clean.ndim != 4 or len(clean) == 0:
        raise ValueError(
            f"expected two equal non-empty (N, C, H, W) batches, got {tuple(clean.shape)} and {tuple(triggered.shape)}"
        )
    diff = (triggered.float() - clean.float()).flatten(1)
    return {
        "psnr": float(psnr(clean, triggered).mean()),
        "ssim": float(ssim(clean, triggered).mean()),
        "linf": float(diff.abs().amax(dim=1).mean()),
        "l2": float(diff.norm(dim=1).mean()),
    }


def trigger_stealth(
    trigger: Callable[[torch.Tensor], torch.Tensor],
    target_rule: TargetRule,
    test: Split,
    n: int = STEALTH_IMAGES,
) -> dict[str, float]:
    """:func:`stealth_metrics` of ``trigger`` on the first ``n`` (default 500) *eligible* images of ``test``: those
    whose label differs from their target, the images ASR is measured on. Empty when no image is eligible."""
    x = test.x[target_rule.eligible(test.y)][:n]
    return stealth_metrics(x, trigger(x)) if len(x) else {}
