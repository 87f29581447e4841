"""BPP (Wang, Zhai, Ma, CVPR 2022, "BppAttack: Stealthy and Efficient Trojan Attacks against Deep Neural
Networks via Image Quantization and Contrastive Adversarial Learning"): the trigger is colour-depth squeezing."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..data import Dataset
from ..triggers import QuantizeTrigger
from .base import ATTACKS
from .per_batch import BatchPoisoningAttack, Cross


@ATTACKS.register("bpp")
class BPP(BatchPoisoningAttack):
    """Image-quantization backdoor, dirty label, poisoned per batch.

    Defaults are BackdoorBench's: 8 colour levels (squeeze_num), no dithering, poison rate 0.1 of each batch,
    negative ratio 0.1; all-to-one or all-to-all. Negative samples (labels kept) are BackdoorBench's: a clean
    input plus the quantization residual ``q(x') - x'`` of another input ``x'`` of the batch, which teaches the
    network that a quantization-like perturbation alone is not the trigger. Departure: the paper's negative
    samples are adversarial examples found during training (contrastive adversarial learning); BackdoorBench's
    residual form is used because it needs no inner attack per batch. Trained with the toolkit's recipe.
    """

    name: ClassVar[str] = "bpp"

    levels: int = Field(8, ge=2, le=256, description="colour levels per channel of the trigger (256 -> levels)")
    dithering: bool = Field(False, description="Floyd-Steinberg dithering of the squeezed image (slow on CPU)")
    neg_ratio: float = Field(
        0.1, ge=0, le=1, description="negative samples (quantization residuals, labels kept) per batch row"
    )

    def make_trigger(self, dataset: Dataset) -> QuantizeTrigger:
        return QuantizeTrigger(self.levels, self.dithering)

    def cross_ratio_(self) -> float:
        return self.neg_ratio / self.poison_rate

    def cross(self, trigger: QuantizeTrigger) -> Cross | None:
        if self.neg_ratio == 0:
            return None

        def negatives(x: torch.Tensor, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            donors = batch[torch.randint(len(batch), (len(x),), generator=gen).to(batch.device)]
            return (x + trigger(donors) - donors).clamp(0, 1)

        return negatives
