"""Helpers shared by the repairs of issue 19 (ANP, I-BAU, NAD, SAU, CLP, FST): a working copy on a device,
shuffled mini-batches, the classifier head, and per-neuron coefficients applied by forward hooks.

A *neuron* here is an output channel of a BatchNorm2d layer (networks with BatchNorm, as in ANP's paper) or, for
networks without BatchNorm, of a Conv2d layer. :class:`NeuronCoefficients` rescales each neuron's weight term
and bias term: ``out' = c_w * (out - b) + c_b * b``, where ``b`` is the layer's bias, which is what
multiplying the layer's weight by ``c_w`` and its bias by ``c_b`` gives.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch
from torch import nn

from ...data import Split
from ...errors import ConfigError
from ...utils.device import resolve_device


def working_copy(model: nn.Module, device: str | torch.device) -> tuple[nn.Module, torch.device]:
    """A deep copy of ``model`` on the resolved device, in eval mode, and that device."""
    dev = resolve_device(device)
    return copy.deepcopy(model).to(dev).eval(), dev


def need_data(clean: Split, method: str) -> None:
    if len(clean) == 0:
        raise ConfigError(f"{method} needs clean data; the split given is empty")


def minibatches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Index tensors of one shuffled pass over ``n`` samples, ``batch_size`` at a time."""
    order = torch.randperm(n, generator=gen)
    for b in range(math.ceil(n / batch_size)):
        yield order[b * batch_size : (b + 1) * batch_size]


def endless_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled mini-batches of ``n`` samples, epoch after epoch."""
    while True:
        yield from minibatches(n, batch_size, gen)


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """Name and module of the model's last ``nn.Linear`` (the classifier head)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ConfigError("the model has no nn.Linear classifier head")
    return found[-1]


def neuron_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose output channels are neurons: every affine BatchNorm2d when the model has one, else every
    Conv2d."""
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
    if bns:
        return bns
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("the model has neither BatchNorm2d nor Conv2d layers whose channels could be masked")
    return convs


def channels_of(module: nn.Module) -> int:
    return module.num_features if isinstance(module, nn.BatchNorm2d) else module.out_channels  # type: ignore[return-value]


class NeuronCoefficients:
    """Forward hooks that rescale each neuron of ``layers``: ``weight[i]`` (C_i,) multiplies the weight term and
    ``bias[i]`` (C_i,) the bias term (``None``: 1). Set ``weight`` / ``bias`` between forwards; ``detach()``
    removes the hooks. The model's parameters are not changed."""

    def __init__(self, layers: list[tuple[str, nn.Module]]) -> None:
        self.layers = layers
        self.weight: list[torch.Tensor | None] = [None] * len(layers)
        self.bias: list[torch.Tensor | None] = [None] * len(layers)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(layers)]

    def _hook(self, i: int):
        def hook(module, _inputs, out):
            cw, cb = self.weight[i], self.bias[i]
            if cw is None and cb is None:
                return out
            shape = (1, -1, *([1] * (out.ndim - 2)))
            b = module.bias.view(shape) if module.bias is not None else torch.zeros((), device=out.device)
            cw = torch.ones((), device=out.device) if cw is None else cw.view(shape)
            cb = torch.ones((), device=out.device) if cb is None else cb.view(shape)
            return cw * (out - b) + cb * b

        return hook

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int = 512) -> float:
    """Accuracy of ``model`` (already on ``device``, eval mode) on ``split``."""
    correct = 0
    for i in range(0, len(split), batch_size):
        pred = model(split.x[i : i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == split.y[i : i + batch_size]).sum())
    return correct / max(1, len(split))
