"""TeCo (Liu, Wang, Zhu, Zhu, Tian, Wang, CVPR 2023, arXiv 2302.14624): test-time corruption robustness consistency.

A clean image resists image corruptions about equally well whatever the corruption; a triggered image loses its
(target) label at very different severities for different corruptions, because some corruptions destroy the
trigger early and others leave it intact. TeCo reads only the predicted labels and needs no clean data except
to set a threshold.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, field_validator

from ...data import Split
from ...models import predict_logits
from ...utils.seeding import make_generator
from ..base import DEFENSES
from .calibrated import CalibratedDetector
from .corruptions import CORRUPTIONS, corrupt


@DEFENSES.register("teco")
class TeCo(CalibratedDetector):
    """TeCo input detector. ``score(x)`` is the standard deviation of the flip severities: higher is more suspicious.

    For each corruption c, each severity s = 1..5 is applied to the *original* image (never on top of a lower
    severity; BackdoorBench's ``teco.py`` compounds them in place), and f_c(x) is the first s whose label differs
    from the model's label of x, ``max_severity + 1`` (6) if none does. score(x) = std over c of f_c(x)
    (population std, as NumPy's). The direction (inconsistent = suspicious) is the paper's and fixed.

    The paper ranks inputs by this score (AUROC) and sets no threshold; ours flags the fraction ``fpr`` of the
    clean fit images (EvadeML's empirical rule), a choice on clean data only. Defaults: the 15 ImageNet-C
    corruptions at severities 1-5 (75 forward passes per input), as the paper. The corruptions are our torch
    implementations with CIFAR-10-C's constants (see :mod:`.corruptions` for the departures); the maintained
    ``imagecorruptions`` package resolves offline but pulls ``opencv-python`` beside our
    ``opencv-python-headless`` (two packages owning ``cv2``), so we do not depend on it. The random corruptions
    draw from a generator seeded by ``fit``'s seed afresh on every call: same seed and inputs, same scores.
    """

    name: ClassVar[str] = "teco"

    corruptions: list[str] = Field(
        default_factory=lambda: list(CORRUPTIONS),
        min_length=2,
        description=f"the corruptions whose flip severities are compared, each one of: {', '.join(CORRUPTIONS)}",
    )
    max_severity: int = Field(5, ge=1, le=5, description="severities 1..max_severity are tried for each corruption")
    fpr: float = Field(0.05, ge=0, lt=1, description="target false-positive rate on the clean fit images")
    batch_size: int = Field(512, ge=1, description="images corrupted and sent through the model at once")

    @field_validator("corruptions")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruption(s) {unknown}; choose from {', '.join(CORRUPTIONS)}")
        return names

    def fit(self, model, clean: Split, *, seed: int = 0, device="auto", num_classes: int | None = None) -> TeCo:
        """Score the clean images ``clean`` (N, C, H, W in [0, 1]) and set the threshold at ``fpr``."""
        self._bind(model, clean, seed=seed, device=device, num_classes=num_classes)
        self._calibrate(self._score(clean.x), self.fpr, "empirical")
        return self

    def flip_severities(self, x: torch.Tensor) -> torch.Tensor:
        """First flipping severity (N, len(corruptions)) per corruption, ``max_severity + 1`` when none flips."""
        self._require_fit(calibrated=False)
        gen = make_generator(self._seed)
        out = []
        for start in range(0, len(x), self.batch_size):
            out.append(self._flips(x[start : start + self.batch_size], gen))
        return torch.cat(out) if out else torch.empty(0, len(self.corruptions))

    def _flips(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        kw = {"batch_size": self.batch_size, "device": self._device}
        label = predict_logits(self._model, x, **kw).argmax(dim=1)
        never = self.max_severity + 1
        flips = torch.full((len(x), len(self.corruptions)), float(never))
        for j, name in enumerate(self.corruptions):
            for s in range(1, self.max_severity + 1):
                pred = predict_logits(self._model, corrupt(x, name, s, gen), **kw).argmax(dim=1)
                first = (pred != label) & (flips[:, j] == never)
                flips[first, j] = float(s)
        return flips

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self.flip_severities(x).std(dim=1, unbiased=False)
