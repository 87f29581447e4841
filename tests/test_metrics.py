import math

import pytest
import torch
from torch import nn

from backdoorlab.attacks import TargetRule
from backdoorlab.data import Split
from backdoorlab.metrics import attack_success_rate, backdoor_metrics, clean_accuracy, mean_ci, robust_accuracy
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
