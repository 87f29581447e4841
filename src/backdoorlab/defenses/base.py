"""The defense contract: input detectors, repairs and inspectors. Algorithms only: none of them sees the attack.

Defenses follow scikit-learn's habits: parameters are validated pydantic fields set in the constructor, nothing
learned exists before ``fit`` / ``repair`` / ``inspect``, and thresholds are chosen on clean data only.

What each family receives (the evaluator in :mod:`backdoorlab.experiments.evaluation` hands it over and alone
measures the result against the attack):

- an :class:`InputDetector` gets the model and the defender's clean images (``fit``), then inputs to ``score``;
- a :class:`Repair` gets the model and the defender's clean images (``repair``) and returns a new model;
- an :class:`~.inspection.base.Inspector` gets the model and the defender's clean images (``inspect``) and
  returns a :class:`~.inspection.verdict.Verdict`.

Method-specific figures (pruning curves, calibration figures) come back through hooks that receive labelled
inputs to measure on, never the attack: :meth:`Repair.figures`, :meth:`InputDetector.calibration_metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..data import Split
from ..registry import Registry

DefenseKind = Literal["input_detector", "repair", "inspector", "data_detector", "training_defense"]
Figures = tuple[dict[str, float], dict[str, Any]]


class Defense(BaseModel):
    """Base of every defense: its parameters are validated pydantic fields; ``kind`` names its family."""

    model_config = ConfigDict(extra="forbid")
    name: ClassVar[str] = "defense"
    kind: ClassVar[DefenseKind]

    @property
    def train_fraction_held(self) -> float:
        """Fraction of the clean training split the defender holds besides its clean ``val`` split: the defense's
        ``train_fraction`` parameter where it has one (fine-tuning, fine-pruning), else 0. The evaluator draws that
        many training images by the seed and adds them to the defender's clean data."""
        return float(getattr(self, "train_fraction", 0.0))


DEFENSES: Registry[type[Defense]] = Registry("defense")


class InputDetector(Defense):
    """Screens one input at a time. ``fit(model, clean)`` calibrates; ``score(x)`` (N,) is higher when more
    suspicious; ``predict(x)`` is ``score(x) > threshold_`` (True = flagged as attacked)."""

    kind: ClassVar[DefenseKind] = "input_detector"

    def fit(
        self,
        model: nn.Module,
        clean: Split,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        num_classes: int | None = None,
    ) -> InputDetector:
        """Calibrate on ``clean`` images (N, C, H, W) in [0, 1]; ``num_classes``, when given, is checked against
        the model's outputs. Returns self."""
        raise NotImplementedError

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def threshold_(self) -> float:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) > self.threshold_

    def calibration_metrics(self) -> dict[str, float]:
        """Figures of the calibration itself, stored beside the detection rates (none by default)."""
        return {}


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

    def figures(self, model: nn.Module, probes: Mapping[str, Split], *, device: str | torch.device = "cpu") -> Figures:
        """Rows and artifacts of the last :meth:`repair` beyond the evaluator's CA / ASR (none by default).

        ``model`` is the input model of that repair; ``probes`` labelled inputs to measure on: ``test`` (clean
        inputs, true labels) and, when the model is backdoored, ``triggered`` (inputs and the labels that count
        as a success of the backdoor). The hook measures; it decides nothing.
        """
        return {}, {}
