"""A tiny classifier on the 8x8 digits for the adversarial-example tests (trains in well under a second)."""

from __future__ import annotations

import torch
from torch import nn

from backdoorlab.data import Dataset
from backdoorlab.models import Normalize


def tiny_digits_model(ds: Dataset, seed: int = 0, steps: int = 150) -> nn.Module:
    """Normalize + a 64-32-10 MLP trained full-batch with Adam, about 95% on the digits test split; pixels in
    [0, 1] in, logits out."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        Normalize(ds.mean, ds.std), nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, ds.num_classes)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(ds.train.x), ds.train.y).backward()
        opt.step()
    return model.eval()
