"""BadNets (Gu, Dolan-Gavitt, Garg 2017): stamp a patch trigger on a fraction of the training set and relabel it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..data import Dataset, Split
from ..errors import ConfigError
from ..triggers import TRIGGERS, MaskedTrigger
from .base import (
    ATTACKS,
    MODE,
    POISON_RATE,
    POISONING,
    TARGET,
    PoisonedSet,
    PoisoningAttack,
    TargetMode,
    TargetRule,
    choose_poison_indices,
    poison_split,
)


@ATTACKS.register("badnets")
class BadNets(PoisoningAttack):
    """BadNets data poisoning.

    Defaults follow BackdoorBench's reference setting (docs/methods.md section 2): all-to-one, target 0, 10% poisoned,
    a 3x3 white square at the bottom-right. ``poisoning`` departs from the paper by default: ``replace`` is what
    BackdoorBench and most PyTorch toolkits do; the paper's convention is ``add``.
    """

    name: ClassVar[str] = "badnets"

    trigger: Literal["square", "pixel", "pattern"] = Field(
        "square",
        description="square (a size x size patch), pixel (the paper's single-pixel backdoor) or pattern (the paper's "
        "3x3 pattern of bright pixels)",
    )
    size: int = Field(3, ge=1, description="side of the square trigger in pixels")
    color: float | list[float] = Field(
        1.0, description="trigger colour in [0, 1]: one value for every channel, or one per channel (1 = white)"
    )
    position: str | tuple[int, int] = Field(
        "bottom-right",
        description="a corner (bottom-right, bottom-left, top-right, top-left) or the [row, col] of the trigger's "
        "top-left pixel",
    )
    margin: int = Field(1, ge=0, description="pixels between the trigger and the image border at a corner")
    poison_rate: float = Field(0.1, gt=0, le=1, description=POISON_RATE)
    target: int = Field(0, ge=0, description=TARGET)
    mode: TargetMode = Field("all_to_one", description=MODE)
    poisoning: Literal["replace", "add"] = Field("replace", description=POISONING)

    def make_trigger(self, dataset: Dataset) -> MaskedTrigger:
        params = {"color": self.color, "position": self.position, "margin": self.margin}
        if self.trigger == "square":
            params["size"] = self.size
        return TRIGGERS.build(self.trigger, params, where=f"{self.name} trigger").make(dataset.input_shape)

    def target_rule(self, dataset: Dataset) -> TargetRule:
        if self.target >= dataset.num_classes:
            raise ConfigError(
                f"badnets target {self.target} is outside the classes 0..{dataset.num_classes - 1} of {dataset.name}"
            )
        return TargetRule(self.mode, dataset.num_classes, self.target)

    def poison(self, train: Split, trigger: MaskedTrigger, rule: TargetRule, seed: int) -> PoisonedSet:
        eligible = rule.eligible(train.y)
        count = min(round(self.poison_rate * len(train)), int(eligible.sum()))
        if count < 1:
            raise ConfigError(f"poison_rate {self.poison_rate} poisons no sample of {len(train)}")
        index = choose_poison_indices(eligible, count, seed)
        return poison_split(train, index, trigger, rule.targets(train.y[index]), add=self.poisoning == "add")
