"""The input-aware dynamic trigger (Nguyen & Tran, NeurIPS 2020): a pattern network and a mask network, each an
encoder-decoder of conv blocks, give every input its own pattern and mask, ``x' = x + (G(x) - x) * M(x)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import Trigger, register_trigger_type

EPSILON = 1e-7  # the paper's: keeps tanh(.) / (2 + eps) + 1/2 strictly inside (0, 1)


def default_shape(channels: int, height: int, width: int) -> tuple[int, int]:
    """The paper's generator for an image: (16 channels, 2 down/up steps) for grey, (32, 3) for colour; the steps
    are reduced until 2**steps divides both sides (8x8 digits keep 2, a 30x30 image gets 1, an odd side 0)."""
    width0, steps = (16, 2) if channels == 1 else (32, 3)
    while steps > 0 and (height % 2**steps or width % 2**steps):
        steps -= 1
    return width0, steps


def _block(c_in: int, c_out: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out, momentum=0.05)]
    return [*layers, nn.ReLU(inplace=True)] if relu else layers


def generator_net(in_channels: int, out_channels: int, width: int, steps: int) -> nn.Sequential:
    """The paper's encoder-decoder (its ``Generator`` without the final squashing): ``steps`` times two 3x3 conv
    blocks (conv, BatchNorm, ReLU) and a 2x2 max-pool with the width doubling after each step but the last, a middle
    block, then ``steps`` times a bilinear x2 upsampling and two blocks halving the width, the last block giving
    ``out_channels`` without ReLU. Maps (N, in_channels, H, W) to (N, out_channels, H, W) raw scores."""
    if width < 1 or steps < 0:
        raise ConfigError(f"generator width must be >= 1 and steps >= 0, got {width} and {steps}")
    layers: list[nn.Module] = []
    c_in, c = in_channels, width
    for step in range(steps):
        layers += [*_block(c_in, c), *_block(c, c), nn.MaxPool2d(2)]
        if step < steps - 1:
            c_in, c = c, 2 * c
    layers += _block(c if steps else in_channels, c)  # the middle block
    for step in range(steps):
        last = step == steps - 1
        c_out = out_channels if last else c // 2
        layers += [nn.Upsample(scale_factor=2, mode="bilinear"), *_block(c, c), *_block(c, c_out, relu=not last)]
        c = c_out
    if steps == 0:
        layers += _block(c, out_channels, relu=False)
    return nn.Sequential(*layers)


def pattern_of(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pattern (N, C, H, W) in (0, 1) of each input: ``tanh(net(x)) / (2 + eps) + 1/2``."""
    return torch.tanh(net(x)) / (2 + EPSILON) + 0.5


def mask_of(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mask (N, 1, H, W) in (0, 1) of each input, the paper's soft threshold ``tanh(20 m - 10) / (2 + eps) +
    1/2`` of the mask network's score ``m`` (near 0 below 0.4, near 1 above 0.6)."""
    return torch.tanh(net(x) * 20 - 10) / (2 + EPSILON) + 0.5


def diversity_loss(x1: torch.Tensor, x2: torch.Tensor, out1: torch.Tensor, out2: torch.Tensor) -> torch.Tensor:
    """The paper's diversity loss: mean over pairs of ``rms(x1 - x2) / (rms(out1 - out2) + eps)``; small when
    different inputs get different patterns (or masks). Departure: ``rms(out1 - out2)`` is computed as
    ``sqrt(mse + eps^2)``, the same value to within 1e-7, with a finite gradient where the two outputs are equal."""
    d_in = (x1 - x2).pow(2).mean(dim=(1, 2, 3)).sqrt()
    # eps^2 under the root: equal outputs (saturated masks) would give sqrt'(0) = inf and NaN weights
    d_out = ((out1 - out2).pow(2).mean(dim=(1, 2, 3)) + EPSILON**2).sqrt()
    return (d_in / (d_out + EPSILON)).mean()


@register_trigger_type
@dataclass(eq=False)
class InputAwareTrigger(Trigger):
    """``x' = x + (G(x) - x) * M(x)``, clamped to [0, 1]: each input gets the pattern and mask its own pixels
    produce. ``apply`` runs both networks in eval mode without gradients, batched; :meth:`stamp` is the
    differentiable form used while the generator trains (the pattern and mask may come from other inputs).

    Attributes:
        generator: the pattern network, :func:`generator_net` (C -> C).
        mask_net: the mask network, :func:`generator_net` (C -> 1).
        shape: (channels, height, width, generator width, steps), to rebuild the networks from a saved state.
        params: the attack's parameters, for ``describe()``.
    """

    generator: nn.Module
    mask_net: nn.Module
    shape: tuple[int, int, int, int, int]
    kind: str = "input_aware"
    params: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 512

    @classmethod
    def new(cls, image_shape, seed: int, **params: Any) -> InputAwareTrigger:
        """Untrained networks for images of ``image_shape`` (C, H, W), weights drawn from ``seed`` (the global RNG
        is left as it was)."""
        c, h, w = (int(v) for v in image_shape)
        width, steps = default_shape(c, h, w)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator, mask_net = generator_net(c, c, width, steps), generator_net(c, 1, width, steps)
        return cls(generator, mask_net, (c, h, w, width, steps), params=dict(params))

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.shape[:3]):
            raise ConfigError(
                f"input-aware trigger made for {tuple(self.shape[:3])} images cannot be applied to {tuple(x.shape)}"
            )

    def stamp(self, x: torch.Tensor, source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(``x`` stamped with the pattern and mask of ``source`` (default ``x``), that pattern): differentiable in
        the networks' weights, in their current train/eval mode."""
        source = x if source is None else source
        pattern = pattern_of(self.generator, source)
        mask = mask_of(self.mask_net, source)
        return (x + (pattern - x) * mask).clamp(0, 1), pattern

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_from(x, x)

    @torch.no_grad()
    def apply_from(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``x`` stamped with the patterns and masks of ``source`` (same shape), in eval mode, without gradients,
        batched; with ``source`` another input's image this is the paper's cross-trigger input."""
        self._check(x)
        if source.shape != x.shape:
            raise ConfigError(f"source images {tuple(source.shape)} do not match the inputs {tuple(x.shape)}")
        self.generator.eval().to(x.device)
        self.mask_net.eval().to(x.device)
        step = self.batch_size
        outs = [self.stamp(x[i : i + step], source[i : i + step])[0] for i in range(0, len(x), step)]
        return torch.cat(outs) if outs else x.clone()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}

    def to_state(self) -> dict[str, Any]:
        cpu = lambda net: {k: v.detach().cpu() for k, v in net.state_dict().items()}  # noqa: E731
        return {
            "type": type(self).__name__,
            "shape": list(self.shape),
            "generator": cpu(self.generator),
            "mask_net": cpu(self.mask_net),
            "kind": self.kind,
            "params": self.params,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> InputAwareTrigger:
        c, h, w, width, steps = (int(v) for v in state["shape"])
        generator, mask_net = generator_net(c, c, width, steps), generator_net(c, 1, width, steps)
        generator.load_state_dict(state["generator"])
        mask_net.load_state_dict(state["mask_net"])
        return cls(
            generator.eval(),
            mask_net.eval(),
            (c, h, w, width, steps),
            kind=state["kind"],
            params=dict(state["params"]),
        )
