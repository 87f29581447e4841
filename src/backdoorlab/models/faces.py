"""``face_cnn``: a small face-recognition CNN for grey 112x92 photos (the ORL / AT&T faces).

The Fine-Pruning paper attacks DeepID on YouTube Faces (1,283 people; docs/methods.md §7). ORL has 40 people and
8 photos each, so ours is a DeepID-like stack sized for it and for a 2-core CPU: a strided first layer brings
112x92 down to 56x46 (faces are still recognisable at that size), then

    conv 5x5 stride 2, 16 -> BatchNorm -> ReLU -> max-pool 2      (28x23)
    conv 3x3, 32 -> BatchNorm -> ReLU -> max-pool 2               (14x11)
    conv 3x3, 64 -> BatchNorm -> ReLU -> max-pool 2               (7x5)
    conv 3x3, 64 -> BatchNorm -> ReLU                             (the last conv layer: what Fine-Pruning prunes)
    flatten -> dropout 0.5 -> fc 128 (the identity feature, DeepID's 160) -> ReLU -> dropout 0.5 -> fc K

The flatten keeps where on the face each feature fired. About 0.35M parameters and 8M multiply-adds per photo.
Other sizes of at least 32x32 work too: an adaptive average pool brings the last feature map to 7x5 cells.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .architectures import MODELS, _conv_bn


@MODELS.register("face_cnn")
def face_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The face CNN above for (C, H, W) images with H, W >= 32 (ORL: 1x112x92)."""
    c, h, w = input_shape
    if min(h, w) < 32:
        raise ConfigError(f"face_cnn needs images of at least 32x32 pixels, got {h}x{w}")
    features = nn.Sequential(
        nn.Conv2d(c, 16, 5, stride=2, padding=2, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        *_conv_bn(16, 32),
        nn.MaxPool2d(2),
        *_conv_bn(32, 64),
        nn.MaxPool2d(2),
        *_conv_bn(64, 64),
        nn.AdaptiveAvgPool2d((7, 5)),
    )
    return nn.Sequential(
        features,
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(64 * 35, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )
