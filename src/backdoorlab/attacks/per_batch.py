"""Attacks that poison each training batch as it is drawn (WaNet, BPP): the attacker controls training, so the
poisoned rows are not fixed in the data but drawn anew in every batch (``train_model``'s ``batch_hook``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import Field

from ..data import Dataset
from ..triggers import Trigger
from .base import MODE, TARGET, Attack, Backdoor, PoisonedSet, TargetMode, TargetRule, dataset_target_rule

Cross = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class BatchPoisoning:
    """The per-batch hook: in each (shuffled) batch of B rows, the first ``round(rate * B)`` get ``trigger`` and
    their targets under ``rule``; the next ``round(cross_ratio * rate * B)`` are replaced by ``cross(x, batch,
    gen)`` and keep their labels (WaNet's noise mode, BPP's negative samples); the rest stay clean."""

    trigger: Trigger
    rule: TargetRule
    rate: float
    cross_ratio: float = 0.0
    cross: Cross | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(x)
        bd = round(self.rate * n)
        cross = min(round(self.cross_ratio * self.rate * n), n - bd) if self.cross is not None else 0
        if bd == 0 and cross == 0:
            return x, y
        x, y = x.clone(), y.clone()
        if bd:
            x[:bd] = self.trigger(x[:bd])
            y[:bd] = self.rule.targets(y[:bd])
        if cross:
            x[bd : bd + cross] = self.cross(x[bd : bd + cross], x, gen)
        return x, y


class BatchPoisoningAttack(Attack):
    """Base of the per-batch attacks: ``poison_rate`` of every batch, ``target`` / ``mode`` as BadNets'.

    Subclasses give ``make_trigger`` and may give ``cross_ratio`` and ``cross`` (label-keeping samples).
    The Backdoor has no ``poisoned_indices``: no training row is poisoned once and for all.
    """

    poison_rate: float = Field(0.1, gt=0, le=1, description="fraction of every training batch that is poisoned")
    target: int = Field(0, ge=0, description=TARGET)
    mode: TargetMode = Field("all_to_one", description=MODE)

    def make_trigger(self, dataset: Dataset) -> Trigger:
        raise NotImplementedError

    def cross_ratio_(self) -> float:
        return 0.0

    def cross(self, trigger: Trigger) -> Cross | None:
        return None

    def target_rule(self, dataset: Dataset) -> TargetRule:
        return dataset_target_rule(self.name, self.mode, self.target, dataset)

    def check(self, dataset: Dataset) -> None:
        self.make_trigger(dataset)
        self.target_rule(dataset)

    def run(
        self, dataset, architecture, training, *, seed=0, device="auto", progress=None, clean_model=None
    ) -> Backdoor:
        trigger, rule = self.make_trigger(dataset), self.target_rule(dataset)
        hook = BatchPoisoning(trigger, rule, self.poison_rate, self.cross_ratio_(), self.cross(trigger))
        return self.train_per_batch(
            dataset, architecture, training, trigger, rule, hook, {}, seed=seed, device=device, progress=progress
        )

    def train_per_batch(
        self, dataset, architecture, training, trigger, rule, hook, info, *, seed, device, progress
    ) -> Backdoor:
        """Train on the clean training split with ``hook`` poisoning every batch; ``info`` goes into the backdoor's
        info beside ``poisoning: per_batch``. No training index is poisoned as such (``poisoned_indices`` None)."""
        unpoisoned = PoisonedSet(dataset.train, torch.empty(0, dtype=torch.long))
        backdoor = self.train_poisoned(
            unpoisoned,
            dataset,
            architecture,
            training,
            trigger,
            rule,
            seed=seed,
            device=device,
            progress=progress,
            info={"poisoning": "per_batch", **info},
            batch_hook=hook,
        )
        backdoor.poisoned_indices = None
        return backdoor
