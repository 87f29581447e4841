"""The Trojan Detection Challenge 2022's attack (mmazeika/tdc-starter-kit ``utils.py``): dirty-label poisoning of
10% of the training set with a trigger drawn from TDC's distribution (:mod:`~backdoorlab.triggers.tdc`): a
random patch (sides 3-10 px, random binary pattern, alpha 1) or a random blended pattern (alpha 0.1)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..data import Dataset
from ..triggers import MaskedTrigger, tdc_trigger
from ..triggers.tdc import TDC_MAX_SIDE, TDC_MIN_SIDE, TriggerType
from .base import ATTACKS, Backdoor, RelabelPoisoningAttack


@ATTACKS.register("tdc")
class TDCAttack(RelabelPoisoningAttack):
    """TDC's data poisoning: BadNets' scheme (:class:`RelabelPoisoningAttack`: all-to-one, 10% poisoned, the
    poisoned copies replace their originals) with a TDC trigger.

    ``trigger_seed`` None draws the trigger from the seed the attack runs with, so every seed of a run (or of a
    population) gets its own trigger, as TDC's populations do. The target is a parameter (default 0); a
    population draws it (:mod:`~backdoorlab.experiments.model_files`). TDC poisons by sampling the indices among
    all training inputs; here, as in BadNets, among the inputs whose label differs from the target.
    """

    name: ClassVar[str] = "tdc"

    trigger_type: TriggerType = Field(
        "patch",
        description="patch (random rectangle, random binary pattern, alpha 1) or blended (full-image "
        "U(0, 1) noise, alpha 0.1)",
    )
    trigger_seed: int | None = Field(
        None, ge=0, description="seed of the trigger's draw; None: the seed the attack runs with"
    )
    min_side: int = Field(TDC_MIN_SIDE, ge=1, description="smallest side of a patch trigger in pixels (TDC: 3)")
    max_side: int = Field(TDC_MAX_SIDE, ge=1, description="largest side of a patch trigger in pixels (TDC: 10)")
    alpha: float | None = Field(
        None, gt=0, le=1, description="blend weight of the trigger; None: TDC's (patch 1.0, blended 0.1)"
    )

    def draw_trigger(self, dataset: Dataset, seed: int = 0) -> MaskedTrigger:
        """The trigger of ``trigger_seed``, or of ``seed`` when it is None."""
        chosen = seed if self.trigger_seed is None else self.trigger_seed
        return tdc_trigger(
            self.trigger_type,
            dataset.input_shape,
            chosen,
            min_side=self.min_side,
            max_side=self.max_side,
            alpha=self.alpha,
        )

    def make_trigger(self, dataset: Dataset) -> MaskedTrigger:
        return self.draw_trigger(dataset)

    def run(
        self, dataset, architecture, training, *, seed=0, device="auto", progress=None, clean_model=None
    ) -> Backdoor:
        trigger = self.draw_trigger(dataset, seed)
        return self.poison_and_train(
            dataset, architecture, training, trigger, seed=seed, device=device, progress=progress
        )
