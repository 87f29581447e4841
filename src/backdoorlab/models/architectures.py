"""Architectures by name. Every model starts with a :class:`Normalize` layer, so callers feed [0, 1] pixels."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

NetBuilder = Callable[[tuple[int, int, int], int], nn.Module]
MODELS: Registry[NetBuilder] = Registry("model")


class Normalize(nn.Module):
    """(x - mean) / std per channel; the model's first layer, so every attack and defense sees [0, 1] pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _flat_size(features: nn.Module, input_shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).flatten(1).shape[1])


@MODELS.register("badnet_cnn")
def badnet_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The BadNets MNIST network: conv 16@5x5, avg-pool 2, conv 32@5x5, avg-pool 2, fc 512, fc K (ReLU between).

    On 28x28 input the flattened size is 512, as in the paper. Inputs smaller than 20 pixels (e.g. 8x8
    digits) get padding 2 on both convolutions so the network still fits; that is our departure.
    """
    c, h, w = input_shape
    pad = 0 if min(h, w) >= 20 else 2
    features = nn.Sequential(
        nn.Conv2d(c, 16, 5, padding=pad),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 5, padding=pad),
        nn.ReLU(),
        nn.AvgPool2d(2),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, num_classes))


@MODELS.register("carlini_mnist")
def carlini_mnist(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Carlini and Wagner's MNIST network (S&P 2017), the "carlini" model of the Feature Squeezing study.

    conv 32@3x3, conv 32@3x3, max-pool 2, conv 64@3x3, conv 64@3x3, max-pool 2 (no padding, ReLU after each conv),
    fc 200, dropout 0.5, fc 200, fc K. About 0.31M parameters at 28x28 and K = 10. Needs inputs of at least 12x12.
    """
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 32, 3),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(
        features,
        nn.Flatten(),
        nn.Linear(flat, 200),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, num_classes),
    )


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@MODELS.register("cnn_small")
def cnn_small(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A CPU-friendly VGG-style net for 32x32 colour images (about 0.8M parameters at K=10).

    Three blocks of two 3x3 conv + BatchNorm + ReLU (32, 64, 128 channels), each followed by 2x2 max-pool,
    then adaptive average pooling to 4x4, fc 256 with dropout 0.3, fc K. Works for any input size >= 8.
    """
    c = input_shape[0]
    features = nn.Sequential(
        *_conv_bn(c, 32),
        *_conv_bn(32, 32),
        nn.MaxPool2d(2),
        *_conv_bn(32, 64),
        *_conv_bn(64, 64),
        nn.MaxPool2d(2),
        *_conv_bn(64, 128),
        *_conv_bn(128, 128),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(4),
    )
    return nn.Sequential(
        features, nn.Flatten(), nn.Linear(128 * 16, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, num_classes)
    )


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): BN-ReLU-conv-BN-ReLU-conv plus shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """PreAct-ResNet-18 (the benchmark model of BackdoorBench), 3x3 stem for 32x32 inputs; meant for GPUs.

    ``widths`` are the channels of the four stages (two blocks each); smaller ones make the same network in
    miniature (tests). The last neurons are ``relu(bn(.))`` (nothing follows the last block's addition), which
    ``feature_layer`` / ``relu_after`` tell the pruning defenses (:mod:`backdoorlab.models.channels`).
    """

    feature_layer: ClassVar[str] = "bn"
    relu_after: ClassVar[tuple[str, ...]] = ("bn",)

    def __init__(
        self, in_channels: int, num_classes: int, widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        c_in = widths[0]
        for c_out, stride in zip(widths, (1, 2, 2, 2), strict=True):
            layers += [PreActBlock(c_in, c_out, stride), PreActBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c_in)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(self.pool(out).flatten(1))


@MODELS.register("preact_resnet18")
def preact_resnet18(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """PreAct-ResNet-18 (about 11M parameters)."""
    return PreActResNet18(input_shape[0], num_classes)


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    seed: int | None = None,
) -> nn.Sequential:
    """A model ``Sequential(normalize, net)`` taking (N, C, H, W) pixels in [0, 1] and giving (N, K) logits.

    ``mean``/``std`` default to 0/1 per channel (no normalization). With ``seed``, the initial weights are
    drawn from a generator seeded with it (the global RNG is left as it was).
    """
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    builder = MODELS.get(name)
    if seed is None:
        net = builder(shape, num_classes)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = builder(shape, num_classes)
    c = shape[0]
    mean = tuple(mean) if mean is not None else (0.0,) * c
    std = tuple(std) if std is not None else (1.0,) * c
    if len(mean) != c or len(std) != c:
        raise ConfigError(f"mean and std need {c} values (one per channel), got {len(mean)} and {len(std)}")
    return nn.Sequential(OrderedDict(normalize=Normalize(mean, std), net=net))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
