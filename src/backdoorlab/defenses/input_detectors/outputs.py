"""Model outputs as probabilities, and their Shannon entropy, computed without NaN.

Input detectors read a model's class probabilities. Models built by :func:`backdoorlab.models.build_model`
output logits; a model that ends in ``LogSoftmax`` outputs log-probabilities, which the logits path handles
exactly (``log_softmax(log p) = log p`` when ``p`` sums to 1); a model that ends in ``Softmax`` outputs
probabilities and needs ``kind="probabilities"``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ...errors import ConfigError
from ...models import predict_logits

OutputKind = Literal["logits", "probabilities"]


def log_probabilities(outputs: torch.Tensor, kind: OutputKind = "logits") -> torch.Tensor:
    """Log class probabilities (N, K) from model ``outputs`` (N, K).

    ``logits`` (also right for log-probabilities): ``log_softmax``, finite for finite logits and ``-inf`` where a
    log-probability output is ``-inf``. ``probabilities``: their logarithm, ``-inf`` where a probability is 0.
    """
    if outputs.ndim != 2:
        raise ConfigError(f"the model must output one score per class, shape (N, K); got shape {tuple(outputs.shape)}")
    if kind == "probabilities":
        return outputs.clamp_min(0).log()
    return torch.log_softmax(outputs, dim=1)


def entropy_bits(log_p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits (N,) of each row of log-probabilities ``log_p`` (N, K); in [0, log2 K].

    ``0 * log 0`` counts as 0, so a probability that is exactly 0 (``log_p = -inf``) gives no NaN.
    """
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=1) / math.log(2)


def model_log_probabilities(
    model: nn.Module, x: torch.Tensor, kind: OutputKind, *, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Log class probabilities (N, K) of ``model`` on images ``x`` (N, C, H, W), batched, on the CPU.

    The images go in channels-last layout: same values, and PyTorch's CPU convolutions and pooling ran 5-30%
    faster on it in our measurements with ``badnet_cnn``; a model without convolutions just reads a copy.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    return log_probabilities(predict_logits(model, x, batch_size=batch_size, device=device), kind)
