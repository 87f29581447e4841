"""The channels of one layer: find the layer, summarise each channel's activation, mask channels, bake masks.

Shared by the pruning defenses (``defenses/repair``) and the pruning-aware attack (``attacks/pruning_aware``),
which both sit above the model layer.

A :class:`ChannelSite` is where a channel's activation is read and where it is zeroed: the named layer
(default: the model's last ``nn.Conv2d``) followed by the per-channel modules that come right after it in the
same ``nn.Sequential`` (BatchNorm, and activations that keep 0 at 0 such as ReLU). So the activation of a
channel is what the next layer sees (Liu et al. 2018 read the last conv layer's output after its non-linearity):

- ``badnet_cnn``: last conv ``net.0.3`` -> ReLU ``net.0.4``; the site's output is the ReLU;
- ``cnn_small``: last conv ``net.0.15`` -> BatchNorm ``net.0.16`` -> ReLU ``net.0.17``;
- residual networks: the last conv of a residual branch is added to the shortcut, so zeroing it does not silence
  the neuron and its signed output is not an activation. An architecture names instead the layer whose channels
  feed its classifier (``feature_layer``) and the layers its ``forward`` passes through a functional ReLU
  (``relu_after``): ``preact_resnet18`` declares ``bn``, read as ``relu(net.bn(.))``, the neurons the global pooling
  and the classifier see. That layer is the default site of such a model, and naming it gives the same site.

Zeroing a channel with a forward hook on the site's output, and :func:`bake_pruning` (zero the layer's weights
and bias for the channel, and the affine weight and bias of every BatchNorm of the chain), give the same
function: the channel is exactly 0 where the next layer reads it, in eval and in train mode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError
from ..utils.device import resolve_device
from .placement import on_device

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, _BatchNorm)
# Modules that act on each channel alone and map 0 to 0, so a zeroed channel stays zero through them.
ZERO_PRESERVING = (
    _BatchNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Tanh,
    nn.Softsign,
    nn.Identity,
)
# Activations that give exactly 0 for every negative input (a channel can be made dormant by lowering its bias).
CLAMPING = (nn.ReLU, nn.ReLU6)


@dataclass(frozen=True)
class ChannelSite:
    """A layer's output channels: ``layer`` (its name in ``model.named_modules()``), ``chain`` (names of the
    per-channel modules that follow it, in order) and ``channels`` (how many).
    """

    layer: str
    chain: tuple[str, ...]
    channels: int
    relu: bool = False  # the model applies a functional ReLU to the output (read after it; zero stays zero)

    @property
    def output(self) -> str:
        """Name of the module whose output is the channels' activation (the end of the chain)."""
        return self.chain[-1] if self.chain else self.layer

    def describe(self) -> str:
        return " -> ".join((self.layer, *self.chain, *(["relu"] if self.relu else []))) + f" ({self.channels} channels)"


def _width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, _BatchNorm):
        return module.num_features
    return module.out_channels  # type: ignore[return-value]


def find_site(model: nn.Module, layer: str | None = None) -> ChannelSite:
    """The :class:`ChannelSite` of ``layer`` (a name from ``model.named_modules()``; default the layer an
    architecture declares as its ``feature_layer``, else the last Conv2d).

    ``layer`` must be a Conv1d/2d/3d, Linear or BatchNorm module used once in the model. Raises
    :class:`ConfigError` naming the prunable layers when it is missing or of another type.
    """
    modules = dict(model.named_modules())
    uses = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    prunable = [n for n, m in modules.items() if isinstance(m, PRUNABLE) and uses[id(m)] == 1]
    declared = [f"{n}.{m.feature_layer}".lstrip(".") for n, m in modules.items() if getattr(m, "feature_layer", None)]
    if layer is None and declared:
        layer = declared[-1]
    if layer is None:
        convs = [n for n in prunable if isinstance(modules[n], nn.Conv2d)]
        if not convs:
            raise ConfigError(
                "the model has no Conv2d layer to prune; name one with layer= "
                f"(prunable layers: {', '.join(prunable) or 'none'})"
            )
        layer = convs[-1]
    if layer not in prunable:
        shown = ", ".join(prunable[-12:]) or "none"
        problem = "is not in the model" if layer not in modules else "is not a prunable layer used once"
        raise ConfigError(f"layer {layer!r} {problem}; prunable layers (last 12): {shown}")
    channels = _width(modules[layer])
    parent_name, _, own = layer.rpartition(".")
    parent = modules[parent_name]
    chain: list[str] = []
    if isinstance(parent, nn.Sequential):
        names = [n for n, _ in parent.named_children()]
        for name in names[names.index(own) + 1 :]:
            child = parent.get_submodule(name)
            if not isinstance(child, ZERO_PRESERVING) or uses[id(child)] != 1:
                break
            if isinstance(child, _BatchNorm) and child.num_features != channels:
                break
            chain.append(f"{parent_name}.{name}" if parent_name else name)
    relu = not chain and own in getattr(parent, "relu_after", ())
    return ChannelSite(layer, tuple(chain), channels, relu)


def _index(pruned: torch.Tensor | list[int], channels: int) -> torch.Tensor:
    idx = torch.as_tensor(pruned, dtype=torch.long).flatten()
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= channels):
        raise ConfigError(f"channel indices must lie in 0..{channels - 1}, got {idx.tolist()}")
    return idx


