"""The pruning-aware attack of Fine-Pruning (Liu, Dolan-Gavitt, Garg, RAID 2018, Section 5; docs/methods.md §7).

An adaptive BadNets attacker who expects the defender to prune dormant channels:

1. train a clean network;
2. prune the channels of its last conv layer that are dormant on clean data, as the defender would;
3. train the pruned network on poisoned data (pruned channels held at 0), so the backdoor must live in the
   channels that clean inputs also use;
4. re-instate the pruned channels and lower their biases so they stay dormant on clean and triggered inputs:
   decoys that the defender's pruning removes first, at no cost to the backdoor.

The trigger, target rule and poisoning are BadNets' (this class subclasses :class:`BadNets` and takes all its
parameters). The paper publishes no code and no numbers for the attacker's budget or bias shift, so:

- the attacker prunes like the defender: until accuracy on ``probe_size`` of its own (clean) training images
  would fall more than ``max_accuracy_drop`` (default 0.04, the defender's threshold), or ``prune_ratio``;
- each re-instated channel's bias is lowered by its largest pre-activation on those images, clean and
  triggered, plus ``dormancy_margin`` (default 0.5) times its standard deviation, so after the ReLU it is 0
  on all of them. "Bias" is that of the last BatchNorm after the layer if there is one (``cnn_small``), else
  the layer's own (``badnet_cnn``); the layer must be followed by a ReLU.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..models import TrainingConfig, train_model
from ..models.channels import (
    CLAMPING,
    ChannelMask,
    ChannelSite,
    channel_means,
    channel_summary,
    find_site,
    prune_count_within_drop,
)
from ..models.replay import pruning_curve
from ..utils.device import resolve_device
from ..utils.seeding import make_generator
from .badnets import BadNets
from .base import ATTACKS, Backdoor


def dormancy_module(model: nn.Module, site: ChannelSite) -> str:
    """Name of the module whose bias decides whether the channels of ``site`` fire: the last module with a bias
    before the chain's last ReLU. Raises :class:`ConfigError` when there is no such ReLU or bias."""
    names = (site.layer, *site.chain)
    clamps = [i for i, n in enumerate(names) if isinstance(model.get_submodule(n), CLAMPING)]
    clamps += [len(names)] if site.relu else []  # the model's functional ReLU after the site
    if not clamps:
        raise ConfigError(
            f"pruning_aware needs a ReLU right after the pruned layer, found {site.describe()}; choose another layer"
        )
    biased = [n for n in names[: clamps[-1]] if getattr(model.get_submodule(n), "bias", None) is not None]
    if not biased:
        raise ConfigError(f"pruning_aware: {site.describe()} has no bias to lower before its ReLU")
    return biased[-1]


@torch.no_grad()
def make_dormant(
    model: nn.Module,
    site: ChannelSite,
    channels: torch.Tensor,
    x: torch.Tensor,
    margin: float,
    *,
    device: str | torch.device = "auto",
) -> torch.Tensor:
    """Lower the bias of ``channels`` of ``site`` (in place) so their activation is 0 on every input of ``x``.

    Returns the shift subtracted from each of ``channels`` (>= 0): its largest pre-activation on ``x`` plus
    ``margin`` standard deviations, or 0 when that is negative already.
    """
    name = dormancy_module(model, site)
    stats = channel_summary(model, x, name, device=device)
    shift = (stats.max + margin * stats.std).clamp_min(0)[channels]
    model.get_submodule(name).bias[channels] -= shift.to(model.get_submodule(name).bias)
    return shift


