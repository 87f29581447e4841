"""The Trojan Detection Challenge 2022's MNIST network (``MNIST_Network`` in mmazeika/tdc-starter-kit ``utils.py``)."""

from __future__ import annotations

from torch import nn

from .architectures import MODELS, _flat_size


@MODELS.register("tdc_cnn")
def tdc_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """conv 16@3x3 (padding 1), conv 32@4x4 stride 2, conv 32@4x4 stride 2 (padding 1), each with BatchNorm and
    ReLU, then fc 128 with BatchNorm and ReLU, fc K: 227k parameters at 28x28 (7x7x32 features), 43k on the
    8x8 digits (2x2x32). TDC trains it with Adam, lr 1e-3, weight decay 1e-5. Needs inputs of at least 4x4."""
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 4, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(
        features, nn.Flatten(), nn.Linear(flat, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, num_classes)
    )
