"""Shared Adversarial Unlearning, SAU (Wei, Zhang, Zha, Wu, NeurIPS 2023).

Adversarial examples that fool the backdoored model (kept frozen as the reference) and the model being purified
*into the same label* behave like poisoned samples; unlearning them removes the backdoor. Each batch:

1. **maximisation** (``shared_pgd``): an L-inf perturbation (bound 0.2, 5 signed steps of 0.2, started at the
   bound) minimising ``beta_1 * L_adv + beta_2 * L_share``: ``L_adv`` is minus the cross-entropy of both models
   on the not-yet-fooled samples, ``L_share`` the Jensen-Shannon divergence between the two models' outputs on
   the samples whose adversarial labels are not yet shared;
2. **minimisation**: ``lambda_1 * CE(clean) + lambda_2 * CE(adversarial) + lambda_3 * L_sar`` where ``L_sar``
   lowers the purified model's probability of the reference model's adversarial label on the samples the
   reference model got wrong.

Defaults are the authors' BackdoorBench configuration: beta_1 0.01, beta_2 1, lambda 1 / 0 / 1, Adam lr 1e-4, 100
rounds over the defender's data, batch 128, BatchNorm statistics fixed (eval mode). Departure: the perturbation
lives in [0, 1] pixel space and is not clipped to the valid range, as in the authors' code (which adds it in
pixel space too).
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ...utils.seeding import make_generator, seed_everything
from ..base import DEFENSES, Repair
from .accuracy_guard import AccuracyGuard
from .neurons import minibatches, need_data, working_copy


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """(N,) Jensen-Shannon divergence between the softmax outputs of two logit tensors (N, K)."""
    p, q = F.softmax(logits_a, 1).clamp(min=1e-8), F.softmax(logits_b, 1).clamp(min=1e-8)
    mix = 0.5 * (p + q)
    return (0.5 * (p * (p.log() - mix.log())) + 0.5 * (q * (q.log() - mix.log()))).sum(1)


@DEFENSES.register("sau")
class SAU(AccuracyGuard, Repair):
    """Unlearn the adversarial examples shared by the backdoored model and the model being purified."""

    name: ClassVar[str] = "sau"

    rounds: int = Field(100, ge=1, le=10_000, description="passes over the defender's clean data")
    lr: float = Field(1e-4, gt=0, le=1, description="learning rate of the model (Adam)")
    batch_size: int = Field(128, ge=1, description="clean images per batch")
    bound: float = Field(0.2, gt=0, le=1, description="L-inf bound of the shared adversarial perturbation, in pixels")
    pgd_steps: int = Field(5, ge=1, le=1000, description="signed-gradient steps of the perturbation search")
    pgd_step_size: float = Field(0.2, gt=0, le=1, description="step of the perturbation search")
    beta_1: float = Field(0.01, ge=0, description="weight of the adversarial loss in the perturbation search")
    beta_2: float = Field(1.0, ge=0, description="weight of the shared (JS divergence) loss in the search")
    lambda_1: float = Field(1.0, ge=0, description="weight of the clean cross-entropy in the unlearning loss")
    lambda_2: float = Field(0.0, ge=0, description="weight of adversarial training (CE on the perturbed inputs)")
    lambda_3: float = Field(1.0, ge=0, description="weight of the shared adversarial risk in the unlearning loss")

    def repair(self, model, clean, *, seed=0, device="auto", progress=None) -> nn.Module:
        need_data(clean, self.name)
        return self.guarded(lambda scale: self._unlearn(model, clean, seed, device, scale), model, clean, device)

    def _unlearn(self, model: nn.Module, clean, seed: int, device, lr_scale: float) -> nn.Module:
        net, dev = working_copy(model, device)
        ref = copy.deepcopy(net)
        for p in ref.parameters():
            p.requires_grad_(False)
        seed_everything(seed)
        gen = make_generator(seed)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr * lr_scale)
        for _ in range(self.rounds):
            for idx in minibatches(len(clean), self.batch_size, gen):
                x, y = clean.x[idx].to(dev), clean.y[idx].to(dev)
                delta = self.shared_pgd(net, ref, x, y)
                loss = self.unlearning_loss(net, ref, x, y, delta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return net.cpu().eval()

    def shared_pgd(self, net: nn.Module, ref: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The shared adversarial perturbation (N, C, H, W) of the batch, within the L-inf ``bound``."""
        delta = torch.full_like(x, self.bound)
        with torch.no_grad():
            own, own_ref = net(x).argmax(1), ref(x).argmax(1)
        for _ in range(self.pgd_steps):
            delta.requires_grad_(True)
            logits, logits_ref = net(x + delta), ref(x + delta)
            label, label_ref = logits.argmax(1), logits_ref.argmax(1)
            fooled, fooled_ref = label != own, label_ref != own_ref
            shared = fooled & fooled_ref & (label == label_ref)
            ce, ce_ref = F.cross_entropy(logits, y, reduction="none"), F.cross_entropy(logits_ref, y, reduction="none")
            loss_adv = -((ce * ~fooled).sum() + (ce_ref * ~fooled_ref).sum()) / 2 / len(x)
            loss_share = (js_divergence(logits, logits_ref) * ~shared).sum() / len(x)
            grad = torch.autograd.grad(self.beta_1 * loss_adv + self.beta_2 * loss_share, delta)[0]
            delta = (delta.detach() - self.pgd_step_size * grad.sign()).clamp(-self.bound, self.bound)
            if bool(shared.all()):
                break
        return delta.detach()

    def unlearning_loss(self, net, ref, x, y, delta) -> torch.Tensor:
        logits, adv_logits = net(torch.cat([x, x + delta])).split(len(x))
        with torch.no_grad():
            own_ref = ref(x).argmax(1)
            adv_ref = ref(x + delta).argmax(1)
        poison_like = (adv_ref != y) & (adv_ref != own_ref)
        loss = self.lambda_1 * F.cross_entropy(logits, y) + self.lambda_2 * F.cross_entropy(adv_logits, y)
        if bool(poison_like.any()):
            prob = F.softmax(adv_logits, 1).gather(1, adv_ref[:, None])[:, 0][poison_like]
            shared = -(torch.log(1e-6 + (1 - prob).clamp(max=0.999)) + torch.log(1 + 1e-6 - prob.clamp(min=0.001)))
            loss = loss + self.lambda_3 * shared.sum() / 2 / len(x)
        return loss
