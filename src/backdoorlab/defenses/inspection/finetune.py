"""Repair by fine-tuning against a reverse-engineered trigger: the shared half of Neural Cleanse's unlearning and
DeepInspect's patching.

Both inspect the model first; when a label is flagged, a fraction of the clean images get the recovered trigger
stamped *and keep their correct labels*, and the model is fine-tuned on that mix so it unlearns the shortcut
(Neural Cleanse: 20% stamped, one epoch; DeepInspect: triggered copies with correct labels; docs/methods.md
sections 8 and 9). Subclasses say which inspector to run and how to stamp an image with its verdict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, PrivateAttr
from torch import nn

from ...data import Split
from ...models import TrainingConfig, train_model
from ...utils.seeding import make_generator
from ..base import Figures, Repair
from ..repair.accuracy_guard import AccuracyGuard
from .base import Inspector
from .verdict import Verdict

Stamp = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def stamped_mix(clean: Split, stamp: Stamp, labels: list[int], fraction: float, seed: int) -> Split:
    """``clean`` with a random ``fraction`` of its images stamped; labels unchanged.

    ``stamp(x, t, gen)`` stamps images x (n, C, H, W) with the trigger recovered for labels t (n,); the stamped
    images cycle through ``labels`` (the flagged ones).
    """
    gen = make_generator(seed)
    count = round(fraction * len(clean))
    idx = torch.randperm(len(clean), generator=gen)[:count]
    x = clean.x.clone()
    if count:
        t = torch.tensor(labels)[torch.arange(count) % len(labels)]
        x[idx] = stamp(clean.x[idx], t, gen).clamp(0, 1)
    return Split(x, clean.y.clone())


class TriggerRepair(AccuracyGuard, Repair):
    """Inspect, then fine-tune on clean data where ``fraction`` of the images carry the recovered trigger.

    Defaults: ``fraction`` 0.2 and one epoch are Neural Cleanse's unlearning. The optimizer (SGD with momentum 0.9
    at a constant 1e-3, batches of 8, no augmentation) is our choice, measured on MNIST-5k (the papers give none):
    the defender's clean set is small (500 images), so one epoch is 63 steps of 8; Adam at rates that keep clean
    accuracy barely moved the ASR in one epoch, SGD at 1e-2 cost several points of clean accuracy. These
    hyper-parameters were chosen on MNIST-5k with ``badnet_cnn`` only; on a CIFAR-10 PreAct-ResNet-18 they cost
    44 points of clean accuracy (issue 24), so a guard (:mod:`..repair.accuracy_guard`) retries at a tenth of the
    rate, then keeps the input model, when clean accuracy on the defender's images falls more than
    ``max_accuracy_drop``.
    """

    fraction: float = Field(0.2, gt=0, le=1, description="share of the clean images stamped with the trigger")
    epochs: int = Field(1, ge=1, le=1000, description="passes over the clean set")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="optimizer of the fine-tuning")
    lr: float = Field(1e-3, gt=0, le=1, description="learning rate of the fine-tuning (constant)")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of SGD (unused by Adam)")
    batch_size: int = Field(8, ge=1, description="images per fine-tuning step")
    when: Literal["flagged", "always"] = Field(
        "flagged",
        description="flagged: repair only a model the inspection flags (else return an unchanged copy); always: "
        "use the most suspicious label even when nothing is flagged",
    )
    _verdict: Verdict | None = PrivateAttr(default=None)

    def inspector(self) -> Inspector:
        raise NotImplementedError

    def stamper(self, verdict: Verdict) -> Stamp:
        raise NotImplementedError

    def repair(
        self,
        model: nn.Module,
        clean: Split,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool | None = None,
    ) -> nn.Module:
        """Inspect ``model`` with :meth:`inspector` on ``clean``, then :meth:`repair_with_verdict`."""
        inspector = self.inspector()
        verdict = inspector.inspect(
            model,
            clean if inspector.needs_clean_data else None,
            input_shape=tuple(clean.x.shape[1:]),
            seed=seed,
            device=device,
            progress=progress,
        )
        return self.repair_with_verdict(model, clean, verdict, seed=seed, device=device, progress=progress)

    def repair_with_verdict(
        self,
        model: nn.Module,
        clean: Split,
        verdict: Verdict,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool | None = None,
    ) -> nn.Module:
        """The fine-tuning half of :meth:`repair`, for a verdict the caller already has (the same inspector's
        verdict on the same model and seed, e.g. the grid's inspector cell): the inspection is not repeated."""
        self._verdict, self._guard = verdict, {}
        labels = verdict.suspected if verdict.infected else ([verdict.ranking[0]] if self.when == "always" else [])
        if not labels:
            return copy.deepcopy(model).cpu().requires_grad_(True)
        mix = stamped_mix(clean, self.stamper(verdict), labels, self.fraction, seed)

        def fine_tune(lr_scale: float) -> nn.Module:
            cfg = TrainingConfig(
                optimizer=self.optimizer,
                epochs=self.epochs,
                lr=self.lr * lr_scale,
                momentum=self.momentum,
                batch_size=self.batch_size,
                schedule="none",
                augment_shift=0,
            )
            return train_model(
                copy.deepcopy(model).cpu().requires_grad_(True),
                mix.x,
                mix.y,
                cfg,
                seed=seed,
                device=device,
                progress=progress,
                description=f"{self.name} fine-tuning",
            )

        return self.guarded(fine_tune, model, clean, device).requires_grad_(True)

    @property
    def last_verdict(self) -> Verdict | None:
        return self._verdict

    def figures(self, model, probes, *, device="cpu") -> Figures:
        """``flagged`` (0/1) of the verdict the last repair acted on, and that verdict with its summary."""
        if self._verdict is None:
            return {}, {}
        return {"flagged": float(self._verdict.infected), **self._guard}, {
            "verdict": self._verdict,
            "summary": self._verdict.summary(),
        }
