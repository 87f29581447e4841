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


@pytest.fixture()
def register_for_test():
    """``register(registry, name, obj)`` registers a test-only method for one test; it is removed afterwards, so
    the contract tests, which run over every registered method, never see it."""
    added = []

    def register(registry, name: str, obj):
        registry.register(name)(obj)
        added.append((registry, name))
        return obj

    yield register
    for registry, name in reversed(added):
        registry.unregister(name)
