"""TABOR and K-Arm: their regularisers and bandit rules by hand, detection of the planted / trained digits
backdoors, K-Arm's step count against Neural Cleanse's, and their registration."""

from __future__ import annotations

import math

import pytest
import torch

from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.inspection.k_arm import BanditScheduler, KArm, screen_k, topk_frequency
from backdoorlab.defenses.inspection.neural_cleanse import NeuralCleanse
from backdoorlab.defenses.inspection.tabor import Tabor, elastic, squared_variation

from .inspection_support import TARGET, backdoored_digits, digits, planted_digits

FAST = dict(patience=2, early_stop_patience=6, max_epochs=40, batches_per_epoch=2)


def test_tabor_terms_match_hand_computation() -> None:
    x = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])  # (1, 1, 2, 2): neighbour differences 1, 0 (rows), 1, 0 (cols)
    assert squared_variation(x).tolist() == [2.0]
    assert elastic(torch.tensor([[0.5, -0.5]])).tolist() == [1.5]  # L1 1 + L2^2 0.5
    masks, patterns = torch.full((2, 1, 8, 8), 0.5), torch.ones(2, 1, 8, 8)
    off = Tabor(overlay_weight=0.0, mask_size_weight=1.0, pattern_size_weight=2.0)
    out = off.regulariser(planted_digits(), torch.rand(4, 1, 8, 8), masks, patterns, torch.tensor([0, TARGET]))
    # mask: 64 * 0.5 + 64 * 0.25 = 48; pattern outside the mask (1 - 0.5) * 1: 48 again, times 2; smooth: 0
    torch.testing.assert_close(out, torch.tensor([144.0, 144.0]))
    with_overlay = Tabor().regulariser(planted_digits(), torch.rand(4, 1, 8, 8), masks, patterns, torch.tensor([0, 3]))
    assert with_overlay.shape == (2,) and bool((with_overlay > 0).all())


def test_tabor_blocking_term_runs_and_costs() -> None:
    masks, patterns = torch.full((3, 1, 8, 8), 0.2), torch.rand(3, 1, 8, 8)
    args = (planted_digits(), digits().val.x[:5], masks, patterns, torch.tensor([0, 1, 2]))
    base = Tabor(overlay_weight=0.0).regulariser(*args)
    blocked = Tabor(overlay_weight=0.0, blocking_weight=1.0).regulariser(*args)
    assert bool((blocked > base).all())


def test_tabor_flags_the_planted_trigger() -> None:
    verdict = Tabor(**FAST, cutoff=2.0).inspect(planted_digits(), digits().val, seed=0, device="cpu")
    assert verdict.method == "tabor" and verdict.suspected[0] == TARGET and verdict.ranking[0] == TARGET
    assert verdict.statistic[TARGET] < 8.0  # within 2x of the 2x2 trigger's area
    assert verdict.details["steps"].shape == (10,)


def test_screen_k_and_topk_frequency() -> None:
    assert screen_k(10, 0.25) == 2 and screen_k(43, 0.25) == 11 and screen_k(5, 0.25) == 2
    model = torch.nn.Flatten()  # the "logits" are the 4 pixel values
    x = torch.tensor([[4.0, 3.0, 1.0, 0.0], [0.0, 3.0, 4.0, 1.0]]).view(2, 1, 2, 2)
    freq = topk_frequency(model, x, 4, 2, torch.device("cpu"))
    assert freq.tolist() == [0.5, 1.0, 0.5, 0.0]


def _bandit(arms: int = 3, quorum: int = 1) -> BanditScheduler:
    return BanditScheduler(
        torch.full((arms,), 30.0, dtype=torch.float64), 2, 60, 0.0, 0.0, quorum, torch.Generator().manual_seed(0)
    )


