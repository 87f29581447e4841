import math

import pytest
import torch
from torch import nn

from backdoorlab.attacks import TargetRule
from backdoorlab.data import Split
from backdoorlab.errors import ConfigError
from backdoorlab.metrics import (
    attack_success_rate,
    backdoor_metrics,
    clean_accuracy,
    defense_effectiveness_rate,
    mean_ci,
    robust_accuracy,
    robust_improvement_rate,
)
from backdoorlab.triggers import square_trigger


class CornerModel(nn.Module):
    """Predicts 0 when the bottom-right corner pixel is bright, else the label encoded in pixel (0, 0)."""

    def forward(self, x):
        fired = x[:, 0, -2, -2] > 0.99
        label = (x[:, 0, 0, 0] * 10).round().long().clamp(0, 9)
        pred = torch.where(fired, torch.zeros_like(label), label)
        return nn.functional.one_hot(pred, 10).float()


def _split():
    y = torch.tensor([0, 1, 2, 3, 0, 5])
    x = torch.zeros(6, 1, 6, 6)
    x[:, 0, 0, 0] = y.float() / 10
    return Split(x, y)


def test_asr_excludes_target_class():
    split, trig = _split(), square_trigger((1, 6, 6), 1)
    rule = TargetRule("all_to_one", 10, 0)
    assert clean_accuracy(CornerModel(), split) == 1.0
    assert attack_success_rate(CornerModel(), split, trig, rule) == 1.0  # 4 eligible, all hit
    assert robust_accuracy(CornerModel(), split, trig, rule) == 0.0


def test_all_to_all_asr_is_per_sample():
    split, trig = _split(), square_trigger((1, 6, 6), 1)
    rule = TargetRule("all_to_all", 10)
    # the model sends everything to 0, which is the target only for true label 9: none here
    assert attack_success_rate(CornerModel(), split, trig, rule) == 0.0
    m = backdoor_metrics(CornerModel(), split, trig, rule)
    assert m["robust_accuracy"] == pytest.approx(2 / 6)  # the two true zeros stay correct


def test_mean_ci():
    assert mean_ci([0.5]) == (0.5, 0.0)
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(2.4841, rel=1e-3)  # t(0.975, 2) * 1/sqrt(3)
    assert all(math.isnan(v) for v in mean_ci([]))


def test_der_matches_a_leaderboard_cell():
    # BackdoorBench CIFAR-10, ANP on BadNets (field.md): ΔASR = 94.30 points, ΔCA = 7.15 points
    # DER = (0.9430 - 0.0715 + 1) / 2 = 0.93575
    assert defense_effectiveness_rate(0.9132, 0.8417, 0.9503, 0.0073) == pytest.approx(0.93575)


@pytest.mark.parametrize(
    ("ca_before", "ca_after", "asr_before", "asr_after", "der"),
    [
        (0.9, 0.9, 1.0, 0.0, 1.0),  # backdoor gone, nothing lost
        (0.9, 0.9, 0.5, 0.5, 0.5),  # no change
        (0.9, 0.9, 0.5, 0.7, 0.5),  # ASR rose by 0.2: clamped to no gain, (0 - 0 + 1) / 2
        (0.8, 0.85, 1.0, 0.2, 0.9),  # CA rose by 0.05: clamped to no cost, (0.8 - 0 + 1) / 2
        (1.0, 0.0, 1.0, 1.0, 0.0),  # the worst: CA destroyed, ASR untouched
        (0.9, 0.5, 1.0, 0.0, 0.8),  # (1 - 0.4 + 1) / 2; BackdoorBench's non-simplified function gives 1.2
    ],
)
def test_der_formula_and_its_clamps(ca_before, ca_after, asr_before, asr_after, der):
    assert defense_effectiveness_rate(ca_before, ca_after, asr_before, asr_after) == pytest.approx(der)


@pytest.mark.parametrize(
    ("ca_before", "ca_after", "ra_before", "ra_after", "rir"),
    [
        (0.91, 0.89, 0.02, 0.85, 0.905),  # (0.83 - 0.02 + 1) / 2
        (0.8, 0.82, 0.5, 0.3, 0.5),  # RA fell and CA rose: both clamped to 0
        (0.9, 0.6, 0.1, 0.1, 0.35),  # (0 - 0.3 + 1) / 2
    ],
)
def test_rir_formula_and_its_clamps(ca_before, ca_after, ra_before, ra_after, rir):
    assert robust_improvement_rate(ca_before, ca_after, ra_before, ra_after) == pytest.approx(rir)


def test_der_and_rir_propagate_nan_and_refuse_percentages():
    assert math.isnan(defense_effectiveness_rate(0.9, 0.9, 1.0, float("nan")))  # no eligible triggered input
    assert math.isnan(robust_improvement_rate(float("nan"), 0.9, 0.0, 0.5))
    with pytest.raises(ConfigError, match=r"asr_before must be in \[0.0, 1.0\], got 95.03"):
        defense_effectiveness_rate(0.9132, 0.8417, 95.03, 0.0073)
    with pytest.raises(ConfigError, match=r"ra_after must be in \[0.0, 1.0\], got -0.1"):
        robust_improvement_rate(0.9, 0.9, 0.0, -0.1)
