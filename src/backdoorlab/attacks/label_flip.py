"""Label-flip data poisoning: the non-backdoor comparison of the source material (no trigger).

A fraction of the training labels is changed and a model trained on the result; the attack is measured by the
drop in clean accuracy it causes, so its Backdoor has ``trigger=None`` and ``target_rule=None``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..data import Dataset, Split
from ..errors import ConfigError
from ..utils.seeding import make_generator
from .base import ATTACKS, Attack, Backdoor, PoisonedSet, choose_poison_indices, poison_split


@ATTACKS.register("label_flip")
class LabelFlip(Attack):
    """Flip the labels of a fraction of the training set.

    The flipped rows are drawn with the run's seed; ``poisoned_indices`` lists them.
    """

    name: ClassVar[str] = "label_flip"

    flip_rate: float = Field(0.1, gt=0, le=1, description="fraction of the training set whose label changes")
    mode: Literal["random", "to_target"] = Field(
        "random",
        description="random (each flipped label becomes one of the other K - 1 classes, uniformly) or to_target "
        "(inputs of the other classes are relabelled target)",
    )
    target: int = Field(0, ge=0, description="the label flipped rows receive in mode to_target")

    def check(self, dataset: Dataset) -> None:
        if self.mode == "to_target" and self.target >= dataset.num_classes:
            raise ConfigError(
                f"label_flip target {self.target} is outside the classes 0..{dataset.num_classes - 1} of {dataset.name}"
            )

    def flip(self, train: Split, num_classes: int, seed: int) -> PoisonedSet:
        """``train`` with flipped labels (images unchanged) and the flipped rows."""
        eligible = train.y != self.target if self.mode == "to_target" else torch.ones(len(train), dtype=torch.bool)
        count = min(round(self.flip_rate * len(train)), int(eligible.sum()))
        if count < 1:
            raise ConfigError(f"flip_rate {self.flip_rate} flips no label of {len(train)}")
        index = choose_poison_indices(eligible, count, seed)
        if self.mode == "to_target":
            labels = torch.full((count,), self.target)
        else:
            shift = torch.randint(1, num_classes, (count,), generator=make_generator(seed + 1))
            labels = (train.y[index] + shift) % num_classes
        return poison_split(train, index, None, labels, add=False)

    def run(
        self, dataset, architecture, training, *, seed=0, device="auto", progress=None, clean_model=None
    ) -> Backdoor:
        self.check(dataset)
        flipped = self.flip(dataset.train, dataset.num_classes, seed)
        info = {
            "flipped": len(flipped.poisoned_indices),
            "flipped_fraction": len(flipped.poisoned_indices) / len(dataset.train),
        }
        return self.train_poisoned(
            flipped, dataset, architecture, training, None, None, seed=seed, device=device, progress=progress, info=info
        )
