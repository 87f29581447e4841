"""SCALE-UP (Guo, Li, Chen, Wang, Wu, ICLR 2023, arXiv 2302.03251): scaled prediction consistency.

Multiplying a triggered image's pixels by a factor n > 1 (then clipping to [0, 1]) keeps its target label far
more often than it keeps a clean image's label: the trigger's features survive amplification. SCALE-UP reads
only the predicted labels (black-box, label-only).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, PrivateAttr

from ...data import Split
from ...models import predict_logits
from ..base import DEFENSES
from .calibrated import CalibratedDetector


def scaled_consistency(
    model, x: torch.Tensor, label: torch.Tensor, scales: list[float], *, batch_size: int, device
) -> torch.Tensor:
    """SPC (N,) in [0, 1]: the fraction of ``scales`` n at which ``clip(n x, 0, 1)`` keeps ``label`` (N,), the
    model's label of ``x``."""
    same = torch.zeros(len(x))
    for n in scales:
        scaled = (x * n).clamp_(0.0, 1.0)
        same += (predict_logits(model, scaled, batch_size=batch_size, device=device).argmax(dim=1) == label).float()
    return same / len(scales)


@DEFENSES.register("scale_up")
class ScaleUp(CalibratedDetector):
    """SCALE-UP input detector. ``score(x)`` is the (normalised) SPC: higher is more suspicious.

    SPC(x) = (1/|S|) sum over n in ``scales`` of 1[f(clip(n x)) = f(x)] (paper, eq. 2), f the model's argmax.
    ``normalize`` is the paper's data-limited setting, where the defender holds a few clean images (the ``fit``
    set): ``global`` z-scores SPC with the mean and std of the clean SPC values (as BackdoorBox's
    ``with_clean_data``); ``per_class`` uses the mean and std of the clean images predicted as the same label
    as x (a class with fewer than 2 clean images, or zero spread, falls back to the global figures); ``none`` is
    the data-free setting. The direction (consistent = suspicious) is the paper's and is fixed.

    The threshold: ``fpr`` None keeps the paper's fixed T = 0.5 on the score (BackdoorBox applies the same T to
    the normalised score); a number sets the threshold to the clean score exceeded by that fraction of the
    ``fit`` images (EvadeML's empirical rule), a choice on clean data only.

    Defaults are the paper's: scales 3, 5, 7, 9, 11 and T = 0.5; ``normalize`` ``global`` is BackdoorBox's
    reading of the data-limited setting. Deterministic: ``seed`` is unused.
    """

    name: ClassVar[str] = "scale_up"

    scales: list[float] = Field(
        default_factory=lambda: [3.0, 5.0, 7.0, 9.0, 11.0],
        min_length=1,
        description="pixel multipliers n; each scaled copy is clip(n x, 0, 1)",
    )
    normalize: Literal["global", "per_class", "none"] = Field(
        "global",
        description="data-limited normalisation of SPC by clean statistics: global (one mean/std), per_class "
        "(mean/std of clean images with the same predicted label), or none (the data-free setting)",
    )
    threshold: float = Field(0.5, description="T, the paper's fixed threshold on the score when fpr is None")
    fpr: float | None = Field(
        None, ge=0, lt=1, description="when set, the threshold flags this fraction of the clean fit images instead of T"
    )
    batch_size: int = Field(512, ge=1, description="images per forward pass")

    _stats: tuple[torch.Tensor, torch.Tensor] | None = PrivateAttr(None)
    _global: tuple[float, float] = PrivateAttr((0.0, 1.0))

    def fit(self, model, clean: Split, *, seed: int = 0, device="auto", num_classes: int | None = None) -> ScaleUp:
        """Compute the clean SPC statistics on ``clean`` (N, C, H, W in [0, 1]) and set the threshold."""
        self._bind(model, clean, seed=seed, device=device, num_classes=num_classes)
        k = predict_logits(model, clean.x[:1], device=self._device).shape[1]
        spc, label = self._spc_and_label(clean.x)
        g_mean, g_std = spc.mean(), spc.std(unbiased=False).clamp_min(1e-6)
        mean, std = torch.full((k,), float(g_mean)), torch.full((k,), float(g_std))
        if self.normalize == "per_class":
            for c in range(k):
                s = spc[label == c]
                if len(s) >= 2 and float(s.std(unbiased=False)) > 0:
                    mean[c], std[c] = s.mean(), s.std(unbiased=False)
        self._stats = (mean, std)
        self._global = (float(g_mean), float(g_std))
        scores = self._normalise(spc, label)
        if self.fpr is None:
            self._clean_scores, self._threshold = scores, float(self.threshold)
        else:
            self._calibrate(scores, self.fpr, "empirical")
        return self

    def _spc_and_label(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        label = predict_logits(self._model, x, batch_size=self.batch_size, device=self._device).argmax(dim=1)
        spc = scaled_consistency(self._model, x, label, self.scales, batch_size=self.batch_size, device=self._device)
        return spc, label

    def _normalise(self, spc: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.normalize == "none":
            return spc
        mean, std = self._stats  # type: ignore[misc]
        return (spc - mean[label]) / std[label]

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self._normalise(*self._spc_and_label(x))

    def calibration_metrics(self) -> dict[str, float]:
        """Mean and std (ML) of the SPC of the clean fit images."""
        return {"clean_spc_mean": self._global[0], "clean_spc_std": self._global[1]}
