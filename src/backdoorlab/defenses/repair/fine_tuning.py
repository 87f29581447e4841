"""Fine-tuning defense (Liu, Dolan-Gavitt, Garg 2018, Section 4; methods.md §7): keep training the model on
clean data, starting from its current weights, so that the backdoor's weights are overwritten.

Defaults: SGD, lr 0.01, momentum 0.9, cosine schedule, batch 64, 10 epochs on the defender's clean validation
split. The paper fine-tunes "with normal SGD" for a few epochs and does not publish the rate or the epochs
(methods.md §7, open item); lr 0.01 with SGD and cosine decay is BackdoorBench's fine-pruning setting
(BackdoorBench uses batch 256; with a few hundred validation images we keep the toolkit's batch 64). The
learning rate decides the outcome (methods.md §7, issue 4: SGD 0.05 removed a BadNets backdoor on MNIST where
Adam 1e-3 did not), so sweep it.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ...data import Split
from ...errors import ConfigError
from ...models import TrainingConfig, train_model
from ..base import DEFENSES, Repair

_TRAINING = {name: field.description for name, field in TrainingConfig.model_fields.items()}


class FineTuningSettings(BaseModel):
    """Parameters of the fine-tuning step (shared by ``fine_tuning`` and ``fine_pruning``).

    The training parameters have the meaning of :class:`~backdoorlab.models.TrainingConfig` (with SGD at lr 0.01
    for 10 epochs by default). ``repair`` itself uses whatever clean split it is given; ``train_fraction`` concerns
    the runner's evaluation (see :attr:`~backdoorlab.defenses.base.Defense.train_fraction_held`).
    """

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adam", "sgd"] = Field("sgd", description=_TRAINING["optimizer"])
    lr: float = Field(0.01, gt=0, le=10, description=_TRAINING["lr"])
    momentum: float = Field(0.9, ge=0, lt=1, description=_TRAINING["momentum"])
    weight_decay: float = Field(0.0, ge=0, description=_TRAINING["weight_decay"])
    epochs: int = Field(10, ge=1, le=10_000, description=_TRAINING["epochs"])
    batch_size: int = Field(64, ge=1, description=_TRAINING["batch_size"])
    schedule: Literal["none", "cosine", "step"] = Field("cosine", description=_TRAINING["schedule"])
    augment_shift: int = Field(2, ge=0, le=8, description=_TRAINING["augment_shift"])
    train_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="in the runner's evaluation, the defender's clean data is the validation split plus this "
        "fraction of the (clean) training split, drawn by the seed; fine-pruning prunes on it too",
    )

    def training_config(self) -> TrainingConfig:
        return TrainingConfig(**self.model_dump(include=set(TrainingConfig.model_fields)))

    def fine_tune(
        self, model: nn.Module, clean: Split, *, seed: int, device: str | torch.device, progress: bool | None
    ) -> nn.Module:
        """Train ``model`` in place on ``clean``; returns it on the CPU in eval mode."""
        if len(clean) == 0:
            raise ConfigError("fine-tuning needs clean data; the split given is empty")
        return train_model(
            model,
            clean.x,
            clean.y,
            self.training_config(),
            seed=seed,
            device=device,
            progress=progress,
            description="fine-tuning",
        )


@DEFENSES.register("fine_tuning")
class FineTuning(FineTuningSettings, Repair):
    """Fine-tune a copy of the model on clean data (the validation split, plus ``train_fraction`` of train)."""

    name: ClassVar[str] = "fine_tuning"

    def repair(self, model, clean, *, seed=0, device="auto", progress=None) -> nn.Module:
        return self.fine_tune(copy.deepcopy(model), clean, seed=seed, device=device, progress=progress)
