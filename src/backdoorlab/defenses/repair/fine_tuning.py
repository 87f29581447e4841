"""Fine-tuning defense (Liu, Dolan-Gavitt, Garg 2018, Section 4; docs/methods.md §7): keep training the model on
clean data, starting from its current weights, so that the backdoor's weights are overwritten.

Defaults: SGD, lr 0.01, momentum 0.9, cosine schedule, batch 64, 10 epochs on the defender's clean validation
split. The paper fine-tunes "with normal SGD" for a few epochs and does not publish the rate or the epochs
(docs/methods.md §7, open item); lr 0.01 with SGD and cosine decay is BackdoorBench's fine-pruning setting
(BackdoorBench uses batch 256; with a few hundred validation images we keep the toolkit's batch 64). The
learning rate decides the outcome (docs/methods.md §7, issue 4: SGD 0.05 removed a BadNets backdoor on MNIST where
Adam 1e-3 did not), so sweep it. These defaults were measured on MNIST-5k with ``badnet_cnn`` only; a guard
(:mod:`.accuracy_guard`, ``max_accuracy_drop``) retries at lr/10, then keeps the input model, when clean accuracy
on the defender's images falls more than that bound (it never fires with the defaults on MNIST-5k).
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
from pydantic import ConfigDict, Field
from torch import nn

from ...data import Split
from ...errors import ConfigError
from ...models import TrainingConfig, train_model
from ..base import DEFENSES, Repair
from .accuracy_guard import AccuracyGuard, guarded_training

_TRAINING = {name: field.description for name, field in TrainingConfig.model_fields.items()}


class FineTuningSettings(AccuracyGuard):
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

    def training_config(self, lr_scale: float = 1.0) -> TrainingConfig:
        return TrainingConfig(**self.model_dump(include=set(TrainingConfig.model_fields))).model_copy(
            update={"lr": self.lr * lr_scale}
        )

    def fine_tune(
        self, model: nn.Module, clean: Split, *, seed: int, device: str | torch.device, progress: bool | None
    ) -> nn.Module:
        """Train ``model`` in place on ``clean`` (under the guard); returns it on the CPU in eval mode."""
        result = self.guarded_fine_tune(model, clean, seed=seed, device=device, progress=progress)[0]
        if result is not model:  # the guard kept a retry or the input weights: copy them into ``model``
            model.load_state_dict(result.state_dict())
        return model.cpu().eval()

    def guarded_fine_tune(
        self, model: nn.Module, clean: Split, *, seed: int, device: str | torch.device, progress: bool | None
    ) -> tuple[nn.Module, dict[str, float]]:
        """Fine-tune ``model`` on ``clean`` under the guard (:func:`.accuracy_guard.guarded_training`): (the model,
        on the CPU in eval mode, and the guard's figures). ``model`` itself is trained by the first try;
        the model returned is another one when the guard retried or reverted."""
        if len(clean) == 0:
            raise ConfigError("fine-tuning needs clean data; the split given is empty")
        start = copy.deepcopy(model)

        def train(lr_scale: float) -> nn.Module:
            net = model if lr_scale == 1.0 else copy.deepcopy(start)
            config = self.training_config(lr_scale)
            return train_model(
                net, clean.x, clean.y, config, seed=seed, device=device, progress=progress, description="fine-tuning"
            )

        return guarded_training(train, start, clean, self.max_accuracy_drop, device=device)


@DEFENSES.register("fine_tuning")
class FineTuning(FineTuningSettings, Repair):
    """Fine-tune a copy of the model on clean data (the validation split, plus ``train_fraction`` of train)."""

    name: ClassVar[str] = "fine_tuning"

    def repair(self, model, clean, *, seed=0, device="auto", progress=None) -> nn.Module:
        repaired, self._guard = self.guarded_fine_tune(
            copy.deepcopy(model), clean, seed=seed, device=device, progress=progress
        )
        return repaired
