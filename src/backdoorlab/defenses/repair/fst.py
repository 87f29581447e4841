"""Feature Shift Tuning, FST (Min, Qin, Liu, Li, Wang, NeurIPS 2023: "Towards stable backdoor purification through
feature shift tuning").

Fine-tuning fails at low poisoning rates because the features barely move away from the backdoored ones. FST
re-initialises the classifier head and fine-tunes the whole network on clean data with
``CE + alpha * <W, W_orig>``, the inner product of the head's weight with the original head's weight, which
pushes the head (and with it the features) away from the backdoored solution; after each step the head's weight
is rescaled to the original weight's norm, so the penalty cannot be met by shrinking it.

Defaults: alpha 0.1, SGD lr 0.01, 10 epochs (field.md's reading of the authors' configuration for CIFAR-10; the
paper tunes alpha per dataset), cosine schedule and batch 64 as our fine-tuning. The head is the model's last
``nn.Linear``; it is re-initialised with PyTorch's default initialisation under the repair's seed.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ...models.training import make_optimizer, make_scheduler, random_shift
from ...utils.seeding import make_generator, seed_everything
from ..base import DEFENSES, Repair
from .fine_tuning import FineTuningSettings
from .neurons import last_linear, minibatches, need_data, working_copy


@DEFENSES.register("fst")
class FST(FineTuningSettings, Repair):
    """Fine-tuning with a re-initialised head pushed away from the original head's weight."""

    name: ClassVar[str] = "fst"

    alpha: float = Field(0.1, ge=0, description="weight of the inner product between the new and original head")

    def repair(self, model, clean, *, seed=0, device="auto", progress=None) -> nn.Module:
        need_data(clean, self.name)
        return self.guarded(lambda scale: self._fine_tune(model, clean, seed, device, scale), model, clean, device)

    def _fine_tune(self, model: nn.Module, clean, seed: int, device, lr_scale: float) -> nn.Module:
        net, dev = working_copy(model, device)
        _, head = last_linear(net)
        original = head.weight.detach().clone()
        norm = original.norm()
        seed_everything(seed)
        head.reset_parameters()
        cfg = self.training_config(lr_scale)
        gen = make_generator(seed)
        opt = make_optimizer(net.parameters(), cfg)
        sched = make_scheduler(opt, cfg, cfg.epochs * -(-len(clean) // cfg.batch_size))
        net.train()
        for _ in range(cfg.epochs):
            for idx in minibatches(len(clean), cfg.batch_size, gen):
                x = random_shift(clean.x[idx], cfg.augment_shift, gen).to(dev)
                loss = F.cross_entropy(net(x), clean.y[idx].to(dev)) + self.alpha * (head.weight * original).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    head.weight.mul_(norm / (head.weight.norm() + 1e-12))
        return net.cpu().eval()
