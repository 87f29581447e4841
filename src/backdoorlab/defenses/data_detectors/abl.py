"""Anti-Backdoor Learning (Li, Lyu, Koren, Lyu, Li, Ma; NeurIPS 2021).

Poisoned samples are learned faster than clean ones. ABL exploits it in two stages:

1. **Isolation**: train for ``isolation_epochs`` (20) with local gradient ascent (LGA), the loss
   ``sign(CE - gamma) * CE`` of each batch (gamma = 0.5): once a batch's loss falls below gamma the model climbs
   back, which holds clean samples near gamma while the quickly learned poison falls below it. The
   ``isolation_ratio`` (1%) of training samples with the lowest loss is isolated.
2. **Unlearning**: train on the other samples for ``finetune_epochs`` (60), then for ``unlearning_epochs`` (20)
   maximize the loss on the isolated samples (gradient ascent, SGD lr ``unlearning_lr`` 5e-4).

The first two phases use the setting's recipe (optimizer, learning rate, batch size, augmentation); the paper uses
SGD lr 0.1 on a WideResNet. Fine-tuning on the samples that were not isolated (rather than on all of them) is our
reading of "keep training" in the paper's second stage. ``isolated_`` holds the isolated rows after ``train``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from ...models import build_model
from ...models.training import make_optimizer, random_shift
from ...utils.device import resolve_device
from ...utils.seeding import make_generator, seed_everything
from ..base import DEFENSES
from .base import TrainingDefense


def run_epochs(model, x, y, epochs, opt, loss_of, gen, *, batch_size, shift, device) -> None:
    """``epochs`` passes over (x, y) in shuffled batches, stepping ``opt`` on ``loss_of(logits, labels)``."""
    model.train()
    batches = math.ceil(len(x) / batch_size)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for b in range(batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            xb, yb = random_shift(x[idx], shift, gen).to(device), y[idx].to(device)
            loss = loss_of(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


@torch.no_grad()
def per_sample_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, batch_size: int = 512) -> torch.Tensor:
    """Cross-entropy (N,) of each sample, in eval mode, without augmentation."""
    model.eval()
    out = [
        nn.functional.cross_entropy(
            model(x[i : i + batch_size].to(device)), y[i : i + batch_size].to(device), reduction="none"
        ).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out)


@DEFENSES.register("abl")
class ABL(TrainingDefense):
    """Anti-Backdoor Learning: isolate the fastest-learned 1% by local gradient ascent, then unlearn them."""

    name: ClassVar[str] = "abl"
    isolation_epochs: int = Field(20, ge=1, le=1000, description="epochs of LGA training before isolation (20)")
    isolation_ratio: float = Field(0.01, gt=0, lt=0.5, description="fraction isolated as poison, lowest loss (1%)")
    gamma: float = Field(0.5, ge=0, description="LGA's loss floor: below it the batch loss is ascended (0.5)")
    finetune_epochs: int = Field(60, ge=0, le=1000, description="epochs on the samples not isolated (60)")
    unlearning_epochs: int = Field(20, ge=0, le=1000, description="epochs of gradient ascent on the isolated (20)")
    unlearning_lr: float = Field(5e-4, gt=0, le=1, description="SGD learning rate of the unlearning (5e-4)")

    def train(self, train, dataset, architecture, training, *, seed=0, device="auto", progress=None) -> nn.Module:
        dev = resolve_device(device)
        seed_everything(seed)
        gen = make_generator(seed)
        model = build_model(
            architecture, dataset.input_shape, dataset.num_classes, dataset.mean, dataset.std, seed=seed
        )
        model.to(dev)
        kw = {"batch_size": training.batch_size, "shift": training.augment_shift, "device": dev}
        ce = nn.functional.cross_entropy

        def lga(logits, labels):
            loss = ce(logits, labels)
            return torch.sign(loss - self.gamma) * loss

        run_epochs(
            model, train.x, train.y, self.isolation_epochs, make_optimizer(model.parameters(), training), lga, gen, **kw
        )
        losses = per_sample_loss(model, train.x, train.y, dev)
        count = max(1, round(self.isolation_ratio * len(train)))
        isolated = torch.zeros(len(train), dtype=torch.bool)
        isolated[torch.argsort(losses, stable=True)[:count]] = True
        rest = (~isolated).nonzero().flatten()
        opt = make_optimizer(model.parameters(), training)
        run_epochs(model, train.x[rest], train.y[rest], self.finetune_epochs, opt, ce, gen, **kw)
        unlearn = torch.optim.SGD(model.parameters(), lr=self.unlearning_lr, momentum=0.9)
        x_iso, y_iso = train.x[isolated], train.y[isolated]
        run_epochs(model, x_iso, y_iso, self.unlearning_epochs, unlearn, lambda lo, la: -ce(lo, la), gen, **kw)
        self._isolated = isolated
        return model.cpu().eval()

    @property
    def isolated_(self) -> torch.Tensor:
        """Bool (N,): the training samples isolated as poison by the last :meth:`train`."""
        return self._isolated
