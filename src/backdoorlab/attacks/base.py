"""What every attack returns (:class:`Backdoor`), target rules, and the shared poisoning machinery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..data import Dataset, Split
from ..errors import ConfigError
from ..models import BatchHook, TrainingConfig, train_new_model
from ..registry import Registry
from ..triggers import Trigger
from ..utils.seeding import make_generator

TargetMode = Literal["all_to_one", "all_to_all"]  # what a poisoning attack's ``mode`` parameter offers
RuleMode = Literal["all_to_one", "all_to_all", "per_trigger"]
RULE_MODES = ("all_to_one", "all_to_all", "per_trigger")


@dataclass(frozen=True)
class TargetRule:
    """Which label a triggered input should get.

    ``all_to_one``: every triggered input -> ``target``; inputs of class ``target`` are not eligible.
    ``all_to_all``: class y -> (y + 1) mod K, the BadNets all-to-all attack; every input is eligible.
    ``per_trigger``: an attack with several triggers (TrojanNet: trigger i -> class ``mapping[i]``). The rule
    describes the trigger being measured, whose class is ``target`` (default ``mapping[0]``): ``targets`` and
    ``eligible`` behave as ``all_to_one`` towards it, and :meth:`for_trigger` gives the rule of trigger i.
    ``mapping`` is empty for the two other modes; an empty ``mapping`` in ``per_trigger`` means ``(target,)``.
    """

    mode: RuleMode
    num_classes: int
    target: int = 0
    mapping: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in RULE_MODES:
            raise ConfigError(f"unknown target mode {self.mode!r}; use one of {', '.join(RULE_MODES)}")
        if not 0 <= self.target < self.num_classes:
            raise ConfigError(f"target label {self.target} is outside the classes 0..{self.num_classes - 1}")
        mapping = tuple(int(c) for c in self.mapping)
        if self.mode != "per_trigger" and mapping:
            raise ConfigError(f"a mapping of triggers to classes needs mode per_trigger, not {self.mode}")
        if self.mode == "per_trigger":
            mapping = mapping or (self.target,)
            bad = [c for c in mapping if not 0 <= c < self.num_classes]
            if bad:
                raise ConfigError(f"trigger classes {bad} are outside the classes 0..{self.num_classes - 1}")
            if self.target not in mapping:
                raise ConfigError(f"target {self.target} is not one of the triggers' classes {list(mapping)}")
        object.__setattr__(self, "mapping", mapping)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """The attacker's label for each true label in ``y`` (N,)."""
        if self.mode == "all_to_all":
            return (y + 1) % self.num_classes
        return torch.full_like(y, self.target)

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        """Bool (N,): inputs whose true label differs from their target (the ones ASR is measured on)."""
        return self.targets(y) != y

    @property
    def num_triggers(self) -> int:
        """How many triggers the rule covers: ``len(mapping)`` for ``per_trigger``, else 1."""
        return len(self.mapping) if self.mode == "per_trigger" else 1

    def for_trigger(self, index: int) -> TargetRule:
        """The rule of trigger ``index`` (0 <= index < num_triggers): the same rule, measuring that trigger."""
        if not 0 <= index < self.num_triggers:
            raise ConfigError(f"trigger index {index} is outside 0..{self.num_triggers - 1}")
        if self.mode != "per_trigger":
            return self
        return TargetRule(self.mode, self.num_classes, self.mapping[index], self.mapping)

    def describe(self) -> str:
        if self.mode == "per_trigger":
            return f"per-trigger: trigger i -> class {list(self.mapping)}[i] (measured: -> {self.target})"
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
    uses_clean_model: ClassVar[bool] = False  # True: ``run`` starts from the setting's clean network

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
        clean_model: nn.Module | None = None,
    ) -> Backdoor:
        """Plant the backdoor in an ``architecture`` network for ``dataset``.

        ``clean_model``: for attacks that start from a clean network (:attr:`uses_clean_model`), the network the
        setting's clean recipe gives for ``seed`` (the grid passes the one it has; never changed here). When None
        such an attack trains it itself with :func:`~backdoorlab.models.train_new_model`. Other attacks ignore it.
        """
        raise NotImplementedError

    def make_backdoor(
        self,
        model: nn.Module,
        trigger: Trigger | None,
        rule: TargetRule | None,
        architecture: str,
        *,
        poisoned_indices: torch.Tensor | None = None,
        info: dict[str, Any] | None = None,
    ) -> Backdoor:
        """This attack's :class:`Backdoor` around ``model`` (eval mode), with its parameters."""
        return Backdoor(
            model=model.eval(),
            trigger=trigger,
            target_rule=rule,
            attack=self.name,
            params=self.model_dump(),
            architecture=architecture,
            poisoned_indices=poisoned_indices,
            info=dict(info or {}),
        )

    def train_poisoned(
        self,
        poisoned: PoisonedSet,
        dataset: Dataset,
        architecture: str,
        training: TrainingConfig,
        trigger: Trigger | None,
        rule: TargetRule | None,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool | None = None,
        info: dict[str, Any] | None = None,
        batch_hook: BatchHook | None = None,
    ) -> Backdoor:
        """Train a new ``architecture`` network on ``poisoned.split`` (the one recipe,
        :func:`~backdoorlab.models.train_new_model`, with ``batch_hook`` for attacks that poison per batch) and
        return it as this attack's Backdoor."""
        model = train_new_model(
            architecture,
            dataset,
            training,
            split=poisoned.split,
            seed=seed,
            device=device,
            progress=progress,
            description=f"training {self.name}",
            batch_hook=batch_hook,
        )
        return self.make_backdoor(
            model, trigger, rule, architecture, poisoned_indices=poisoned.poisoned_indices, info=info
        )

    def host_model(
        self,
        clean_model: nn.Module | None,
        dataset: Dataset,
        architecture: str,
        training: TrainingConfig,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool | None = None,
    ) -> nn.Module:
        """``clean_model`` when given, else the clean network of (``architecture``, ``training``, ``seed``)."""
        if clean_model is not None:
            return clean_model
        return train_new_model(
            architecture,
            dataset,
            training,
            seed=seed,
            device=device,
            progress=progress,
            description=f"{self.name}: clean model",
        )


