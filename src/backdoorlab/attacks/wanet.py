"""WaNet (Nguyen & Tran, ICLR 2021, "WaNet - Imperceptible Warping-based Backdoor Attack"): every poisoned
input is warped by one fixed, smooth random field; noise-mode inputs get the field plus random jitter and keep
their labels, so the network learns that exact warp."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..data import Dataset
from ..triggers import WarpTrigger, warping_field
from ..utils.seeding import make_generator
from .base import ATTACKS
from .per_batch import BatchPoisoningAttack, Cross


@ATTACKS.register("wanet")
class WaNet(BatchPoisoningAttack):
    """Warping-based backdoor, dirty label, poisoned per batch (the paper's training).

    Defaults are the paper's and BackdoorBench's: control grid k = 4, strength s = 0.5, grid_rescale 1,
    poison rate 0.1 of each batch, cross ratio 2 (noise-mode inputs are twice the poisoned ones), all-to-one or
    all-to-all (the paper defines both). Departures: the warping field is drawn from ``field_seed`` (a parameter,
    like Blend's noise) rather than the global seed; the network is trained with the toolkit's recipe (its
    optimizer, schedule and random-shift augmentation, applied before the warp) instead of the paper's
    SGD / MultiStep LR with random crops and rotations.
    """

    name: ClassVar[str] = "wanet"

    k: int = Field(4, ge=2, le=64, description="side of the random control grid of the warping field")
    strength: float = Field(0.5, gt=0, le=10, description="warping strength s (the field is scaled by s / H)")
    grid_rescale: float = Field(1.0, gt=0, le=2, description="factor applied to the warped grid (1: none)")
    cross_ratio: float = Field(
        2.0, ge=0, le=10, description="noise-mode inputs per poisoned input in each batch (0: no noise mode)"
    )
    field_seed: int = Field(0, ge=0, description="seed of the random warping field")

    def make_trigger(self, dataset: Dataset) -> WarpTrigger:
        _, h, w = dataset.input_shape
        grid = warping_field(h, w, self.k, self.strength, self.grid_rescale, make_generator(self.field_seed))
        params = {"k": self.k, "strength": self.strength, "grid_rescale": self.grid_rescale}
        return WarpTrigger(grid, params=params)

    def cross_ratio_(self) -> float:
        return self.cross_ratio

    def cross(self, trigger: WarpTrigger) -> Cross | None:
        return lambda x, _batch, gen: trigger.noisy(x, gen)
