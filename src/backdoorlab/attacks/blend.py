"""Blend (Chen, Liu, Li, Lu, Song 2017, "Targeted backdoor attacks on deep learning systems using data
poisoning"): a full-image pattern blended into the poisoned images, x' = (1 - alpha) x + alpha pattern."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..data import Dataset
from ..triggers import MaskedTrigger, blend_trigger, read_image_file
from ..utils.seeding import make_generator
from .base import ATTACKS, RelabelPoisoningAttack


@ATTACKS.register("blend")
class Blend(RelabelPoisoningAttack):
    """Blended-injection data poisoning, dirty label.

    The default pattern is Chen et al.'s random noise, drawn from ``noise_seed`` so that it is part of the attack's
    parameters. Chen et al. train and test with alpha 0.2 (they also report larger test weights). The poisoning
    parameters are BadNets' (:class:`RelabelPoisoningAttack`).

    Blend is the trigger Neural Cleanse is known to miss: it covers the whole image, so no small mask
    reproduces it.
    """

    name: ClassVar[str] = "blend"

    image: str | None = Field(
        None,
        description="path of the pattern (PNG/JPEG/... or a .npy HW/HWC array), resized to the dataset's images; "
        "None: random noise, every pixel and channel U(0, 1)",
    )
    noise_seed: int = Field(0, ge=0, description="seed of the random-noise pattern (when image is None)")
    alpha: float = Field(0.2, gt=0, le=1, description="blend weight of the pattern on the poisoned training images")
    test_alpha: float = Field(
        0.2, gt=0, le=1, description="blend weight of the trigger the backdoor is measured with at test time"
    )

    def pattern(self, dataset: Dataset) -> torch.Tensor:
        """The pattern (C, H, W) in [0, 1] for ``dataset``'s images."""
        if self.image is not None:
            return read_image_file(self.image, dataset.input_shape)
        return torch.rand(*dataset.input_shape, generator=make_generator(self.noise_seed))

    def make_trigger(self, dataset: Dataset) -> MaskedTrigger:
        return blend_trigger(self.pattern(dataset), self.test_alpha)

    def train_trigger(self, trigger: MaskedTrigger) -> MaskedTrigger:
        return blend_trigger(trigger.pattern, self.alpha)