class PoisoningAttack(Attack):
    """An attack that poisons training data, then trains a fresh model on it.

    Subclasses give ``make_trigger`` (the trigger the backdoor is measured with), ``target_rule`` and ``poison``;
    ``train_trigger`` may give a different trigger for poisoning (Blend's training alpha).
    """

    def make_trigger(self, dataset: Dataset) -> Trigger:
        raise NotImplementedError

    def train_trigger(self, trigger: Trigger) -> Trigger:
        """The trigger stamped on the poisoned training images; by default the test-time ``trigger`` itself."""
        return trigger

    def target_rule(self, dataset: Dataset) -> TargetRule:
        raise NotImplementedError

    def poison(self, train: Split, trigger: Trigger, rule: TargetRule, seed: int) -> PoisonedSet:
        raise NotImplementedError

    def check(self, dataset: Dataset) -> None:
        self.make_trigger(dataset)
        self.target_rule(dataset)

    def run(
        self, dataset, architecture, training, *, seed=0, device="auto", progress=None, clean_model=None
    ) -> Backdoor:
        return self.poison_and_train(
            dataset, architecture, training, self.make_trigger(dataset), seed=seed, device=device, progress=progress
        )

    def poison_and_train(
        self,
        dataset: Dataset,
        architecture: str,
        training: TrainingConfig,
        trigger: Trigger,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool | None = None,
        info: dict[str, Any] | None = None,
    ) -> Backdoor:
        """Poison ``dataset.train`` with ``train_trigger(trigger)``, train a fresh model, return the Backdoor."""
        rule = self.target_rule(dataset)
        poisoned = self.poison(dataset.train, self.train_trigger(trigger), rule, seed)
        return self.train_poisoned(
            poisoned,
            dataset,
            architecture,
            training,
            trigger,
            rule,
            seed=seed,
            device=device,
            progress=progress,
            info=info,
        )


