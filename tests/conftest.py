"""Shared fixtures: tiny data and fast training so the suite stays quick on 2 CPU cores."""

from __future__ import annotations

import subprocess

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


@pytest.fixture(scope="session")
def postgres_server():
    """A throw-away PostgreSQL server for the session (:mod:`tests.postgres_server`); every test that needs it is
    skipped, with the reason, when none can be started (``make test`` installs Debian's package when it can)."""
    from .postgres_server import PostgresServer

    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        server.stop()
        pytest.skip(f"no PostgreSQL server could be started for the store tests: {err}")
    yield server
    server.stop()


@pytest.fixture()
def postgres_url(postgres_server) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    pytest.importorskip("psycopg", reason="the PostgreSQL store needs psycopg: pip install -e '.[postgres]'")
    return postgres_server.new_database()
