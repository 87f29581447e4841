"""Deep Partition Aggregation with its certificate (Levine and Feizi, ICLR 2021).

The training set is split into ``partitions`` (k) disjoint parts by a hash of each sample's content, one base
network is trained per part, and the ensemble predicts the class with the most votes, ties going to the smaller
class index. Because a sample's part depends on its content alone (not its index, position or a random draw),
inserting or deleting one sample changes one part and so at most one vote. Theorem 1: the prediction c cannot
change under any ``rho`` insertions or deletions, with

    rho = floor((n_c - max_{c' != c} (n_{c'} + 1[c' < c])) / 2),

the indicator being the tie-break (a runner-up with a smaller index wins a tie, so it needs one vote less). A
poisoned sample that replaces a clean one is one deletion plus one insertion. Certified accuracy at radius r is
the fraction of test inputs classified correctly with rho >= r.

The hash is SHA-256 of the image's float32 bytes (ART uses the sum of pixel values, the paper its own hash of the
image); the label is not hashed, so relabelling a sample leaves it in its part. Base network i is trained by the
one recipe with seed ``seed + i`` (ours). A part that receives no sample is an error (choose fewer partitions).
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ...errors import ConfigError
from ...models import train_new_model
from ..base import DEFENSES
from .base import TrainingDefense

RADII = (0, 1, 2, 3, 5, 10, 15, 20, 25, 50, 100)


def content_partition(x: torch.Tensor, k: int) -> torch.Tensor:
    """Part (N,) int64 in [0, k) of each image of ``x`` (N, C, H, W): SHA-256 of its float32 bytes, mod k."""
    arr = x.detach().cpu().to(torch.float32).contiguous().numpy()
    digests = [int.from_bytes(hashlib.sha256(a.tobytes()).digest()[:8], "big") for a in arr]
    return torch.tensor([d % k for d in digests], dtype=torch.long)


def certify(votes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DPA's prediction and certified radius from vote counts (N, K) (integers).

    The prediction is the class with the most votes, the smallest index among ties; the radius (N,) int64 is
    floor((n_c - max_{c' != c}(n_{c'} + 1[c' < c])) / 2), never below 0 for the predicted class.
    """
    votes = votes.long()
    n, k = votes.shape
    pred = votes.argmax(dim=1)  # torch's argmax returns the first maximum: the smallest index wins a tie
    top = votes.gather(1, pred[:, None]).squeeze(1)
    handicap = (torch.arange(k)[None, :] < pred[:, None]).long()
    rivals = votes + handicap
    rivals[torch.arange(n), pred] = torch.iinfo(torch.long).min
    radius = torch.div(top - rivals.max(dim=1).values, 2, rounding_mode="floor")
    return pred, radius.clamp(min=0)


def certified_accuracy(pred: torch.Tensor, radius: torch.Tensor, y: torch.Tensor, r: int) -> float:
    """Fraction of inputs classified as ``y`` with a certified radius of at least ``r``."""
    return float(((pred == y) & (radius >= r)).double().mean()) if len(y) else float("nan")


def median_certified_radius(pred: torch.Tensor, radius: torch.Tensor, y: torch.Tensor) -> int:
    """The largest r at which certified accuracy is still at least 50% (-1 when even r = 0 is below 50%)."""
    ok = torch.sort(torch.where(pred == y, radius, torch.full_like(radius, -1)), descending=True).values
    return int(ok[(len(ok) - 1) // 2]) if len(ok) else -1


class PartitionEnsemble(nn.Module):
    """The k base networks; ``votes(x)`` (N, K) counts and ``forward`` returns the counts minus index / (2K),
    so that its argmax is DPA's prediction with the tie-break."""

    def __init__(self, members: list[nn.Module], num_classes: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.num_classes = num_classes

    def votes(self, x: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(len(x), self.num_classes)
        for member in self.members:
            counts += nn.functional.one_hot(member(x).argmax(dim=1), self.num_classes).float().cpu()
        return counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = self.votes(x)
        return counts - torch.arange(self.num_classes, dtype=counts.dtype) / (2 * self.num_classes)


@DEFENSES.register("dpa")
class DPA(TrainingDefense):
    """Deep Partition Aggregation: k networks on hash-assigned parts, plurality vote, certified radius."""

    name: ClassVar[str] = "dpa"
    partitions: int = Field(50, ge=2, le=100_000, description="k, the number of parts and base networks (ART: 50)")

    def train(self, train, dataset, architecture, training, *, seed=0, device="auto", progress=None) -> nn.Module:
        part = content_partition(train.x, self.partitions)
        sizes = torch.bincount(part, minlength=self.partitions)
        if int(sizes.min()) == 0:
            raise ConfigError(f"dpa: {int((sizes == 0).sum())} of {self.partitions} parts are empty; use fewer")
        members = [
            train_new_model(
                architecture,
                dataset,
                training,
                split=train.subset((part == i).nonzero().flatten()),
                seed=seed + i,
                device=str(device),
                progress=False,
                description=f"dpa part {i}",
            )
            for i in range(self.partitions)
        ]
        self._part_sizes = sizes
        return PartitionEnsemble(members, dataset.num_classes).eval()

    def figures(self, model, probes, *, device="cpu"):
        test = probes["test"]
        with torch.no_grad():
            votes = torch.cat([model.votes(test.x[i : i + 512]) for i in range(0, len(test), 512)])
        pred, radius = certify(votes)
        rows = {f"certified_accuracy_r{r}": certified_accuracy(pred, radius, test.y, r) for r in RADII}
        rows["median_certified_radius"] = float(median_certified_radius(pred, radius, test.y))
        rows["smallest_part"] = float(self._part_sizes.min())
        curve = [certified_accuracy(pred, radius, test.y, r) for r in range(self.partitions // 2 + 1)]
        return rows, {"certified_accuracy_curve": np.asarray(curve)}


__all__ = ["DPA", "PartitionEnsemble", "certified_accuracy", "certify", "content_partition"]