# Descriptions of the poisoning parameters that BadNets and every relabelling attack share.
POISON_RATE = (
    "fraction of the training set that is poisoned, drawn among the inputs whose label differs from their target"
)
TARGET = "the attacker's label (all_to_one)"
MODE = "all_to_one (every triggered input -> target) or all_to_all (class y -> (y + 1) mod K)"
POISONING = (
    "replace (the poisoned copies replace their clean originals) or add (the paper's convention: poisoned copies "
    "are appended, the clean originals stay, so the training set grows by poison_rate)"
)


class RelabelPoisoningAttack(PoisoningAttack):
    """Dirty-label poisoning at a rate: the BadNets scheme, shared by every attack that stamps and relabels.

    Defaults are BackdoorBench's reference setting (docs/methods.md section 2).
    """

    poison_rate: float = Field(0.1, gt=0, le=1, description=POISON_RATE)
    target: int = Field(0, ge=0, description=TARGET)
    mode: TargetMode = Field("all_to_one", description=MODE)
    poisoning: Literal["replace", "add"] = Field("replace", description=POISONING)

    def target_rule(self, dataset: Dataset) -> TargetRule:
        return dataset_target_rule(self.name, self.mode, self.target, dataset)

    def poison(self, train: Split, trigger: Trigger, rule: TargetRule, seed: int) -> PoisonedSet:
        eligible = rule.eligible(train.y)
        count = min(round(self.poison_rate * len(train)), int(eligible.sum()))
        return poison_chosen(
            train,
            trigger,
            rule,
            eligible,
            count,
            seed,
            add=self.poisoning == "add",
            what=f"poison_rate {self.poison_rate}",
        )


def dataset_target_rule(attack: str, mode: TargetMode, target: int, dataset: Dataset) -> TargetRule:
    """``TargetRule(mode, K, target)`` for ``dataset``, with a message naming the attack when target >= K."""
    if target >= dataset.num_classes:
        raise ConfigError(
            f"{attack} target {target} is outside the classes 0..{dataset.num_classes - 1} of {dataset.name}"
        )
    return TargetRule(mode, dataset.num_classes, target)


def choose_poison_indices(eligible: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` distinct indices drawn at random (by ``seed``) among the True entries of ``eligible`` (N,)."""
    candidates = eligible.nonzero().flatten()
    if count > len(candidates):
        raise ConfigError(f"cannot poison {count} samples: only {len(candidates)} are eligible")
    order = torch.randperm(len(candidates), generator=make_generator(seed))
    return candidates[order[:count]].sort().values


def poison_chosen(
    train: Split,
    trigger: Trigger | None,
    rule: TargetRule,
    eligible: torch.Tensor,
    count: int,
    seed: int,
    *,
    add: bool = False,
    relabel: bool = True,
    what: str = "the poisoning rate",
) -> PoisonedSet:
    """Poison ``count`` rows drawn (by ``seed``) among ``eligible`` (N,) bool: stamp ``trigger`` and, with
    ``relabel``, give them ``rule``'s targets (else keep their labels: clean-label poisoning).

    ``what`` names the parameter in the error raised when ``count`` < 1.
    """
    if count < 1:
        raise ConfigError(f"{what} poisons no sample of {len(train)}")
    index = choose_poison_indices(eligible, count, seed)
    labels = rule.targets(train.y[index]) if relabel else train.y[index]
    return poison_split(train, index, trigger, labels, add=add)


def poison_split(
    train: Split, index: torch.Tensor, trigger: Trigger | None, new_labels: torch.Tensor, *, add: bool
) -> PoisonedSet:
    """Stamp ``trigger`` on ``train[index]`` and give them ``new_labels``.

    ``add=False`` (replace) modifies those rows in place of the clean ones; ``add=True`` appends the poisoned
    copies and keeps the clean originals (the BadNets paper's convention). Returned indices point at the
    poisoned rows of the returned split. ``trigger=None`` changes labels only (label-flip poisoning).
    """
    stamped = trigger(train.x[index]) if trigger is not None else train.x[index]
    if add:
        x = torch.cat([train.x, stamped])
        y = torch.cat([train.y, new_labels])
        rows = torch.arange(len(train), len(train) + len(index))
    else:
        x, y = train.x.clone(), train.y.clone()
        x[index], y[index] = stamped, new_labels
        rows = index
    return PoisonedSet(Split(x, y), rows)