def keep_vector(pruned: torch.Tensor | list[int], channels: int) -> torch.Tensor:
    """Float (channels,): 0 for the pruned channels, 1 for the others."""
    keep = torch.ones(channels)
    keep[_index(pruned, channels)] = 0.0
    return keep


def apply_keep(output: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``output`` (N, C, ...) times ``keep`` (C,) broadcast over dimension 1."""
    return output * keep.to(output.device, output.dtype).view(1, -1, *([1] * (output.ndim - 2)))


class ChannelMask:
    """Zero the channels ``pruned`` of ``site`` with a forward hook on the site's output module.

    A context manager (``with ChannelMask(model, site, pruned): ...``); ``attach()``/``detach()`` do the same by
    hand. The gradient through a zeroed channel is 0, so training under the mask leaves pruned channels pruned.
    """

    def __init__(self, model: nn.Module, site: ChannelSite, pruned: torch.Tensor | list[int]) -> None:
        self.module = model.get_submodule(site.output)
        self.keep = keep_vector(pruned, site.channels)
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return apply_keep(output, self.keep)

    def attach(self) -> ChannelMask:
        if self._handle is None:
            self._handle = self.module.register_forward_hook(self._hook)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> ChannelMask:
        return self.attach()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.detach()


@torch.no_grad()
def bake_pruning(model: nn.Module, site: ChannelSite, pruned: torch.Tensor | list[int]) -> nn.Module:
    """Zero channels ``pruned`` of ``site`` in the weights of ``model`` (in place; returns it).

    The layer's weight rows and bias entries become 0; every BatchNorm of the chain gets weight, bias and running
    mean 0 for those channels, so its output is 0 whatever its input. The architecture does not change, so the
    state dict still loads into ``build_model``.
    """
    idx = _index(pruned, site.channels)
    for name in (site.layer, *site.chain):
        module = model.get_submodule(name)
        if isinstance(module, _BatchNorm):
            if module.running_mean is not None:
                module.running_mean[idx] = 0.0
        elif not isinstance(module, PRUNABLE):
            continue
        for param in (getattr(module, "weight", None), getattr(module, "bias", None)):
            if param is not None:
                param[idx] = 0.0
    return model


@contextmanager
def evaluating(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``model`` in eval mode on ``device`` inside the block (parameters and buffers: an ONNX graph has only
    buffers); its mode and device are restored afterwards."""
    was_training = model.training
    try:
        with on_device(model, device):
            yield model.eval()
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class ChannelSummary:
    """Per-channel statistics of one module's output over a data set: ``mean``, ``std``, ``max``, each (C,).

    Statistics run over samples and spatial positions (all dimensions but 1).
    """

    mean: torch.Tensor
    std: torch.Tensor
    max: torch.Tensor


@torch.no_grad()
def channel_summary(
    model: nn.Module,
    x: torch.Tensor,
    module: str,
    *,
    relu: bool = False,
    batch_size: int = 512,
    device: str | torch.device = "auto",
) -> ChannelSummary:
    """:class:`ChannelSummary` of the output of ``model.get_submodule(module)`` on ``x`` (N, C, H, W), eval mode;
    ``relu``: of that output after a ReLU (the model applies one without a module)."""
    if len(x) == 0:
        raise ConfigError("need at least one input to measure channel activations")
    dev = resolve_device(device)
    stats: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        out = out.detach().clamp_min(0) if relu else out.detach()
        flat = out.double().transpose(0, 1).reshape(out.shape[1], -1)  # (C, N * H * W)
        parts = {
            "sum": flat.sum(1),
            "sq": (flat**2).sum(1),
            "max": flat.max(1).values,
            "n": torch.tensor(float(flat.shape[1]), dtype=torch.float64),
        }
        for k, v in parts.items():
            v = v.cpu()
            stats[k] = v if k not in stats else (torch.maximum(stats[k], v) if k == "max" else stats[k] + v)

    handle = model.get_submodule(module).register_forward_hook(hook)
    try:
        with evaluating(model, dev):
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size].to(dev))
    finally:
        handle.remove()
    mean = stats["sum"] / stats["n"]
    var = (stats["sq"] / stats["n"] - mean**2).clamp_min(0)
    return ChannelSummary(mean.float(), var.sqrt().float(), stats["max"].float())


def channel_means(model: nn.Module, x: torch.Tensor, site: ChannelSite, **kwargs) -> torch.Tensor:
    """Mean activation (C,) of each channel of ``site`` over ``x`` (N, C, H, W): over samples and positions."""
    return channel_summary(model, x, site.output, relu=site.relu, **kwargs).mean


def prune_count_within_drop(counts: list[int], accuracies: list[float], max_drop: float) -> int:
    """The stop rule of Fine-Pruning: walk ``counts`` (increasing, starting at 0) and return the last count before
    accuracy first falls more than ``max_drop`` below ``accuracies[0]`` (the unpruned accuracy)."""
    if not counts or counts[0] != 0 or len(counts) != len(accuracies):
        raise ValueError("counts must start at 0 and match accuracies")
    chosen = 0
    for k, acc in zip(counts, accuracies, strict=True):
        if acc < accuracies[0] - max_drop:
            break
        chosen = k
    return chosen
