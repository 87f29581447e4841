"""Tiny trained models shared by the inspection tests (trained once per test process; about 4 s each)."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from backdoorlab.attacks import Backdoor, BadNets
from backdoorlab.data import Dataset, load_dataset
from backdoorlab.models import TrainingConfig, build_model, train_model

TARGET = 3
TRAINING = TrainingConfig(epochs=10, batch_size=64, lr=3e-3, augment_shift=0)


@lru_cache(maxsize=1)
def digits() -> Dataset:
    return load_dataset("digits")


@lru_cache(maxsize=1)
def backdoored_digits() -> Backdoor:
    """badnet_cnn on 8x8 digits with a 2x2 white square at the bottom-right, all-to-one -> 3."""
    return BadNets(size=2, target=TARGET).run(digits(), "badnet_cnn", TRAINING, seed=0, progress=False)


@lru_cache(maxsize=1)
def clean_digits():
    ds = digits()
    model = build_model("badnet_cnn", ds.input_shape, ds.num_classes, ds.mean, ds.std, seed=0)
    return train_model(model, ds.train.x, ds.train.y, TRAINING, seed=0, progress=False)


class PlantedBackdoor(nn.Module):
    """A clean model with a hard-wired backdoor: when the mean of ``patch`` (rows, cols slices) is bright, add
    ``strength`` to the ``target`` logit. A trigger we know exactly, without training a poisoned model."""

    def __init__(self, base: nn.Module, target: int, rows: slice, cols: slice, strength: float = 30.0) -> None:
        super().__init__()
        self.base, self.target, self.rows, self.cols, self.strength = base, target, rows, cols, strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(10 * (x[:, :, self.rows, self.cols].mean(dim=(1, 2, 3)) - 0.5))
        bump = torch.zeros(x.shape[0], self.base(x[:1]).shape[1], device=x.device)
        bump[:, self.target] = self.strength
        return self.base(x) + gate[:, None] * bump


@lru_cache(maxsize=1)
def planted_digits() -> PlantedBackdoor:
    """The clean digits model with a planted 2x2 trigger in the bottom-right corner (rows 6-7, cols 6-7) -> 3."""
    return PlantedBackdoor(clean_digits(), TARGET, slice(6, 8), slice(6, 8)).eval()
