"""Input-aware dynamic backdoor (Nguyen & Tran, NeurIPS 2020, "Input-Aware Dynamic Backdoor Attack"): a generator
gives every input its own trigger; a trigger moved to another input does nothing (cross-trigger inputs keep their
labels during training), so no single patch exists for a defense to find."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch.nn import functional as F

from ..data import Dataset
from ..triggers.input_aware import InputAwareTrigger, diversity_loss, mask_of
from ..utils.device import resolve_device
from ..utils.progress import track
from ..utils.seeding import make_generator
from .base import ATTACKS, Backdoor, TargetRule
from .per_batch import BatchPoisoningAttack

MASK_MILESTONES = (10, 20)  # the paper's mask schedule: learning rate / 10 after epochs 10 and 20
BETAS = (0.5, 0.9)  # the paper's Adam betas for both networks


def pretrain_mask(
    trigger: InputAwareTrigger,
    x: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    density: float,
    lambda_norm: float,
    lambda_div: float,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> dict[str, float]:
    """Train ``trigger.mask_net`` alone on the attacker's images ``x`` (N, C, H, W) in [0, 1], as the paper's first
    stage: ``lambda_norm * mean(relu(M(x1) - density)) + lambda_div * diversity(x1, x2, M(x1), M(x2))`` over pairs
    of batches drawn in two independent orders (seeded by ``seed``); Adam (betas 0.5, 0.9), learning rate / 10 after
    epochs 10 and 20. Leaves the mask network frozen in eval mode on the CPU. Returns the final batch's
    ``mask_norm_loss``, ``mask_diversity_loss`` and the mean mask ``mask_mean`` over up to 512 images of ``x``."""
    dev = resolve_device(device)
    net = trigger.mask_net.to(dev).train().requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=BETAS)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(MASK_MILESTONES), gamma=0.1)
    gen = make_generator(seed)
    norm = div = torch.zeros(())
    batches = max(1, len(x) // batch_size)  # full batches only: BatchNorm needs pairs of equal size
    for _ in track(range(epochs), "input_aware: mask network", enabled=progress):
        first, second = torch.randperm(len(x), generator=gen), torch.randperm(len(x), generator=gen)
        for b in range(batches):
            rows = slice(b * batch_size, (b + 1) * batch_size)
            x1, x2 = x[first[rows]].to(dev), x[second[rows]].to(dev)
            m1, m2 = mask_of(net, x1), mask_of(net, x2)
            norm = F.relu(m1 - density).mean()
            div = diversity_loss(x1, x2, m1, m2)
            loss = lambda_norm * norm + lambda_div * div
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    net.cpu().eval().requires_grad_(False)
    with torch.no_grad():
        mean = float(mask_of(net, x[:512]).mean())
    return {"mask_norm_loss": norm.item(), "mask_diversity_loss": div.item(), "mask_mean": mean}


@dataclass
class InputAwarePoisoning:
    """The per-batch hook of the joint training: in each batch of B rows, the first ``round(rate * B)`` carry their
    own trigger and get ``rule``'s targets, the next ``round(cross_rate * B)`` carry the trigger of another input of
    the batch (a random cyclic shift) and keep their labels, the rest stay clean.

    The generator learns from the classifier's loss: the stamped rows carry its gradients into the trainer's
    ``loss.backward()``, and the diversity loss of the backdoor rows against the cross rows' donors is
    back-propagated here. Its Adam step for a batch is taken when the next batch arrives (the trainer steps only
    the classifier), so the generator the classifier last trained against is the one returned: the last batch's
    gradients are dropped by :meth:`finish`.
    """

    trigger: InputAwareTrigger
    rule: TargetRule
    rate: float
    cross_rate: float
    lambda_div: float
    lr: float
    optimizer: torch.optim.Optimizer | None = field(default=None, init=False)
    diversity: float = field(default=float("nan"), init=False)

    def _step(self, device: torch.device) -> None:
        if self.optimizer is None:
            self.trigger.generator.to(device).train().requires_grad_(True)
            self.trigger.mask_net.to(device)
            self.optimizer = torch.optim.Adam(self.trigger.generator.parameters(), lr=self.lr, betas=BETAS)
        elif any(p.grad is not None for p in self.trigger.generator.parameters()):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        self._step(x.device)
        n = len(x)
        bd = round(self.rate * n)
        cross = min(round(self.cross_rate * n), n - bd)
        if bd + cross == 0 or n < 2:
            return x, y
        shift = int(torch.randint(1, n, (1,), generator=gen))
        donors = x[(torch.arange(bd, bd + cross, device=x.device) + shift) % n]
        stamped, pattern = self.trigger.stamp(x[: bd + cross], torch.cat([x[:bd], donors]))
        pairs = min(bd, cross)
        if pairs and self.lambda_div > 0:
            div = diversity_loss(x[:pairs], donors[:pairs], pattern[:pairs], pattern[bd : bd + pairs])
            (self.lambda_div * div).backward(retain_graph=True)
            self.diversity = div.item()
        return torch.cat([stamped, x[bd + cross :]]), torch.cat([self.rule.targets(y[:bd]), y[bd:]])

    def finish(self) -> None:
        """Drop the last batch's gradients; leave both networks frozen in eval mode on the CPU."""
        for net in (self.trigger.generator, self.trigger.mask_net):
            net.zero_grad(set_to_none=True)
            net.cpu().eval().requires_grad_(False)


