"""Neural Attention Distillation, NAD (Li, Lyu, Koren, Lyu, Li, Ma, ICLR 2021).

A teacher is fine-tuned from the backdoored model on clean data (:class:`FineTuningSettings`: SGD lr 0.01, 10
epochs). The backdoored model (the student) is then trained on the same data with cross-entropy plus, at each
distillation stage, ``beta * MSE(A(student), A(teacher))``, where the attention map ``A(f)`` of a feature map
f (N, C, H, W) is ``sum_c |f_c|^p`` normalised to unit L2 norm over (H, W).

Defaults: p = 2 and betas 500, 1000, 1000 at the three stages (the paper's CIFAR setting on WRN-16-1, the outputs
of its three residual groups); student 20 epochs at SGD lr 0.01 (BackdoorBench's NAD rate; the paper uses 0.1 on
WRN with a step schedule). Departure: the stages of a network without named residual groups are found from its
structure: for each spatial size larger than 1x1, the last module (in execution order) whose output is a feature
map of that size; the last three of those are the stages (``stages`` names them instead). For ``cnn_small`` that
gives the second and third conv blocks and the pooled features; for ``preact_resnet18`` the last block of each
of the last three resolutions, as in the paper. With fewer stages, the last betas are used.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ...errors import ConfigError
from ...models.training import make_optimizer, make_scheduler, random_shift
from ...utils.seeding import make_generator, seed_everything
from ..base import DEFENSES, Repair
from .fine_tuning import FineTuningSettings
from .neurons import minibatches, need_data, working_copy


def attention_map(features: torch.Tensor, p: float) -> torch.Tensor:
    """(N, H*W): ``sum_c |f_c|^p`` per position, normalised to unit L2 norm per sample."""
    am = features.abs().pow(p).sum(1).flatten(1)
    return am / (am.norm(dim=1, keepdim=True) + 1e-6)


@torch.no_grad()
def find_stages(model: nn.Module, input_shape: tuple[int, ...], count: int = 3) -> list[str]:
    """Names of the last ``count`` stage outputs: per spatial size > 1, the last module to output a 4-D map of it."""
    last: dict[tuple[int, int], str] = {}
    order: list[tuple[int, int]] = []

    def recorder(name):
        def hook(_m, _i, out):
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
                size = (out.shape[2], out.shape[3])
                if size in order:
                    order.remove(size)
                order.append(size)
                last[size] = name

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if n]
    was = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return [last[s] for s in order][-count:]


class FeatureTap:
    """Keeps the outputs of the named modules of one forward pass (``self.out[name]``)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ConfigError(f"nad: stages {missing} are not modules of the model")
        self.out: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name):
        def hook(_m, _i, out):
            self.out[name] = out

        return hook

    def detach(self) -> None:
        for h in self._handles:
            h.remove()


@DEFENSES.register("nad")
class NAD(FineTuningSettings, Repair):
    """Attention distillation from a clean-fine-tuned teacher. The fine-tuning fields set the teacher's training."""

    name: ClassVar[str] = "nad"

    student_epochs: int = Field(20, ge=1, le=10_000, description="epochs of attention distillation of the student")
    student_lr: float = Field(0.01, gt=0, le=10, description="learning rate of the student (SGD, cosine schedule)")
    betas: list[float] = Field(
        [500.0, 1000.0, 1000.0], min_length=1, description="weight of the attention loss at each stage, first to last"
    )
    p: float = Field(2.0, gt=0, description="power of the attention map")
    stages: list[str] | None = Field(
        None, description="module names whose outputs are distilled; None: the last three stages found by structure"
    )

    def repair(self, model, clean, *, seed=0, device="auto", progress=None) -> nn.Module:
        need_data(clean, self.name)
        teacher = self.fine_tune(copy.deepcopy(model), clean, seed=seed, device=device, progress=progress)
        distil = lambda scale: self._distil(model, teacher, clean, seed, device, scale)  # noqa: E731
        return self.guarded(distil, model, clean, device)

    def _distil(self, model: nn.Module, teacher: nn.Module, clean, seed: int, device, lr_scale: float) -> nn.Module:
        """A student copy of ``model`` trained on ``clean`` with attention distillation from ``teacher``."""
        student, dev = working_copy(model, device)
        teacher.to(dev).eval()
        names = self.stages or find_stages(student, tuple(clean.x.shape[1:]))
        betas = [self.betas[min(i + len(self.betas) - len(names), len(self.betas) - 1)] for i in range(len(names))]
        tap_s, tap_t = FeatureTap(student, names), FeatureTap(teacher, names)
        student_lr = self.student_lr * lr_scale
        cfg = self.training_config().model_copy(update={"lr": student_lr, "epochs": self.student_epochs})
        seed_everything(seed)
        gen = make_generator(seed)
        opt = make_optimizer(student.parameters(), cfg)
        steps = self.student_epochs * -(-len(clean) // cfg.batch_size)
        sched = make_scheduler(opt, cfg, steps)
        student.train()
        try:
            for _ in range(self.student_epochs):
                for idx in minibatches(len(clean), cfg.batch_size, gen):
                    x = random_shift(clean.x[idx], cfg.augment_shift, gen).to(dev)
                    loss = F.cross_entropy(student(x), clean.y[idx].to(dev))
                    with torch.no_grad():
                        teacher(x)
                    for name, beta in zip(names, betas, strict=True):
                        a_s, a_t = attention_map(tap_s.out[name], self.p), attention_map(tap_t.out[name], self.p)
                        loss = loss + beta * F.mse_loss(a_s, a_t)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
        finally:
            tap_s.detach()
            tap_t.detach()
        return student.cpu().eval()
