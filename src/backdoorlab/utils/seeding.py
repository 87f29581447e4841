"""Explicit randomness: every random choice takes a seed or a ``torch.Generator``."""

from __future__ import annotations

import random

import numpy as np
import torch


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (for code we do not control, e.g. weight init)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
