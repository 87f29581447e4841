"""``speech_cnn``: a small keyword-spotting CNN on a log-mel front end, for fixed-length 8 kHz waveforms.

Input (N, 1, 1, L) in [0, 1] (:mod:`backdoorlab.data.audio`), output (N, K) logits. The Fine-Pruning paper's
speech model is an AlexNet-like CNN on spectrograms of the Pannous spoken digits (docs/methods.md §7, from memory);
ours keeps the idea (spectrogram + conv layers + fully connected) at a size a 2-core CPU trains in a minute:

    LogMel(8 kHz, n_fft 256, hop 128, 40 mels)  -> (1, 40, L // 128 + 1)
    BatchNorm(1)                                   (feature scaling learned from the data)
    conv 5x5 stride 2, 16 -> BatchNorm -> ReLU     (20 x 32 for a 1-s clip)
    conv 3x3, 32 -> BatchNorm -> ReLU -> max-pool 2   (10 x 16)
    conv 3x3, 64 -> BatchNorm -> ReLU -> max-pool 2   (5 x 8)
    conv 3x3, 64 -> BatchNorm -> ReLU              (the last conv layer: what Fine-Pruning prunes)
    global average pool -> fc 128 -> ReLU -> dropout 0.3 -> fc K

About 75k parameters and 4M multiply-adds per 1-s clip. The strided first layer keeps the large early feature
maps small (on a CPU their element-wise layers cost more than the convolutions). The hidden fully connected
layer matters for all-to-all backdoors (the paper's speech attack, digit i -> i + 1): after the global pool a
linear classifier only adds up evidence from the whole clip, so a burst that sits apart from the word can push
every clip towards one label but cannot form "burst and digit i". Without it a 12-epoch all-to-all BadNets run
on FSDD reached 1% ASR, with it 24% (tone at 0.9 s) and 64% (tone at 0 s, 15% poisoned): all-to-all stays far
harder to plant than all-to-one at this budget.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .architectures import MODELS, _conv_bn
from .audio_frontend import LogMel

SPEECH_SAMPLE_RATE = 8000


@MODELS.register("speech_cnn")
def speech_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The speech CNN above for waveforms of shape (1, 1, L) sampled at 8 kHz, L >= 1024 (128 ms)."""
    c, h, length = input_shape
    if c != 1 or h != 1:
        raise ConfigError(
            f"speech_cnn takes mono waveforms of shape (1, 1, L), got {tuple(input_shape)}; "
            "load audio with an audio dataset such as fsdd"
        )
    if length < 1024:
        raise ConfigError(f"speech_cnn needs waveforms of at least 1024 samples, got {length}")
    return nn.Sequential(
        LogMel(SPEECH_SAMPLE_RATE),
        nn.BatchNorm2d(1),
        nn.Conv2d(1, 16, 5, stride=2, padding=2, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        *_conv_bn(16, 32),
        nn.MaxPool2d(2),
        *_conv_bn(32, 64),
        nn.MaxPool2d(2),
        *_conv_bn(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(128, num_classes),
    )
