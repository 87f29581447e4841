"""Activation analysis for Fine-Pruning (Liu, Dolan-Gavitt, Garg 2018, Section 3 and Fig. 4).

Hook one layer (default: the model's last ``nn.Conv2d``; see :mod:`backdoorlab.models.channels` for how the
layer's BatchNorm and activation are included) and take each channel's mean activation over samples and spatial
positions, on clean inputs and, for the report, on triggered ones. The defender ranks channels by the clean
means only: channels dormant on clean data are pruned first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...models.channels import ChannelSite, channel_means, find_site


@dataclass(frozen=True)
class ActivationProfile:
    """Mean activation per channel of ``site``: ``clean`` (C,), and ``triggered`` (C,) when triggered inputs
    were given (report only; a defender has none)."""

    site: ChannelSite
    clean: torch.Tensor
    triggered: torch.Tensor | None = None

    @property
    def order(self) -> torch.Tensor:
        """Channel indices (C,) by increasing clean activation: Fine-Pruning's pruning order (ties by index)."""
        return torch.argsort(self.clean, stable=True)

    def to_plain(self) -> dict:
        """Plain lists, for artifacts and checkpoints."""
        return {
            "layer": self.site.layer,
            "site": self.site.output,
            "clean": self.clean.tolist(),
            "triggered": None if self.triggered is None else self.triggered.tolist(),
        }


def activation_profile(
    model: nn.Module,
    clean_x: torch.Tensor,
    triggered_x: torch.Tensor | None = None,
    *,
    layer: str | None = None,
    site: ChannelSite | None = None,
    batch_size: int = 512,
    device: str | torch.device = "auto",
) -> ActivationProfile:
    """Mean activation per channel of ``layer`` (or of a given ``site``) on ``clean_x`` and ``triggered_x``
    (each (N, C, H, W) in [0, 1]). ``model`` is not changed."""
    site = site or find_site(model, layer)
    clean = channel_means(model, clean_x, site, batch_size=batch_size, device=device)
    triggered = None
    if triggered_x is not None and len(triggered_x):
        triggered = channel_means(model, triggered_x, site, batch_size=batch_size, device=device)
    return ActivationProfile(site, clean, triggered)