def cross_stamp(trigger: InputAwareTrigger, x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with each input stamped by the pattern and mask of the next one (cyclically): the paper's
    cross-trigger test, whose inputs should keep their true labels."""
    return trigger.apply_from(x, x.roll(1, dims=0))


@ATTACKS.register("input_aware")
class InputAware(BatchPoisoningAttack):
    """Input-aware dynamic backdoor, dirty label, generator and classifier trained together per batch.

    Two encoder-decoder networks of the paper's shape (:func:`~backdoorlab.triggers.input_aware.generator_net`:
    16 channels and 2 down/up steps for grey images, 32 and 3 for colour) make a pattern and a mask for every input.
    First the mask network trains alone for ``mask_epochs`` (mask-density and diversity losses); then it is frozen,
    and the pattern generator trains with the classifier: in every batch ``poison_rate`` (rho_b) of the rows carry
    their own trigger and the target label, ``cross_rate`` (rho_c) carry another input's trigger and keep their label,
    and the generator also minimises ``lambda_div`` times the diversity loss.

    Defaults are the paper's CIFAR-10 ones (also BackdoorBench's): rho_b = rho_c = 0.1, lambda_div = 1,
    lambda_norm = 100, mask density 0.032, 25 mask epochs (Adam 0.01, betas (0.5, 0.9), / 10 after epochs 10 and
    20), generator Adam 0.01 with betas (0.5, 0.9); all-to-one (target 0) or all-to-all ((y + 1) mod K), as the
    paper. Both networks are the attacker's, trained only on the training split it controls, from ``seed``.
    Departures: the classifier is trained with the toolkit's recipe (its optimizer, epochs, schedule and shifts,
    applied before the trigger) instead of the paper's SGD 0.01 for 600 epochs with random crops and rotations; the
    generator's learning rate stays at 0.01 (the paper divides it by 10 after epoch 200, past every recipe here);
    the mask network trains on unaugmented images with the recipe's batch size (the paper: 128, augmented); the
    networks take [0, 1] pixels (the paper feeds them normalised images; every layer has BatchNorm); the backdoor and
    cross rows of a batch go through the generator in one forward pass; cross-trigger donors are other rows of the
    same batch (the paper draws them from a second loader).
    """

    name: ClassVar[str] = "input_aware"

    poison_rate: float = Field(
        0.1, gt=0, le=1, description="rho_b: fraction of every training batch stamped with its own trigger"
    )
    cross_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="rho_c: fraction of every batch stamped with another input's trigger, keeping its label",
    )
    lambda_div: float = Field(1.0, ge=0, description="weight of the diversity loss of patterns and masks")
    lambda_norm: float = Field(100.0, ge=0, description="weight of the mask-density loss while the mask pre-trains")
    mask_density: float = Field(
        0.032, gt=0, le=1, description="mask value above which the mask-density loss penalises each pixel"
    )
    mask_epochs: int = Field(25, ge=0, le=10_000, description="epochs of the mask network's pre-training")
    lr_generator: float = Field(0.01, gt=0, le=10, description="Adam learning rate of the pattern generator")
    lr_mask: float = Field(0.01, gt=0, le=10, description="Adam learning rate of the mask network's pre-training")

    def make_trigger(self, dataset: Dataset) -> InputAwareTrigger:
        """Untrained networks for ``dataset``'s images (checks the shape); :meth:`run` trains the real ones."""
        return InputAwareTrigger.new(dataset.input_shape, seed=0)

    def run(
        self, dataset, architecture, training, *, seed=0, device="auto", progress=None, clean_model=None
    ) -> Backdoor:
        rule = self.target_rule(dataset)
        params: dict[str, Any] = {"mask_density": self.mask_density, "lambda_div": self.lambda_div}
        trigger = InputAwareTrigger.new(dataset.input_shape, seed=seed, **params)
        info = pretrain_mask(
            trigger,
            dataset.train.x,
            epochs=self.mask_epochs,
            batch_size=training.batch_size,
            lr=self.lr_mask,
            density=self.mask_density,
            lambda_norm=self.lambda_norm,
            lambda_div=self.lambda_div,
            seed=seed,
            device=device,
            progress=progress,
        )
        hook = InputAwarePoisoning(trigger, rule, self.poison_rate, self.cross_rate, self.lambda_div, self.lr_generator)
        try:
            backdoor = self.train_per_batch(
                dataset, architecture, training, trigger, rule, hook, info, seed=seed, device=device, progress=progress
            )
        finally:
            hook.finish()
        backdoor.info["generator_diversity_loss"] = hook.diversity
        return backdoor
