"""Triggers: plain data plus a pure function ``x -> x'`` on a batch (N, C, H, W) in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError


class Trigger:
    """Base class: ``apply(x)`` stamps the trigger on a batch; ``mask`` is the (1, H, W) area it touches, or None."""

    kind: str = "trigger"

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x)

    @property
    def mask(self) -> torch.Tensor | None:
        return None

    def describe(self) -> dict[str, Any]:
        """Parameters as plain data (for configs, cache keys and reports)."""
        return {"kind": self.kind}

    def to_state(self) -> dict[str, Any]:
        """Tensors and plain data only, so the state loads with ``torch.load(weights_only=True)``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")


TRIGGER_TYPES: dict[str, type[Trigger]] = {}


def register_trigger_type(cls: type[Trigger]) -> type[Trigger]:
    """Make ``cls`` loadable by :func:`trigger_from_state` (its ``from_state`` classmethod rebuilds it)."""
    TRIGGER_TYPES[cls.__name__] = cls
    return cls


def trigger_from_state(state: dict[str, Any]) -> Trigger:
    """Rebuild a trigger saved with ``to_state()``."""
    cls = TRIGGER_TYPES.get(state.get("type", ""))
    if cls is None:
        raise ConfigError(f"unknown trigger type {state.get('type')!r} in saved state")
    return cls.from_state(state)  # type: ignore[attr-defined]


@register_trigger_type
@dataclass(eq=False)
class MaskedTrigger(Trigger):
    """``x' = (1 - mask) * x + mask * pattern``: patches (mask 0/1) and blends (mask = alpha) alike.

    Attributes:
        mask: (1, H, W) in [0, 1], the weight of the pattern at each pixel.
        pattern: (C, H, W) in [0, 1], or (1, H, W) to be used on every channel.
        kind: a name for reports (``square``, ``pixel``, ``pattern``, ``blend``).
        params: the constructor's arguments, for ``describe()``.
    """

    mask_: torch.Tensor
    pattern: torch.Tensor
    kind: str = "masked"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mask_.ndim != 3 or self.mask_.shape[0] != 1:
            raise ConfigError(f"trigger mask must be (1, H, W), got {tuple(self.mask_.shape)}")
        if self.pattern.ndim != 3 or self.pattern.shape[1:] != self.mask_.shape[1:]:
            raise ConfigError(
                f"trigger pattern {tuple(self.pattern.shape)} does not match mask {tuple(self.mask_.shape)}"
            )
        self.mask_ = self.mask_.float().clamp(0, 1)
        self.pattern = self.pattern.float().clamp(0, 1)

    @property
    def mask(self) -> torch.Tensor:
        return self.mask_

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-2:] != self.mask_.shape[-2:]:
            raise ConfigError(
                f"trigger made for {tuple(self.mask_.shape[-2:])} images cannot be applied to shape {tuple(x.shape)}"
            )
        mask = self.mask_.to(x.device, x.dtype)
        pattern = self.pattern.to(x.device, x.dtype)
        return ((1 - mask) * x + mask * pattern).clamp(0, 1)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}

    def to_state(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "mask": self.mask_,
            "pattern": self.pattern,
            "kind": self.kind,
            "params": self.params,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MaskedTrigger:
        return cls(state["mask"], state["pattern"], kind=state["kind"], params=dict(state["params"]))
