"""The pruning defense of Fine-Pruning (Liu, Dolan-Gavitt, Garg, RAID 2018, arXiv 1805.12185; docs/methods.md §7).

Rank the channels of the last convolutional layer by their mean activation on clean validation data, zero them
one by one in increasing order (dormant channels first), measure validation accuracy after each step, and stop
before it falls more than ``max_accuracy_drop`` (default 4 points, the paper's fine-pruning threshold) below the
unpruned accuracy. Channels are zeroed by a mask baked into the weights (:func:`bake_pruning`), so the repaired
model keeps its architecture (and its checkpoint loads into ``build_model``); the paper removes the filters
physically, which gives the same function.

Departures from the paper, and why:

- the accuracy check runs after every ``step`` channels (default 1, as in the paper);
- the returned model is the last one whose validation accuracy is within the threshold (the paper stops "when
  accuracy drops below the threshold" without saying which of the two models it keeps);
- ``prune_ratio`` prunes a fixed fraction instead (the official face code prunes 80%, trojanzoo 95%).

The test split is never used to choose anything: the evaluator measures the CA and ASR curves on it through
:meth:`Pruning.figures`, for the report only.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from torch import nn

from ...data import Split
from ...errors import ConfigError
from ...models.channels import ChannelSite, bake_pruning, prune_count_within_drop
from ...models.replay import pruning_curve
from ..base import DEFENSES, Figures, Repair
from .activations import ActivationProfile, activation_profile


class PruningSettings(BaseModel):
    """Parameters of the pruning step (shared by ``pruning`` and ``fine_pruning``).

    Defaults are the paper's: the last convolutional layer's neurons are pruned (the last Conv2d, or on a residual
    network the neurons its architecture declares as feeding the classifier: ``relu(net.bn(.))`` for
    ``preact_resnet18``, not the last residual branch's conv, which the shortcut bypasses), and the 4-point accuracy
    drop is its fine-pruning threshold.
    """

    model_config = ConfigDict(extra="forbid")

    layer: str | None = Field(
        None,
        description="the layer whose output channels are pruned, a name from model.named_modules(); None: the "
        "layer the architecture declares as feeding its classifier (preact_resnet18: net.bn, read after its ReLU), "
        "else the last Conv2d",
    )
    max_accuracy_drop: float = Field(
        0.04,
        ge=0,
        le=1,
        description="stop before validation accuracy falls more than this below the unpruned accuracy (absolute: "
        "0.04 = 4 points)",
    )
    prune_ratio: float | None = Field(
        None, ge=0, lt=1, description="prune this fraction of the channels instead of using the accuracy stop rule"
    )
    step: int = Field(1, ge=1, description="channels pruned between two accuracy checks")


@dataclass
class PruningResult:
    """The outcome of :func:`prune_by_activation`.

    ``model``: the pruned copy (masks baked in); ``profile``: clean activations on the defender's data that set
    the order; ``counts`` and ``val_accuracy``: the validation curve (accuracy after pruning ``counts[i]``
    channels, ``counts[0] == 0``); ``pruned``: how many channels were pruned.
    """

    model: nn.Module
    profile: ActivationProfile
    counts: list[int]
    val_accuracy: list[float]
    pruned: int

    @property
    def site(self) -> ChannelSite:
        return self.profile.site

    @property
    def pruned_channels(self) -> torch.Tensor:
        """Indices of the pruned channels, in pruning order."""
        return self.profile.order[: self.pruned]

    @property
    def threshold(self) -> float:
        """Clean mean activation of the last pruned channel (channels at or below it are gone); NaN if none."""
        if self.pruned == 0:
            return float("nan")
        return float(self.profile.clean[self.profile.order[self.pruned - 1]])

    @property
    def val_accuracy_drop(self) -> float:
        return self.val_accuracy[0] - self.val_accuracy[self.counts.index(self.pruned)]


def prune_by_activation(
    model: nn.Module, clean: Split, settings: PruningSettings, *, device: str | torch.device = "auto"
) -> PruningResult:
    """Prune a copy of ``model`` by mean clean activation on ``clean`` (the defender's validation data).

    ``model`` is not changed. Raises :class:`ConfigError` for empty data or a layer that cannot be pruned.
    """
    if len(clean) == 0:
        raise ConfigError("pruning needs clean validation data; the split given is empty")
    model = copy.deepcopy(model)
    profile = activation_profile(model, clean.x, layer=settings.layer, device=device)
    channels = profile.site.channels
    fixed = None if settings.prune_ratio is None else round(settings.prune_ratio * channels)
    counts = sorted({*range(0, channels + 1, settings.step), channels, *([fixed] if fixed is not None else [])})
    accuracy = pruning_curve(model, profile.site, profile.order, clean.x, clean.y, counts, device=device)
    pruned = fixed if fixed is not None else prune_count_within_drop(counts, accuracy, settings.max_accuracy_drop)
    bake_pruning(model, profile.site, profile.order[:pruned])
    return PruningResult(model, profile, counts, accuracy, pruned)


@dataclass(frozen=True)
class PruningCurve:
    """CA and ASR against the number of pruned channels, for the report (plain lists, one entry per count).

    ``val_accuracy`` is what the defender saw; ``test_accuracy`` and ``asr`` (``None`` on a clean model) are
    measured on the test split with the same pruning order. ``pruned`` is the defense's choice and
    ``threshold`` the clean activation of the last channel it pruned.
    """

    layer: str
    channels: int
    counts: list[int]
    val_accuracy: list[float]
    test_accuracy: list[float]
    asr: list[float] | None
    pruned: int
    threshold: float

    @property
    def ratios(self) -> list[float]:
        return [k / self.channels for k in self.counts]

    def at_pruned(self, values: list[float]) -> float:
        """The entry of ``values`` at the defense's chosen count."""
        return values[self.counts.index(self.pruned)]

    def asr_halving(self) -> tuple[float, float] | None:
        """(pruned fraction, test CA drop there) at the first count where ASR falls below half its unpruned value;
        ``None`` when it never does (or there is no ASR)."""
        if not self.asr or math.isnan(self.asr[0]):
            return None
        for k, acc, asr in zip(self.counts, self.test_accuracy, self.asr, strict=True):
            if asr < self.asr[0] / 2:
                return k / self.channels, self.test_accuracy[0] - acc
        return None


def pruning_report(
    result: PruningResult, model: nn.Module, probes: Mapping[str, Split], *, device: str | torch.device = "cpu"
) -> Figures:
    """Rows and artifacts that describe the pruning step of ``result`` (taken from ``model``, the input model).

    Rows: ``pruned_fraction``, ``pruned_channels``, ``val_accuracy_drop``, ``pruning_threshold``. Artifacts, as
    plain dicts of lists (they are saved with the run and written to JSON): ``pruning``, a :class:`PruningCurve`
    on val and on ``probes`` (``PruningCurve(**artifact)`` rebuilds it: ``test_accuracy`` on ``probes["test"]``,
    ``asr`` on ``probes["triggered"]`` when given), and ``activations``, the :class:`ActivationProfile` of the
    input model on the clean and triggered probe inputs (the paper's Fig. 4) with the defender's ``order``.
    """
    test, triggered, site, order = probes["test"], probes.get("triggered"), result.site, result.profile.order
    test_acc = pruning_curve(model, site, order, test.x, test.y, result.counts, device=device)
    asr = None
    if triggered is not None:
        asr = pruning_curve(model, site, order, triggered.x, triggered.y, result.counts, device=device)
    curve = PruningCurve(
        site.layer, site.channels, result.counts, result.val_accuracy, test_acc, asr, result.pruned, result.threshold
    )
    profile = activation_profile(
        model, test.x, triggered.x if triggered is not None else None, site=site, device=device
    )
    metrics = {
        "pruned_fraction": result.pruned / site.channels,
        "pruned_channels": float(result.pruned),
        "val_accuracy_drop": result.val_accuracy_drop,
        "pruning_threshold": result.threshold,
    }
    activations = {**profile.to_plain(), "order": order.tolist()}
    return metrics, {"pruning": dataclasses.asdict(curve), "activations": activations}


@DEFENSES.register("pruning")
class Pruning(PruningSettings, Repair):
    """Fine-Pruning's pruning defense alone: zero the channels of the last conv layer that are least active on
    clean validation data, until validation accuracy would drop more than ``max_accuracy_drop``."""

    name: ClassVar[str] = "pruning"
    _result: PruningResult | None = PrivateAttr(default=None)

    def repair(self, model, clean, *, seed=0, device="auto", progress=None) -> nn.Module:
        """A pruned copy of ``model`` (same architecture, pruned channels zeroed in the weights)."""
        self._result = prune_by_activation(model, clean, self, device=device)
        return self._result.model

    def figures(self, model, probes, *, device="cpu") -> Figures:
        """:func:`pruning_report` of the last :meth:`repair`: pruning rows, CA / ASR curves, activations."""
        if self._result is None:
            raise RuntimeError(f"{self.name}: call repair() before figures()")
        return pruning_report(self._result, model, probes, device=device)
