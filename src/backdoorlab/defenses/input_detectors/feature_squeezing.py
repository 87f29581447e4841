"""Feature Squeezing (Xu, Evans, Qi, NDSS 2018, arXiv 1704.01155; repo mzweilin/EvadeML-Zoo).

An adversarial input's prediction moves when its features are squeezed (fewer bits, a median filter,
denoising); a legitimate input's barely does. The paper targets adversarial examples; here it is measured on
backdoor triggers too, where no published number exists.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, PrivateAttr, field_validator

from ...data import Split
from ..base import DEFENSES
from .calibrated import CalibratedDetector, check_images
from .outputs import model_log_probabilities
from .squeezers import FORMS as SQUEEZER_FORMS
from .squeezers import Squeezer, parse_squeezer


@DEFENSES.register("feature_squeezing")
class FeatureSqueezing(CalibratedDetector):
    """Feature Squeezing input detector (the joint detector: max over squeezers).

    score(x) = max over squeezers s of || p(x) - p(s(x)) ||_1, in [0, 2], where p is the model's softmax
    (methods.md section 5). ``fit`` scores the clean inputs and sets the threshold so that a fraction
    ``fpr`` of them score above it, by EvadeML's rule (sorted clean scores, index ceil(N (1 - fpr)) - 1;
    see :func:`backdoorlab.metrics.threshold_for_rate`); ``predict`` flags ``score > threshold_``.

    Defaults: the squeezers are the paper's MNIST joint detector; for CIFAR-10 the paper uses
    ``[bit_depth_5, median_2x2, nlm_13-3-2]`` and for ImageNet ``[bit_depth_5, median_2x2, nlm_11-3-4]``. FPR 0.05
    is the paper's.

    Departure: the paper calibrates on the legitimate half of its detection set (training-split images); we
    calibrate on the clean set given to ``fit`` (the dataset's ``val`` split in experiments).
    """

    name: ClassVar[str] = "feature_squeezing"

    squeezers: list[str] = Field(
        default_factory=lambda: ["bit_depth_1", "median_2x2"],
        min_length=1,
        description=f"the squeezers of the joint detector, each one of: {SQUEEZER_FORMS}",
    )
    fpr: float = Field(0.05, ge=0, lt=1, description="target false-positive rate on clean inputs")
    batch_size: int = Field(512, ge=1, description="inputs squeezed and sent through the model at once")

    _squeezers: list[Squeezer] = PrivateAttr(default_factory=list)

    @field_validator("squeezers")
    @classmethod
    def _parsable(cls, names: list[str]) -> list[str]:
        for name in names:
            parse_squeezer(name)  # raises ConfigError (a ValueError) naming the valid forms
        return names

    def model_post_init(self, context: Any) -> None:
        self._squeezers = [parse_squeezer(name) for name in self.squeezers]

    def fit(
        self, model, clean: Split, *, seed: int = 0, device="auto", num_classes: int | None = None
    ) -> FeatureSqueezing:
        """Calibrate on ``clean`` (N, C, H, W in [0, 1]). ``num_classes``, when given, must equal the model's
        number of outputs. ``seed`` is unused: the detector is deterministic."""
        self._bind(model, clean, seed=seed, device=device, num_classes=num_classes)
        self._calibrate(self._score(clean.x), self.fpr, "empirical")
        return self

    def squeezer_scores(self, x: torch.Tensor) -> torch.Tensor:
        """L1 distances (N, S) between the softmax of ``x`` and of each squeezed ``x``, columns in ``squeezers``
        order; each in [0, 2]. ``score(x)`` is their row maximum."""
        self._require_fit()
        check_images(x, "images to score")
        return self._squeezer_scores(x)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self._squeezer_scores(x).max(dim=1).values

    def _squeezer_scores(self, x: torch.Tensor) -> torch.Tensor:
        model = self._require_fit(calibrated=False)
        out = []
        for start in range(0, len(x), self.batch_size):
            xb = x[start : start + self.batch_size]
            versions = torch.cat([xb, *(squeeze(xb) for squeeze in self._squeezers)])  # (m * (1 + S), C, H, W)
            log_p = model_log_probabilities(
                model, versions, self.output, batch_size=self.batch_size, device=self._device
            )
            p = log_p.exp().view(1 + len(self._squeezers), len(xb), -1)  # (1 + S, m, K)
            out.append((p[1:] - p[:1]).abs().sum(dim=2).T)  # (m, S)
        return torch.cat(out) if out else torch.empty(0, len(self._squeezers))
