"""What every attack returns (:class:`Backdoor`), target rules, and the shared poisoning machinery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..data import Dataset, Split
from ..errors import ConfigError
from ..models import TrainingConfig, build_model, train_model
from ..registry import Registry
from ..triggers import Trigger
from ..utils.seeding import make_generator

TargetMode = Literal["all_to_one", "all_to_all"]


@dataclass(frozen=True)
class TargetRule:
    """Which label a triggered input should get.

    ``all_to_one``: every triggered input -> ``target``; inputs of class ``target`` are not eligible.
    ``all_to_all``: class y -> (y + 1) mod K, the BadNets all-to-all attack; every input is eligible.
    """

    mode: TargetMode
    num_classes: int
    target: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("all_to_one", "all_to_all"):
            raise ConfigError(f"unknown target mode {self.mode!r}; use all_to_one or all_to_all")
        if not 0 <= self.target < self.num_classes:
            raise ConfigError(f"target label {self.target} is outside the classes 0..{self.num_classes - 1}")

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """The attacker's label for each true label in ``y`` (N,)."""
        if self.mode == "all_to_all":
            return (y + 1) % self.num_classes
        return torch.full_like(y, self.target)

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        """Bool (N,): inputs whose true label differs from their target (the ones ASR is measured on)."""
        return self.targets(y) != y

    def describe(self) -> str:
        return f"all-to-one -> {self.target}" if self.mode == "all_to_one" else "all-to-all (y+1 mod K)"


@dataclass
class Backdoor:
    """An attack's result: the backdoored model, its trigger, target rule, poisoned training indices, parameters.

    ``trigger`` and ``target_rule`` are None for attacks without a trigger (label-flip poisoning).
    """

    model: nn.Module
    trigger: Trigger | None
    target_rule: TargetRule | None
    attack: str
    params: dict[str, Any]
    architecture: str | None = None
    poisoned_indices: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PoisonedSet:
    """Training data after poisoning: ``split`` to train on, and which rows of it carry the trigger."""

    split: Split
    poisoned_indices: torch.Tensor


ATTACKS: Registry[type[Attack]] = Registry("attack")


class Attack(BaseModel):
    """Base of every attack: parameters are validated pydantic fields; ``run`` returns a :class:`Backdoor`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str] = "attack"

    def check(self, dataset: Dataset) -> None:
        """Raise :class:`ConfigError` when the parameters do not fit ``dataset`` (called before any work)."""

    def run(
        self,
        dataset: Dataset,
        architecture: str,
        training: TrainingConfig,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool | None = None,
    ) -> Backdoor:
        raise NotImplementedError


class PoisoningAttack(Attack):
    """An attack that poisons training data, then trains a fresh model on it.

    Subclasses give ``make_trigger``, ``target_rule`` and ``poison``.
    """

    def make_trigger(self, dataset: Dataset) -> Trigger:
        raise NotImplementedError

    def target_rule(self, dataset: Dataset) -> TargetRule:
        raise NotImplementedError

    def poison(self, train: Split, trigger: Trigger, rule: TargetRule, seed: int) -> PoisonedSet:
        raise NotImplementedError

    def check(self, dataset: Dataset) -> None:
        self.make_trigger(dataset)
        self.target_rule(dataset)

    def run(self, dataset, architecture, training, *, seed=0, device="auto", progress=None) -> Backdoor:
        trigger = self.make_trigger(dataset)
        rule = self.target_rule(dataset)
        poisoned = self.poison(dataset.train, trigger, rule, seed)
        model = build_model(
            architecture, dataset.input_shape, dataset.num_classes, dataset.mean, dataset.std, seed=seed
        )
        train_model(model, poisoned.split.x, poisoned.split.y, training, seed=seed, device=device,
                    progress=progress, description=f"training {self.name}")  # fmt: skip
        return Backdoor(
            model=model, trigger=trigger, target_rule=rule, attack=self.name, params=self.model_dump(),
            architecture=architecture, poisoned_indices=poisoned.poisoned_indices,
        )  # fmt: skip


def choose_poison_indices(eligible: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` distinct indices drawn at random (by ``seed``) among the True entries of ``eligible`` (N,)."""
    candidates = eligible.nonzero().flatten()
    if count > len(candidates):
        raise ConfigError(f"cannot poison {count} samples: only {len(candidates)} are eligible")
    order = torch.randperm(len(candidates), generator=make_generator(seed))
    return candidates[order[:count]].sort().values


def poison_split(
    train: Split, index: torch.Tensor, trigger: Trigger, new_labels: torch.Tensor, *, add: bool
) -> PoisonedSet:
    """Stamp ``trigger`` on ``train[index]`` and give them ``new_labels``.

    ``add=False`` (replace) modifies those rows in place of the clean ones; ``add=True`` appends the poisoned
    copies and keeps the clean originals (the BadNets paper's convention). Returned indices point at the
    poisoned rows of the returned split.
    """
    stamped = trigger(train.x[index])
    if add:
        x = torch.cat([train.x, stamped])
        y = torch.cat([train.y, new_labels])
        rows = torch.arange(len(train), len(train) + len(index))
    else:
        x, y = train.x.clone(), train.y.clone()
        x[index], y[index] = stamped, new_labels
        rows = index
    return PoisonedSet(Split(x, y), rows)
