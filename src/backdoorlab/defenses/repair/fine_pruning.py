"""Fine-Pruning (Liu, Dolan-Gavitt, Garg, RAID 2018; docs/methods.md §7): prune the last conv layer by clean
activation until validation accuracy would drop more than 4 points (:mod:`.pruning`), then fine-tune the pruned
network on clean data (:mod:`.fine_tuning`). Pruned channels stay pruned while fine-tuning (a mask hook zeroes
them, so their gradient is 0) and are baked into the weights at the end, so the result keeps the architecture.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from ...models.channels import ChannelMask, bake_pruning
from ..base import DEFENSES, Figures
from .fine_tuning import FineTuningSettings
from .pruning import Pruning, PruningCurve, prune_by_activation


@DEFENSES.register("fine_pruning")
class FinePruning(Pruning, FineTuningSettings):
    """Pruning (parameters of :class:`PruningSettings`) followed by fine-tuning (:class:`FineTuningSettings`)."""

    name: ClassVar[str] = "fine_pruning"

    def repair(self, model, clean, *, seed=0, device="auto", progress=None) -> nn.Module:
        """A pruned and fine-tuned copy of ``model``; both steps use ``clean`` only."""
        result = prune_by_activation(model, clean, self, device=device)
        with ChannelMask(result.model, result.site, result.pruned_channels):
            self.fine_tune(result.model, clean, seed=seed, device=device, progress=progress)
        bake_pruning(result.model, result.site, result.pruned_channels)
        self._result = result
        return result.model

    def figures(self, model, probes, *, device="cpu") -> Figures:
        """The pruning figures (:meth:`Pruning.figures`), plus ``clean_accuracy_after_pruning`` and
        ``asr_after_pruning``: the probes' accuracy after the pruning step, before fine-tuning."""
        metrics, artifacts = super().figures(model, probes, device=device)
        curve = PruningCurve(**artifacts["pruning"])
        metrics["clean_accuracy_after_pruning"] = curve.at_pruned(curve.test_accuracy)
        if curve.asr is not None:
            metrics["asr_after_pruning"] = curve.at_pruned(curve.asr)
        return metrics, artifacts
