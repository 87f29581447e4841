"""The study contract: a paper reproduction on top of the methods, run by the grid like attacks and defenses.

A study is not a method: it is one paper's experiment (Feature Squeezing's table against adversarial examples,
Fine-Pruning's Table 1), built from the registered methods. Like the evaluator in ``experiments`` it may see both
sides: the model and, on a backdoored model, the attacker's :class:`~backdoorlab.attacks.Backdoor`.

A study is a pydantic model (its parameters, validated) registered by name in :data:`STUDIES`. ``runs_on`` says
which models of each (dataset, model, seed) its cells run on: ``clean`` (the clean model), ``backdoored`` (each
attacked model); an empty ``runs_on`` makes a *view*: no cells of its own, its figures are the run's other rows
(the report lays them out). ``check_run`` says, before anything runs, whether the run holds what the study needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..attacks import Backdoor
from ..data import Dataset
from ..registry import Registry

StudyModels = Literal["clean", "backdoored"]


@dataclass
class StudyContext:
    """What a study cell gets beside the model: the dataset (all splits), the seed, a device, progress on/off."""

    dataset: Dataset
    seed: int = 0
    device: torch.device | str = "cpu"
    progress: bool | None = None


@dataclass
class StudyOutcome:
    """Figures measured by one study cell (metric -> value), and artifacts for the report."""

    metrics: dict[str, float]
    artifacts: dict[str, Any] = field(default_factory=dict)


class Study(BaseModel):
    """Base of every study. ``run`` measures the study on one model: the clean model (``backdoor`` None) or a
    backdoored one, as ``runs_on`` asks."""

    model_config = ConfigDict(extra="forbid")
    name: ClassVar[str] = "study"
    runs_on: ClassVar[tuple[StudyModels, ...]] = ("clean",)

    def check_run(self, attacks: Sequence[tuple[str, str]], defenses: Sequence[tuple[str, str]]) -> None:
        """Raise ValueError when a run with these (label, registered name) attacks and defenses cannot hold the
        study. By default any run can."""

    def run(self, model: nn.Module, backdoor: Backdoor | None, ctx: StudyContext) -> StudyOutcome:
        raise NotImplementedError(f"the study {self.name!r} has no cells of its own")


STUDIES: Registry[type[Study]] = Registry("study")
