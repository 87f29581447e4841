"""The defense contract: input detectors, repairs and inspectors, and how the runner evaluates each.

Defenses follow scikit-learn's habits: parameters are validated pydantic fields set in the constructor,
nothing learned exists before ``fit``/``repair``/``inspect``, and thresholds are chosen on clean data only.
Defenders see the clean held-out ``val`` split; the ``test`` split is used only to measure them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..attacks import Backdoor
from ..data import Dataset, Split
from ..metrics import backdoor_metrics, clean_accuracy, detection_metrics
from ..registry import Registry

DefenseKind = Literal["input_detector", "repair", "inspector"]


@dataclass
class DefenseContext:
    """What a defense gets when the runner evaluates it: the data, a seed, a device, progress on/off.

    ``verdicts``: inspections already run on this same model with this seed, by inspector (see
    ``inspection.base.verdict_key``), shared by the cells of one model so that a repair built on an inspection
    (Neural Cleanse unlearning, DeepInspect patching) reuses the inspector cell's verdict instead of
    recomputing it; None keeps nothing.
    """

    dataset: Dataset
    seed: int = 0
    device: torch.device | str = "cpu"
    progress: bool | None = None
    verdicts: dict[str, Any] | None = None


@dataclass
class DefenseOutcome:
    """Figures measured for one (model, defense) cell, plus artifacts for the report (arrays, curves, verdicts)."""

    metrics: dict[str, float]
    artifacts: dict[str, Any] = field(default_factory=dict)


class Defense(BaseModel):
    """Base of every defense. ``evaluate`` measures it on a model that carries ``backdoor`` (or a clean one)."""

    model_config = ConfigDict(extra="forbid")
    name: ClassVar[str] = "defense"
    kind: ClassVar[DefenseKind]

    def evaluate(self, model: nn.Module, backdoor: Backdoor | None, ctx: DefenseContext) -> DefenseOutcome:
        raise NotImplementedError


DEFENSES: Registry[type[Defense]] = Registry("defense")


def triggered_test_inputs(backdoor: Backdoor, test: Split) -> torch.Tensor:
    """The triggered versions of the eligible test inputs (true label differs from the target)."""
    keep = backdoor.target_rule.eligible(test.y)
    return backdoor.trigger(test.x[keep])


class InputDetector(Defense):
    """Screens one input at a time. ``fit(model, clean)`` calibrates; ``score(x)`` (N,) is higher when more
    suspicious; ``predict(x)`` is ``score(x) > threshold_`` (True = flagged as attacked)."""

    kind: ClassVar[DefenseKind] = "input_detector"

    def fit(
        self, model: nn.Module, clean: Split, *, seed: int = 0, device: str | torch.device = "auto"
    ) -> InputDetector:
        raise NotImplementedError

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def threshold_(self) -> float:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) > self.threshold_

    def evaluate(self, model, backdoor, ctx) -> DefenseOutcome:
        """Fit on ``val``; FPR on the clean test inputs; detection rate and ROC-AUC on triggered test inputs."""
        self.fit(model, ctx.dataset.val, seed=ctx.seed, device=ctx.device)
        clean_scores = self.score(ctx.dataset.test.x)
        attacked = self.score(triggered_test_inputs(backdoor, ctx.dataset.test)) if backdoor is not None else None
        metrics = detection_metrics(clean_scores, attacked, self.threshold_)
        return DefenseOutcome(metrics, {"clean_scores": clean_scores, "attacked_scores": attacked})


class Repair(Defense):
    """Takes a model and clean data, returns a new model; the input model is never changed."""

    kind: ClassVar[DefenseKind] = "repair"

    def repair(
        self,
        model: nn.Module,
        clean: Split,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool | None = None,
    ) -> nn.Module:
        raise NotImplementedError

    def evaluate(self, model, backdoor, ctx) -> DefenseOutcome:
        """Repair a copy with ``val``; clean accuracy, ASR and robust accuracy of the result on ``test``."""
        repaired = self.repair(
            copy.deepcopy(model), ctx.dataset.val, seed=ctx.seed, device=ctx.device, progress=ctx.progress
        )
        test = ctx.dataset.test
        if backdoor is None:
            metrics = {"clean_accuracy": clean_accuracy(repaired, test, device=ctx.device)}
        else:
            metrics = backdoor_metrics(repaired, test, backdoor.trigger, backdoor.target_rule, device=ctx.device)
        return DefenseOutcome(metrics, {"model": repaired})
