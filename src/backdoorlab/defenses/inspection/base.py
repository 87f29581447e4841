"""The inspector contract: look at one model offline and decide whether it is backdoored, and at which label.

An :class:`Inspector` reverse-engineers, for every candidate target label, the smallest trigger that sends
inputs to that label (the per-label *statistic*), then runs a MAD outlier test on those sizes
(:mod:`.verdict`). Subclasses implement :meth:`Inspector._reverse` and may choose the outlier statistic.

Images and triggers live in [0, 1] pixel space *before* the model's normalization layer, the same space the
attacks stamp their triggers in (methods.md section 1: a mismatch is the classic way Neural Cleanse fails).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from ...data import Split
from ...errors import ConfigError
from ...utils.device import resolve_device
from ..base import Defense, DefenseKind
from .verdict import DEFAULT_CUTOFF, Verdict, anomaly_index, flagged_labels

TANH_EPS = 1e-7  # Keras epsilon in the reference's tanh parametrisation


def to_unit(w: torch.Tensor) -> torch.Tensor:
    """The reference's box constraint: ``tanh(w) / (2 - eps) + 0.5`` maps any real to (0, 1)."""
    return torch.tanh(w) / (2 - TANH_EPS) + 0.5


def from_unit(v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_unit` for values in [0, 1] (clipped just inside the open interval)."""
    return torch.atanh(((v - 0.5) * (2 - TANH_EPS)).clamp(-1 + 1e-6, 1 - 1e-6))


@dataclass
class Reversal:
    """What an inspector's reverse engineering returns before the outlier test.

    ``statistic`` (K,) per-label trigger size; ``masks`` (K, 1, H, W) / ``patterns`` (K, C, H, W) in [0, 1] or
    None; ``examples`` (K, n, C, H, W) stamped inputs or None; ``details`` anything else worth keeping.
    """

    statistic: torch.Tensor
    masks: torch.Tensor | None = None
    patterns: torch.Tensor | None = None
    examples: torch.Tensor | None = None
    details: dict[str, Any] = field(default_factory=dict)


def frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device``, in eval mode, with no parameter gradients (the input is never changed)."""
    return copy.deepcopy(model).to(device).eval().requires_grad_(False)


def count_classes(model: nn.Module, input_shape: tuple[int, int, int], device: torch.device) -> int:
    """The number of outputs of ``model`` on one (1, C, H, W) input; ConfigError when the shape does not fit."""
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape, device=device))
    except RuntimeError as err:
        raise ConfigError(
            f"the model does not accept inputs of shape {tuple(input_shape)} ({str(err).splitlines()[0]})"
        ) from None
    if out.ndim != 2 or out.shape[1] < 3:
        raise ConfigError(f"inspection needs a classifier with at least 3 outputs, got output shape {tuple(out.shape)}")
    return int(out.shape[1])


def check_clean(clean: Split, what: str) -> None:
    """ConfigError unless ``clean`` holds at least 10 images in [0, 1]."""
    if len(clean) < 10:
        raise ConfigError(f"{what} needs at least 10 clean images, got {len(clean)}")
    if float(clean.x.min()) < 0 or float(clean.x.max()) > 1:
        raise ConfigError(f"{what}: clean images must be pixels in [0, 1] (normalization lives inside the model)")


class Inspector(Defense):
    """Base of model inspectors. ``inspect(model, clean)`` returns a :class:`Verdict`. The default cutoff 2 is both
    papers'."""

    kind: ClassVar[DefenseKind] = "inspector"
    statistic_name: ClassVar[str] = "trigger size"

    cutoff: float = Field(
        DEFAULT_CUTOFF, gt=0, description="labels below the median whose anomaly index exceeds this are flagged"
    )

    @property
    def method_name(self) -> str:
        """The name shown in verdicts and reports (DeepInspect-lite differs from the registered name)."""
        return self.name

    @property
    def needs_clean_data(self) -> bool:
        """Whether the pixels of ``clean`` are used (False: only the input shape is, e.g. DeepInspect)."""
        return True

    def outlier_index(self, statistic: torch.Tensor) -> torch.Tensor:
        """(K,) anomaly index of the per-label statistic; Neural Cleanse's MAD index by default."""
        return anomaly_index(statistic)

    def _reverse(
        self,
        model: nn.Module,
        clean: Split | None,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        seed: int,
        device: torch.device,
        progress: bool | None,
    ) -> Reversal:
        """Per-label reverse engineering on a frozen copy of the model (subclasses)."""
        raise NotImplementedError

    def inspect(
        self,
        model: nn.Module,
        clean: Split | None,
        *,
        input_shape: tuple[int, int, int] | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool | None = None,
    ) -> Verdict:
        """Inspect ``model`` (taking (N, C, H, W) pixels in [0, 1]); ``model`` itself is not changed.

        Args:
            clean: clean labelled images for the defender (the ``val`` split), or None for methods that need
                none; then ``input_shape`` (C, H, W) must be given.
            seed: seeds every random choice (initial triggers, data order, noise).
        """
        if clean is None and self.needs_clean_data:
            raise ConfigError(f"{self.method_name} needs clean images; pass the defender's clean split")
        if clean is not None:
            check_clean(clean, self.method_name)
            input_shape = tuple(int(v) for v in clean.x.shape[1:])  # type: ignore[assignment]
        if input_shape is None or len(input_shape) != 3:
            raise ConfigError(f"{self.method_name} without clean data needs input_shape (C, H, W)")
        dev = resolve_device(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        frozen = frozen_copy(model, dev)
        num_classes = count_classes(frozen, input_shape, dev)
        result = self._reverse(
            frozen,
            clean if self.needs_clean_data else None,
            input_shape,
            num_classes,
            seed=seed,
            device=dev,
            progress=progress,
        )
        statistic = result.statistic.detach().double().cpu()
        index = self.outlier_index(statistic)
        return Verdict(
            method=self.method_name,
            statistic_name=self.statistic_name,
            statistic=statistic,
            anomaly_index=index,
            cutoff=self.cutoff,
            suspected=flagged_labels(statistic, index, self.cutoff),
            masks=result.masks,
            patterns=result.patterns,
            examples=result.examples,
            seconds=time.perf_counter() - start,
            details={**result.details, "cpu_seconds": time.process_time() - cpu_start},
        )