@ATTACKS.register("pruning_aware")
class PruningAware(BadNets):
    """Pruning-aware BadNets (Fine-Pruning's adaptive attack): BadNets' parameters, plus the attacker's pruning.

    The paper gives no budget or bias shift; the defaults (the defender's 4-point threshold, a 0.5-std margin) are
    this toolkit's, explained in the module docstring.
    """

    name: ClassVar[str] = "pruning_aware"
    uses_clean_model: ClassVar[bool] = True

    layer: str | None = Field(
        None, description="the layer the defender is expected to prune; None: the last Conv2d, as Fine-Pruning does"
    )
    max_accuracy_drop: float = Field(
        0.04,
        ge=0,
        le=1,
        description="the attacker prunes dormant channels until its probe accuracy would fall by more than this",
    )
    prune_ratio: float | None = Field(
        None, gt=0, lt=1, description="fraction of the layer's channels to prune instead of max_accuracy_drop"
    )
    retrain_epochs: int | None = Field(
        None, ge=1, le=10_000, description="epochs of poisoned training of the pruned network; None: the training's"
    )
    dormancy_margin: float = Field(
        0.5, ge=0, description="extra bias shift of the re-instated channels, in standard deviations of their input"
    )
    probe_size: int = Field(
        1000, ge=1, description="training images the attacker uses to rank channels and make them dormant"
    )

    def run(
        self, dataset, architecture, training, *, seed=0, device="auto", progress=None, clean_model=None
    ) -> Backdoor:
        """Step 1 (the clean ``architecture`` network: ``clean_model``, or trained here when None), then
        :meth:`implant`."""
        self.check(dataset)
        model = self.host_model(
            clean_model, dataset, architecture, training, seed=seed, device=device, progress=progress
        )
        return self.implant(
            model, dataset, training, architecture=architecture, seed=seed, device=device, progress=progress
        )

    def implant(
        self,
        clean_model: nn.Module,
        dataset: Dataset,
        training: TrainingConfig,
        *,
        architecture: str | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool | None = None,
    ) -> Backdoor:
        """Steps 2-4 on a copy of ``clean_model`` (a network trained on ``dataset``'s clean training split).

        ``info`` of the result holds the layer, the re-instated channels and their bias shifts.
        """
        dev = resolve_device(device)
        model = copy.deepcopy(clean_model)
        trigger, rule = self.make_trigger(dataset), self.target_rule(dataset)
        site = find_site(model, self.layer)
        dormancy_module(model, site)  # fail before training when the layer cannot be made dormant
        train = dataset.train
        probe = train.subset(torch.randperm(len(train), generator=make_generator(seed))[: self.probe_size])

        # 2. prune the channels dormant on clean data, up to the defender's expected budget
        activations = channel_means(model, probe.x, site, device=dev)
        order = torch.argsort(activations, stable=True)
        channels = site.channels
        if self.prune_ratio is not None:
            count = round(self.prune_ratio * channels)
        else:
            counts = list(range(channels + 1))
            accuracy = pruning_curve(model, site, order, probe.x, probe.y, counts, device=dev)
            count = prune_count_within_drop(counts, accuracy, self.max_accuracy_drop)
        pruned = order[:count]

        # 3. train the pruned network on poisoned data; the mask keeps the pruned channels at 0
        poisoned = self.poison(train, trigger, rule, seed)
        epochs = self.retrain_epochs or training.epochs
        retrain = training.model_copy(update={"epochs": epochs})
        with ChannelMask(model, site, pruned):
            train_model(
                model,
                poisoned.split.x,
                poisoned.split.y,
                retrain,
                seed=seed,
                device=dev,
                progress=progress,
                description="pruning-aware: poisoned retraining",
            )

        # 4. re-instate the pruned channels (the mask is gone) and lower their biases so they stay dormant
        shift = make_dormant(
            model, site, pruned, torch.cat([probe.x, trigger(probe.x)]), self.dormancy_margin, device=dev
        )
        info = {
            "layer": site.layer,
            "reinstated_channels": pruned.tolist(),
            "reinstated_fraction": count / channels,
            "bias_module": dormancy_module(model, site),
            "bias_shift": shift.tolist(),
        }
        return self.make_backdoor(
            model.cpu(), trigger, rule, architecture, poisoned_indices=poisoned.poisoned_indices, info=info
        )