def test_bandit_warms_up_each_arm_then_exploits_the_fastest() -> None:
    b = _bandit()
    b.record(0, 30.0, 0.5, False)
    assert b.next_arm(0, False, False) == 0  # no improvement: the same arm again
    for l1 in (20.0, 10.0):
        b.record(0, l1, 1.0, True)
    assert b.next_arm(0, True, False) == 1  # arm 0 warmed up: the next cold arm
    for arm, l1s in ((1, (29.0, 28.0)), (2, (25.0, 24.0))):
        for l1 in l1s:
            b.record(arm, l1, 1.0, True)
    assert b.next_arm(2, True, False) == 0  # all warm: arm 0 fell fastest per pull
    assert b.exploiting
    assert b.velocity[0] == pytest.approx((30 - 10) / (2 + 3 / 2))
    assert b.next_arm(1, False, True) in (0, 2) and bool(b.stopped[1])  # arm 1 converged, not the smallest: stops
    assert b.next_arm(0, False, True) is None  # the smallest arm converged: quorum 1 (the reference's rule) met


def test_bandit_quorum_and_give_up() -> None:
    b = _bandit(quorum=2)
    for arm in range(3):
        for l1 in (20.0 - arm, 10.0 - arm):
            b.record(arm, l1, 1.0, True)
    assert b.next_arm(2, True, False) is not None and b.exploiting
    assert b.next_arm(2, True, True) is not None  # smallest arm converged, the second smallest (1) not yet
    assert b.stopped[2] and not b.quorum_met()
    assert b.next_arm(1, True, True) is None and b.quorum_met()
    g = _bandit()
    for _ in range(11):
        g.record(0, 30.0, 0.0, False)
    assert g.next_arm(0, False, False) == 1 and bool(g.stopped[0])  # 0 success after 10 pulls: given up


@pytest.fixture(scope="module")
def trained_outcome():
    model, val = backdoored_digits().model, digits().val
    return (
        KArm().inspect(model, val, seed=0, device="cpu"),
        KArm(quorum=1).inspect(model, val, seed=0, device="cpu"),
        NeuralCleanse().inspect(model, val, seed=0, device="cpu"),
    )


@pytest.mark.slow
def test_k_arm_ranks_the_trained_target_first(trained_outcome) -> None:
    karm, _, nc = trained_outcome
    assert karm.ranking[0] == TARGET == nc.ranking[0]
    assert karm.statistic[TARGET] < 8.0  # the 2x2 trigger (area 4) within 2x
    assert karm.details["arms"][0] == TARGET  # pre-screening: the target is the most frequent in the top-2s
    steps = karm.details["optimisation_steps"]
    assert steps == int(karm.details["steps"].sum())
    assert len(karm.details["pull_sequence"]) * KArm().batches_per_epoch == steps


@pytest.mark.slow
def test_k_arm_with_the_reference_stop_rule_spends_far_fewer_steps(trained_outcome) -> None:
    """quorum 1 (stop when the smallest arm converges) spends under half of Neural Cleanse's steps; the default
    quorum (half the arms + 1) spends about as many as Neural Cleanse on this model (docs/inspection.md)."""
    _, reference, nc = trained_outcome
    assert reference.details["optimisation_steps"] < 0.5 * int(nc.details["steps"].sum())


def test_k_arm_pre_screening_drops_labels() -> None:
    verdict = KArm(arms=4, max_pulls=60, batches_per_epoch=1).inspect(
        planted_digits(), digits().val, seed=0, device="cpu"
    )
    kept = verdict.details["arms"]
    assert len(kept) == 4 and len(verdict.unreached) == 6 and set(kept).isdisjoint(verdict.unreached)
    assert all(int(verdict.details["steps"][t]) == 0 for t in verdict.unreached)
    assert all(verdict.statistic[t] == 64.0 for t in verdict.unreached)  # the full mask: never optimised
    assert sum(1 for _ in verdict.details["pull_sequence"]) <= 60
    assert math.isfinite(verdict.score)


def test_registered_as_inspectors() -> None:
    assert DEFENSES.get("tabor").kind == "inspector" and DEFENSES.get("k_arm").kind == "inspector"
    assert isinstance(DEFENSES.build("tabor", {"overlay_weight": 0.1}), Tabor)
    with pytest.raises(Exception, match="arms"):
        DEFENSES.build("k_arm", {"arms": 2})
