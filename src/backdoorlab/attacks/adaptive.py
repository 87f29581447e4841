"""Adaptive-Blend and Adaptive-Patch (Qi, Xie, Li, Wang, Mittal, ICLR 2023, "Revisiting the Assumption of
Latent Separability for Backdoor Defenses"): partial triggers on the poisons, and cover samples that carry a
partial trigger with their true label, so that poisoned and clean inputs do not separate in latent space."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..data import Dataset, Split
from ..errors import ConfigError
from ..triggers import MaskedTrigger, blend_trigger
from ..utils.seeding import make_generator
from .base import ATTACKS, TARGET, PoisonedSet, PoisoningAttack, TargetRule, dataset_target_rule

ADAPTIVE_POISON = "fraction of the training set relabelled to the target with a partial trigger (Qi et al.: 0.003)"
ADAPTIVE_COVER = "fraction of the training set given a partial trigger and kept at its true label (cover samples)"


def piece_masks(h: int, w: int, pieces: int) -> torch.Tensor:
    """(pieces, H, W) 0/1 masks of a sqrt(pieces) x sqrt(pieces) grid of near-equal rectangles."""
    side = round(pieces**0.5)
    if side * side != pieces:
        raise ConfigError(f"pieces must be a square number (4, 9, 16, ...), got {pieces}")
    rows = torch.arange(h) * side // h
    cols = torch.arange(w) * side // w
    cell = rows[:, None] * side + cols[None, :]
    return (cell[None] == torch.arange(pieces)[:, None, None]).float()


def keep_random(masks: torch.Tensor, count: int, keep: int, gen: torch.Generator) -> torch.Tensor:
    """(count, 1, H, W): for each sample the union of ``keep`` of the (P, H, W) ``masks`` drawn at random."""
    order = torch.rand(count, len(masks), generator=gen).argsort(dim=1)[:, :keep]
    chosen = torch.zeros(count, len(masks)).scatter_(1, order, 1.0)
    return torch.einsum("np,phw->nhw", chosen, masks)[:, None].clamp(max=1)


class AdaptiveAttack(PoisoningAttack):
    """Poisons (relabelled to ``target``) and cover samples (labels kept), each with a random partial trigger;
    the test-time trigger is the full one. All-to-one, as the paper."""

    poison_rate: float = Field(0.003, gt=0, le=1, description=ADAPTIVE_POISON)
    cover_rate: float = Field(0.003, ge=0, le=1, description=ADAPTIVE_COVER)
    target: int = Field(0, ge=0, description=TARGET)

    def target_rule(self, dataset: Dataset) -> TargetRule:
        return dataset_target_rule(self.name, "all_to_one", self.target, dataset)

    def partial_masks(self, trigger: MaskedTrigger, count: int, gen: torch.Generator) -> torch.Tensor:
        """(count, 1, H, W) masks of the training triggers (a random part of ``trigger``'s)."""
        raise NotImplementedError

    def train_pattern(self, trigger: MaskedTrigger) -> torch.Tensor:
        return trigger.pattern

    def poison(self, train: Split, trigger: MaskedTrigger, rule: TargetRule, seed: int) -> PoisonedSet:
        n = len(train)
        poisons, covers = round(self.poison_rate * n), round(self.cover_rate * n)
        if poisons < 1:
            raise ConfigError(f"{self.name} poison_rate {self.poison_rate} poisons no sample of {n}")
        gen = make_generator(seed)
        order = torch.randperm(n, generator=gen)
        eligible = rule.eligible(train.y)[order]
        poison_rows = order[eligible][:poisons]
        cover_rows = order[~torch.isin(order, poison_rows)][:covers]
        if len(poison_rows) < poisons:
            raise ConfigError(f"{self.name}: only {len(poison_rows)} samples are eligible, {poisons} asked")
        rows = torch.cat([poison_rows, cover_rows])
        masks = self.partial_masks(trigger, len(rows), gen)
        x, y = train.x.clone(), train.y.clone()
        pattern = self.train_pattern(trigger)
        x[rows] = ((1 - masks) * x[rows] + masks * pattern).clamp(0, 1)
        y[poison_rows] = rule.targets(y[poison_rows])
        return PoisonedSet(Split(x, y), poison_rows.sort().values)


@ATTACKS.register("adaptive_blend")
class AdaptiveBlend(AdaptiveAttack):
    """Adaptive-Blend: a blend pattern cut into ``pieces`` (a 4 x 4 grid); each poison and cover sample gets a
    random ``1 - mask_rate`` of the pieces at opacity ``alpha``; test inputs get the whole pattern at
    ``test_alpha``.

    Defaults are Qi et al.'s: 16 pieces, mask rate 0.5, alpha 0.15 for poisoning and 0.2 at test, 0.3% poisons and
    0.3% cover samples (the authors' README regime; their code's class default is 1% cover). Departure: the
    pattern is random noise from ``noise_seed`` (as Blend's) instead of the Hello Kitty image, which the toolkit
    does not ship.
    """

    name: ClassVar[str] = "adaptive_blend"

    pieces: int = Field(16, ge=1, le=1024, description="pieces the blend pattern is cut into (a square number)")
    mask_rate: float = Field(0.5, ge=0, lt=1, description="fraction of the pieces masked out on each training sample")
    alpha: float = Field(0.15, gt=0, le=1, description="blend weight of the partial pattern on training samples")
    test_alpha: float = Field(0.2, gt=0, le=1, description="blend weight of the whole pattern at test time")
    noise_seed: int = Field(0, ge=0, description="seed of the random-noise pattern")

    def make_trigger(self, dataset: Dataset) -> MaskedTrigger:
        pattern = torch.rand(*dataset.input_shape, generator=make_generator(self.noise_seed))
        piece_masks(*dataset.input_shape[1:], self.pieces)  # checks pieces
        return blend_trigger(pattern, self.test_alpha, kind="adaptive_blend")

    def partial_masks(self, trigger: MaskedTrigger, count: int, gen: torch.Generator) -> torch.Tensor:
        masks = piece_masks(*trigger.mask.shape[1:], self.pieces)
        keep = max(1, round((1 - self.mask_rate) * self.pieces))
        return self.alpha * keep_random(masks, count, keep, gen)


@ATTACKS.register("adaptive_patch")
class AdaptivePatch(AdaptiveAttack):
    """Adaptive-Patch: ``patches`` small random patches at fixed places; each poison and cover sample gets
    ``train_patches`` of them, chosen at random, at opacity ``alpha``; test inputs get all of them, opaque.

    Defaults follow Qi et al.'s setting: 4 patches, 2 per training sample, 0.3% poisons and 0.6% cover samples
    (twice the poisons, as their adaptive-patch runs). Departures: the paper's four icon triggers (and their
    per-trigger opacities) are replaced by square random-noise patches of ``size_fraction`` of the image side,
    placed in the four quadrants and drawn from ``noise_seed``; one training opacity ``alpha`` for all of them.
    """

    name: ClassVar[str] = "adaptive_patch"

    cover_rate: float = Field(0.006, ge=0, le=1, description=ADAPTIVE_COVER)
    patches: int = Field(4, ge=1, le=4, description="patches of the full trigger (one per quadrant)")
    train_patches: int = Field(2, ge=1, le=4, description="patches stamped on each poison and cover sample")
    size_fraction: float = Field(0.125, gt=0, le=0.5, description="side of each patch, as a fraction of the image")
    alpha: float = Field(0.5, gt=0, le=1, description="opacity of the patches on training samples")
    noise_seed: int = Field(0, ge=0, description="seed of the patches' noise and of their places")

    def patch_masks(self, image_shape) -> torch.Tensor:
        """(patches, H, W) 0/1 masks: patch i at a random place inside quadrant i (by ``noise_seed``)."""
        _, h, w = image_shape
        size = max(1, round(self.size_fraction * h))
        if 2 * size > min(h, w):
            raise ConfigError(f"adaptive_patch: {size}-pixel patches do not fit in the quadrants of {h}x{w} images")
        gen = make_generator(self.noise_seed + 1)
        masks = torch.zeros(self.patches, h, w)
        for i in range(self.patches):
            top0, left0 = (i // 2) * (h // 2), (i % 2) * (w // 2)
            top = top0 + int(torch.randint(h // 2 - size + 1, (1,), generator=gen))
            left = left0 + int(torch.randint(w // 2 - size + 1, (1,), generator=gen))
            masks[i, top : top + size, left : left + size] = 1
        return masks

    def make_trigger(self, dataset: Dataset) -> MaskedTrigger:
        if self.train_patches > self.patches:
            raise ConfigError(f"adaptive_patch: train_patches {self.train_patches} > patches {self.patches}")
        pattern = torch.rand(*dataset.input_shape, generator=make_generator(self.noise_seed))
        mask = self.patch_masks(dataset.input_shape).sum(0, keepdim=True)
        return MaskedTrigger(mask, pattern, kind="adaptive_patch", params={"patches": self.patches})

    def partial_masks(self, trigger: MaskedTrigger, count: int, gen: torch.Generator) -> torch.Tensor:
        masks = self.patch_masks((1, *trigger.mask.shape[1:]))
        return self.alpha * keep_random(masks, count, self.train_patches, gen)
