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

    Parameters:

    - ``image``: path of the pattern (PNG/JPEG/... or a ``.npy`` HW/HWC array), resized to the dataset's
      images; default None: a random-noise pattern, every pixel and channel U(0, 1) (Chen et al.'s noise
      pattern), drawn with ``noise_seed`` (default 0) so that the pattern is part of the attack's parameters.
    - ``alpha`` (default 0.2): the blend weight on the poisoned training images; ``test_alpha`` (default 0.2):
      the weight of the trigger the backdoor is measured with. Chen et al. train with 0.2 and test with 0.2
      (they also report larger test weights).
    - ``poison_rate`` (default 0.1), ``target`` (default 0), ``mode`` (all_to_one / all_to_all) and
      ``poisoning`` (replace / add): as BadNets (:class:`RelabelPoisoningAttack`).

    Blend is the trigger Neural Cleanse is known to miss: it covers the whole image, so no small mask
    reproduces it.
    """

    name: ClassVar[str] = "blend"

    image: str | None = None
    noise_seed: int = Field(0, ge=0)
    alpha: float = Field(0.2, gt=0, le=1)
    test_alpha: float = Field(0.2, gt=0, le=1)

    def pattern(self, dataset: Dataset) -> torch.Tensor:
        """The pattern (C, H, W) in [0, 1] for ``dataset``'s images."""
        if self.image is not None:
            return read_image_file(self.image, dataset.input_shape)
        return torch.rand(*dataset.input_shape, generator=make_generator(self.noise_seed))

    def make_trigger(self, dataset: Dataset) -> MaskedTrigger:
        return blend_trigger(self.pattern(dataset), self.test_alpha)

    def train_trigger(self, trigger: MaskedTrigger) -> MaskedTrigger:
        return blend_trigger(trigger.pattern, self.alpha)
