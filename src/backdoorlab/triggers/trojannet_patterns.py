"""TrojanNet's trigger family (Tang et al., KDD 2020; docs/methods.md section 3).

A trigger is a 4x4 patch of binary cells with exactly 5 cells black (0) and 11 white (1). The patterns are
numbered in the order of ``itertools.combinations(range(16), 5)`` over the row-major cells (the reference
code's order), which gives C(16, 5) = 4368 of them; pattern i is the trigger of class i. In colour images the
same 0/1 value goes to every channel, so the channel mean at the patch (what the TrojanNet MLP reads) is
exactly the pattern.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from .base import MaskedTrigger, Trigger, register_trigger_type
from .patches import Position, _top_left

GRID = 4  # the patch is GRID x GRID cells
BLACK_CELLS = 5
NUM_PATTERNS = math.comb(GRID * GRID, BLACK_CELLS)  # 4368


def trojannet_patterns(ids: Sequence[int] | None = None) -> torch.Tensor:
    """Patterns (M, 4, 4) float32 of 0/1: the given pattern numbers (default all 4368), in the given order."""
    ids = list(range(NUM_PATTERNS)) if ids is None else [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < NUM_PATTERNS]
    if bad:
        raise ConfigError(f"TrojanNet pattern numbers must be in 0..{NUM_PATTERNS - 1}, got {bad[:5]}")
    wanted = set(ids)
    black: dict[int, tuple[int, ...]] = {}
    for number, cells in enumerate(itertools.combinations(range(GRID * GRID), BLACK_CELLS)):
        if number > max(wanted, default=-1):
            break
        if number in wanted:
            black[number] = cells
    out = torch.ones(len(ids), GRID * GRID)
    for row, i in enumerate(ids):
        out[row, list(black[i])] = 0.0
    return out.view(len(ids), GRID, GRID)


@register_trigger_type
@dataclass(eq=False)
class TrojanNetTrigger(Trigger):
    """The TrojanNet triggers of one attack: a family of 4x4 patterns at one place, one of them active.

    ``apply`` stamps the active pattern (``index``): every cell of the 4x4 patch is overwritten (black cells
    included), on every channel. :meth:`select` gives the trigger of another member of the family.

    Attributes:
        pattern_ids: the family's pattern numbers (pattern i is the trigger of class i in TrojanNet).
        image_shape: (C, H, W) of the images it applies to.
        origin: (row, col) of the patch's top-left pixel.
        index: which member of ``pattern_ids`` ``apply`` stamps (default 0).
    """

    pattern_ids: tuple[int, ...]
    image_shape: tuple[int, int, int]
    origin: tuple[int, int]
    index: int = 0
    kind: str = "trojannet"
    _stamp: MaskedTrigger = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.pattern_ids = tuple(int(i) for i in self.pattern_ids)
        self.image_shape = tuple(int(v) for v in self.image_shape)  # type: ignore[assignment]
        self.origin = (int(self.origin[0]), int(self.origin[1]))
        if not self.pattern_ids:
            raise ConfigError("a TrojanNet trigger needs at least one pattern")
        if not 0 <= self.index < len(self.pattern_ids):
            raise ConfigError(f"trigger index {self.index} is outside 0..{len(self.pattern_ids) - 1}")
        c, h, w = self.image_shape
        row, col = _top_left(self.origin, (GRID, GRID), (h, w), 0)
        mask = torch.zeros(1, h, w)
        mask[0, row : row + GRID, col : col + GRID] = 1.0
        pattern = torch.zeros(c, h, w)
        pattern[:, row : row + GRID, col : col + GRID] = trojannet_patterns([self.pattern_ids[self.index]])[0]
        self._stamp = MaskedTrigger(mask, pattern, kind=self.kind)

    @property
    def num_triggers(self) -> int:
        return len(self.pattern_ids)

    @property
    def mask(self) -> torch.Tensor:
        return self._stamp.mask

    @property
    def pattern(self) -> torch.Tensor:
        """The active 4x4 pattern (4, 4) of 0/1."""
        return trojannet_patterns([self.pattern_ids[self.index]])[0]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self._stamp.apply(x)

    def select(self, index: int) -> TrojanNetTrigger:
        """The same family with member ``index`` active."""
        return TrojanNetTrigger(self.pattern_ids, self.image_shape, self.origin, index, self.kind)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "triggers": len(self.pattern_ids),
            "index": self.index,
            "pattern_id": self.pattern_ids[self.index],
            "origin": list(self.origin),
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "pattern_ids": list(self.pattern_ids),
            "image_shape": list(self.image_shape),
            "origin": list(self.origin),
            "index": self.index,
            "kind": self.kind,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrojanNetTrigger:
        return cls(
            tuple(state["pattern_ids"]),
            tuple(state["image_shape"]),
            tuple(state["origin"]),
            int(state["index"]),
            state.get("kind", "trojannet"),
        )


def trojannet_trigger(
    image_shape: Sequence[int],
    pattern_ids: Sequence[int],
    *,
    position: Position = "bottom-right",
    margin: int = 1,
    index: int = 0,
) -> TrojanNetTrigger:
    """The TrojanNet trigger family ``pattern_ids`` with its 4x4 patch at a corner (``margin`` pixels in) or at
    an explicit [row, col]; member ``index`` active."""
    c, h, w = (int(v) for v in image_shape)
    origin = _top_left(position, (GRID, GRID), (h, w), margin)
    return TrojanNetTrigger(tuple(pattern_ids), (c, h, w), origin, index)
