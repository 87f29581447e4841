"""A guard on repairs that train: a repair must not destroy the model it repairs.

A repair's hyper-parameters are chosen on one setting (here MNIST-5k with ``badnet_cnn``); on another architecture
the same learning rate can wreck the network (issue 24: Neural Cleanse unlearning took a CIFAR-10 PreAct-ResNet-18
from 69% to 25% clean accuracy). The guard measures accuracy on the defender's clean images (the repair's own
input, the only clean data the defender holds) before and after the repair. When it fell by more than
``max_accuracy_drop``, fixed before any repair runs, the repair is run again at a tenth of its learning rate; when
that falls too, the input model is returned unchanged (and the figures say so). Where the first try passes, which
is the case of every default on MNIST-5k, the guard changes nothing.

Every repair that trains carries it (:class:`AccuracyGuard`): fine-tuning, Fine-Pruning's fine-tuning, NC
unlearning, DeepInspect patching, NAD (teacher and student), FST, I-BAU and SAU. On the H200, on the CIFAR-10 slice
with ``preact_resnet18``, I-BAU at its official Adam lr 1e-3 took a clean model from 70.8% to 9.0% (issue 24's run).
The guard sees only the defender's images, which are also what the repair trains on, so it catches a collapse but
not overfitting to a small clean set (fine-tuning kept 400 images' accuracy while test accuracy fell 19 points there).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from pydantic import BaseModel, Field, PrivateAttr
from torch import nn

from ...data import Split
from ...models import predict
from ..base import Figures

LR_SCALES = (1.0, 0.1)


def accuracy(model: nn.Module, clean: Split, device: str | torch.device) -> float:
    """Share of ``clean`` that ``model`` labels correctly (1.0 for an empty split)."""
    if len(clean) == 0:
        return 1.0
    return float((predict(model, clean.x, device=device) == clean.y).float().mean())


def guarded_training(
    train: Callable[[float], nn.Module],
    model: nn.Module,
    clean: Split,
    max_drop: float,
    *,
    device: str | torch.device = "cpu",
    scales: Sequence[float] = LR_SCALES,
) -> tuple[nn.Module, dict[str, float]]:
    """``train(lr_scale)`` (which trains a new copy of ``model`` at ``lr_scale`` times its learning rate), tried at
    each of ``scales`` until clean accuracy stays within ``max_drop`` of ``model``'s; else a copy of ``model``.

    Returns (the model, figures): ``guard_accuracy_before``, ``guard_accuracy_after`` (of the model returned),
    ``guard_lr_scale`` (the scale kept; 0 when reverted) and ``guard_reverted`` (0/1).
    """
    before = accuracy(model, clean, device)
    for scale in scales:
        trained = train(scale)
        after = accuracy(trained, clean, device)
        if after >= before - max_drop:
            return trained, _figures(before, after, scale, False)
    return copy.deepcopy(model).cpu().eval(), _figures(before, before, 0.0, True)


def _figures(before: float, after: float, scale: float, reverted: bool) -> dict[str, float]:
    return {
        "guard_accuracy_before": before,
        "guard_accuracy_after": after,
        "guard_lr_scale": scale,
        "guard_reverted": float(reverted),
    }


class AccuracyGuard(BaseModel):
    """Mixin of the repairs that train: the ``max_accuracy_drop`` field and the guard's figures of the last repair."""

    max_accuracy_drop: float = Field(
        0.1,
        ge=0,
        le=1,
        description="guard: largest fall of clean accuracy on the defender's images the repair may cause; beyond it "
        "the repair is retried at a tenth of its learning rate, then the model is kept as it was",
    )
    _guard: dict[str, float] = PrivateAttr(default_factory=dict)

    def guarded(
        self, train: Callable[[float], nn.Module], model: nn.Module, clean: Split, device: str | torch.device
    ) -> nn.Module:
        """``train(lr_scale)`` under :func:`guarded_training`; the figures are kept for :meth:`figures`."""
        repaired, self._guard = guarded_training(train, model, clean, self.max_accuracy_drop, device=device)
        return repaired

    def figures(self, model: nn.Module, probes, *, device: str | torch.device = "cpu") -> Figures:
        """The guard's figures of the last repair (accuracy on the defender's images before and after, the
        learning-rate scale kept, whether it reverted)."""
        return dict(self._guard), {}
