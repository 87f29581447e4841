"""The deployable form of an input detector: a module that flags, or abstains on, the inputs it rejects."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..errors import ConfigError
from .base import InputDetector


class GuardedModel(nn.Module):
    """``model`` behind a calibrated input ``detector``.

    ``mode="abstain"`` (default): the output (N, K + 1) gets an extra "abstain" column; a rejected input's
    abstain score is +inf and its other scores -inf, so ``argmax`` gives K for it, and an accepted input's
    scores are unchanged with -inf in the abstain column.
    ``mode="flag"``: the output is the model's (N, K), untouched; ``last_flags`` (N,) bool says which inputs the
    detector rejected.
    """

    def __init__(self, model: nn.Module, detector: InputDetector, mode: Literal["abstain", "flag"] = "abstain"):
        super().__init__()
        if mode not in ("abstain", "flag"):
            raise ConfigError(f"guard mode must be abstain or flag, got {mode!r}")
        try:
            float(detector.threshold_)
        except Exception:
            raise ConfigError("the detector is not calibrated: call detector.fit(model, clean_samples) first") from None
        self.model = model
        self.detector = detector
        self.mode = mode
        self.last_flags: torch.Tensor | None = None

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.model(x)
        flags = self.detector.predict(x).to(scores.device).bool()
        self.last_flags = flags
        if self.mode == "flag":
            return scores
        abstain = torch.where(flags, torch.tensor(float("inf")), torch.tensor(float("-inf"))).to(scores)
        kept = scores.masked_fill(flags[:, None], float("-inf"))
        return torch.cat([kept, abstain[:, None]], dim=1)


def guard(model: nn.Module, detector: InputDetector, mode: Literal["abstain", "flag"] = "abstain") -> GuardedModel:
    """Wrap ``model`` with a calibrated ``detector`` (STRIP, Feature Squeezing); see :class:`GuardedModel`."""
    return GuardedModel(model, detector, mode)
