"""DPA's certificate on hand-built votes and its content-hash partition; ABL isolates a planted poison."""

from __future__ import annotations

import torch

from backdoorlab.data import load_dataset
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.data_detectors.dpa import (
    PartitionEnsemble,
    certified_accuracy,
    certify,
    content_partition,
    median_certified_radius,
)
from backdoorlab.models import TrainingConfig


def test_certificate_matches_the_papers_formula_with_its_tie_break():
    votes = torch.tensor(
        [
            [7, 3, 0],  # c = 0: (7 - max(3 + 0, 0 + 0)) // 2 = 2
            [3, 7, 0],  # c = 1: (7 - max(3 + 1, 0)) // 2 = 1 (class 0 wins ties, so it needs one vote less)
            [5, 5, 0],  # tie -> c = 0; rival 1 has index > 0: (5 - 5) // 2 = 0
            [0, 4, 4],  # tie -> c = 1; (4 - max(0 + 1, 4 + 0)) // 2 = 0
            [0, 2, 8],  # c = 2: (8 - max(0 + 1, 2 + 1)) // 2 = 2
            [10, 0, 0],  # c = 0: (10 - 0) // 2 = 5
        ]
    )
    pred, radius = certify(votes)
    assert pred.tolist() == [0, 1, 0, 1, 2, 0]
    assert radius.tolist() == [2, 1, 0, 0, 2, 5]
    y = torch.tensor([0, 1, 1, 1, 2, 0])
    assert certified_accuracy(pred, radius, y, 0) == 5 / 6
    assert certified_accuracy(pred, radius, y, 2) == 3 / 6
    assert median_certified_radius(pred, radius, y) == 2  # certified accuracy at r = 2 is 3/6


def test_the_radius_is_exact_flipping_radius_plus_one_votes_changes_the_prediction():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        votes = torch.multinomial(torch.ones(4), 11, replacement=True, generator=gen).bincount(minlength=4)[None]
        pred, radius = certify(votes)
        c, r = int(pred), int(radius)
        rival = max((k for k in range(4) if k != c), key=lambda k: (votes[0, k] + (k < c), -k))
        worse = votes.clone()
        moved = min(r + 1, int(worse[0, c]))
        worse[0, c] -= moved  # r + 1 poisoned samples: each moves one vote from c to the rival
        worse[0, rival] += moved
        assert int(certify(worse)[0]) != c or moved < r + 1
        for m in range(r + 1):  # r moves never change it
            safe = votes.clone()
            safe[0, c] -= m
            safe[0, rival] += m
            assert int(certify(safe)[0]) == c


def test_partition_depends_on_content_only():
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    part = content_partition(x, 7)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    assert torch.equal(content_partition(x[perm], 7), part[perm]), "a sample's part must not depend on its index"
    changed = x.clone()
    changed[5] = torch.rand(1, 4, 4)
    other = content_partition(changed, 7)
    assert torch.equal(torch.cat([other[:5], other[6:]]), torch.cat([part[:5], part[6:]]))


def test_ensemble_argmax_is_the_tie_broken_vote():
    class Fixed(torch.nn.Module):
        def __init__(self, label):
            super().__init__()
            self.label = label

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), self.label), 3).float()

    ens = PartitionEnsemble([Fixed(2), Fixed(1), Fixed(2), Fixed(1)], 3)
    assert ens(torch.zeros(2, 1, 2, 2)).argmax(dim=1).tolist() == [1, 1]


def test_abl_isolates_its_ratio_and_returns_a_new_network():
    # whether the isolated samples are the poison is a quality question: benchmarks/bench_data_detectors.py
    ds = load_dataset("digits")
    abl = DEFENSES.build(
        "abl", {"isolation_epochs": 1, "finetune_epochs": 1, "unlearning_epochs": 1, "isolation_ratio": 0.02}
    )
    model = abl.train(ds.train, ds, "badnet_cnn", TrainingConfig(batch_size=64), seed=0, device="cpu")
    assert int(abl.isolated_.sum()) == round(0.02 * len(ds.train))
    assert model(ds.test.x[:4]).shape == (4, ds.num_classes) and not model.training
