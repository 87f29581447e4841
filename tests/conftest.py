"""Shared fixtures: tiny data and fast training so the suite stays quick on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from backdoorlab.data import Dataset, load_dataset
from backdoorlab.models import TrainingConfig


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """scikit-learn's 8x8 digits: 1,257 train / 180 val / 360 test."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def fast_training() -> TrainingConfig:
    return TrainingConfig(epochs=8, batch_size=64, lr=3e-3, augment_shift=0)


@pytest.fixture()
def images() -> torch.Tensor:
    """A batch (4, 3, 10, 12) of random pixels in [0, 1]."""
    return torch.rand(4, 3, 10, 12, generator=torch.Generator().manual_seed(0))
