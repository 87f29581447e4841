"""Channel Lipschitzness-based Pruning, CLP (Zheng, Zhang, Wagner, Goldblum, Alon, ECCV 2022). Data-free.

For each convolution, the upper bound of each output channel's Lipschitz constant (UCLC) is the spectral norm of
its kernel reshaped to (C_in, k_h * k_w), times ``|gamma / sigma|`` of the BatchNorm that follows it. Channels
whose UCLC exceeds ``mean + u * std`` of their layer are pruned (the BatchNorm's weight and bias set to 0).

Defaults: ``u`` = 3 (the paper's and BackdoorBench's). Departures, and why:

- sigma is ``sqrt(running_var + eps)``, the BatchNorm's actual scale (the official code omits eps);
- a convolution not followed by a BatchNorm of the same width (networks without BatchNorm such as ``badnet_cnn``)
  is bounded by its kernel alone and pruned by zeroing its weight and bias for the channel (the paper assumes
  conv -> BN; like the official code, pairing follows module registration order, so pre-activation ResNets are
  paired as the official code pairs them);
- the clean data the repair receives is not used to prune; it only records the clean accuracy against ``u``
  (the knob's curve, for the report).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, PrivateAttr
from torch import nn

from ..base import DEFENSES, Figures, Repair
from .neurons import accuracy, working_copy

U_GRID = tuple(x / 2 for x in range(0, 13))  # 0, 0.5, ..., 6: the knob's curve


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Each Conv2d with the BatchNorm2d registered right after it (before the next Conv2d) when its width
    matches, else None."""
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            pairs.append((m, None))
        elif isinstance(m, nn.BatchNorm2d) and pairs and pairs[-1][1] is None:
            conv = pairs[-1][0]
            if conv.out_channels == m.num_features:
                pairs[-1] = (conv, m)
    return pairs


@torch.no_grad()
def channel_lipschitz(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
    """UCLC (C_out,): the spectral norm of each output channel's kernel as a (C_in, k_h * k_w) matrix, times
    ``|gamma / sqrt(running_var + eps)|`` of ``bn`` when given. Computed on the CPU, where these small SVDs take
    about 0.1 s for ``preact_resnet18`` (CLP took 115 s on an H200 while it recomputed them on the device for each
    of the 40 points of its curves; not profiled further)."""
    w = conv.weight.detach().float().cpu()
    bound = torch.linalg.matrix_norm(w.reshape(w.shape[0], w.shape[1], -1), ord=2)
    if bn is not None:
        gamma = bn.weight.detach().float().cpu() if bn.weight is not None else torch.ones_like(bound)
        bound = bound * (gamma / torch.sqrt(bn.running_var.float().cpu() + bn.eps)).abs()
    return bound


def layer_bounds(model: nn.Module) -> list[torch.Tensor]:
    """The UCLC of every (conv, BatchNorm) pair of :func:`conv_bn_pairs`, in its order: they do not depend on
    ``u``, so a sweep over ``u`` computes them (one SVD per channel) once."""
    return [channel_lipschitz(conv, bn) for conv, bn in conv_bn_pairs(model)]


@torch.no_grad()
def clp_prune(model: nn.Module, u: float, bounds: list[torch.Tensor] | None = None) -> int:
    """Prune ``model`` in place: channels whose UCLC exceeds mean + ``u`` * std of their layer. ``bounds``: the
    :func:`layer_bounds` of ``model`` (or of a copy of it), computed when not given. Returns how many channels were
    pruned."""
    pairs = conv_bn_pairs(model)
    bounds = layer_bounds(model) if bounds is None else bounds
    pruned = 0
    for (conv, bn), lips in zip(pairs, bounds, strict=True):
        lips = lips.to(conv.weight.device)
        if len(lips) < 2:
            continue
        idx = torch.where(lips > lips.mean() + u * lips.std())[0]
        pruned += len(idx)
        target = bn if bn is not None else conv
        if target.weight is not None:
            target.weight[idx] = 0.0
        if target.bias is not None:
            target.bias[idx] = 0.0
    return pruned


@DEFENSES.register("clp")
class CLP(Repair):
    """Prune the channels with an outlying Lipschitz upper bound; needs no data."""

    name: ClassVar[str] = "clp"

    u: float = Field(
        3.0, ge=0, le=100, description="prune channels whose Lipschitz upper bound exceeds mean + u * std of its layer"
    )
    _curve: dict | None = PrivateAttr(default=None)
    _bounds: list[torch.Tensor] = PrivateAttr(default_factory=list)  # layer_bounds of the last repaired model

    def repair(self, model, clean, *, seed=0, device="auto", progress=None) -> nn.Module:
        """A pruned copy of ``model``; ``clean`` only feeds the clean-accuracy curve against ``u``."""
        out, dev = working_copy(model, device)
        self._bounds = layer_bounds(model)
        pruned = clp_prune(out, self.u, self._bounds)
        channels = sum(c.out_channels for c, _ in conv_bn_pairs(out))
        self._curve = {"u": self.u, "pruned_channels": pruned, "channels": channels}
        if len(clean):
            self._curve |= {"grid": list(U_GRID), "val_accuracy": self._sweep(model, clean, dev)}
        return out.cpu().eval()

    def _sweep(self, model, split, dev) -> list[float]:
        """Accuracy on ``split`` of ``model`` pruned at each ``u`` of the grid, with the bounds of the last repair."""
        bounds = self._bounds
        values = []
        for u in U_GRID:
            m, _ = working_copy(model, dev)
            clp_prune(m, u, bounds)
            values.append(accuracy(m, split, dev))
        return values

    def figures(self, model, probes, *, device="cpu") -> Figures:
        """Rows ``pruned_channels`` and ``pruned_fraction``; artifact ``clp_curve``: validation accuracy and,
        for the report, test CA and ASR against ``u``."""
        if self._curve is None:
            raise RuntimeError("clp: call repair() before figures()")
        curve = dict(self._curve)
        metrics = {
            "pruned_channels": float(curve["pruned_channels"]),
            "pruned_fraction": curve["pruned_channels"] / max(1, curve["channels"]),
        }
        if "grid" in curve:
            _, dev = working_copy(nn.Identity(), device)
            curve["test_accuracy"] = self._sweep(model, probes["test"], dev)
            if "triggered" in probes:
                curve["asr"] = self._sweep(model, probes["triggered"], dev)
        return metrics, {"clp_curve": curve}
