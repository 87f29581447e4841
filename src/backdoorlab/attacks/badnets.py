"""BadNets (Gu, Dolan-Gavitt, Garg 2017): stamp a patch trigger on a fraction of the training set and relabel it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..data import Dataset, Split
from ..errors import ConfigError
from ..triggers import TRIGGERS, MaskedTrigger
from .base import ATTACKS, PoisonedSet, PoisoningAttack, TargetMode, TargetRule, choose_poison_indices, poison_split


@ATTACKS.register("badnets")
class BadNets(PoisoningAttack):
    """BadNets data poisoning.

    Parameters (defaults follow BackdoorBench's reference setting: all-to-one, target 0, 10%, 3x3 white square
    at the bottom-right; methods.md section 2):

    - ``trigger``: ``square`` (size x size patch), ``pixel`` (the paper's single-pixel backdoor) or
      ``pattern`` (the paper's small pattern of bright pixels, a 3x3 glyph).
    - ``size`` (default 3), ``color`` (0..1, one value or one per channel, default 1 = white),
      ``position`` (a corner name or [row, col]; default bottom-right) and ``margin`` (default 1 pixel).
    - ``poison_rate`` in (0, 1]: the fraction of the training set that is poisoned (default 0.1).
      Poisoned samples are drawn among the inputs whose label differs from their target.
    - ``target`` (default 0) and ``mode``: ``all_to_one`` (every triggered input -> target) or ``all_to_all``
      (y -> (y + 1) mod K).
    - ``poisoning``: ``replace`` (default; the poisoned copies replace the clean originals, as BackdoorBench
      and most PyTorch toolkits do) or ``add`` (the paper's convention: poisoned copies are added, the clean
      originals stay, so the training set grows by poison_rate).
    """

    name: ClassVar[str] = "badnets"

    trigger: Literal["square", "pixel", "pattern"] = "square"
    size: int = Field(3, ge=1)
    color: float | list[float] = 1.0
    position: str | tuple[int, int] = "bottom-right"
    margin: int = Field(1, ge=0)
    poison_rate: float = Field(0.1, gt=0, le=1)
    target: int = Field(0, ge=0)
    mode: TargetMode = "all_to_one"
    poisoning: Literal["replace", "add"] = "replace"

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
