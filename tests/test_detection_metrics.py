"""Detection metrics shared by the input detectors, and the detection table of the report."""

import math
from types import SimpleNamespace

import pytest
import torch
from scipy import stats

from backdoorlab.defenses import DefenseOutcome
from backdoorlab.errors import ConfigError
from backdoorlab.metrics import (
    detection_matrix,
    detection_metrics,
    flag_rate,
    rates_at_threshold,
    threshold_at_rate,
    threshold_for_rate,
)
from backdoorlab.report.detectors import detection_matrix_table


def test_rates_at_threshold_count_strictly_greater_scores():
    clean = torch.tensor([0.1, 0.2, 0.3, 0.4])
    attacked = torch.tensor([0.3, 0.5, 0.9])
    assert rates_at_threshold(clean, attacked, 0.3) == (pytest.approx(2 / 3), pytest.approx(1 / 4))
    assert flag_rate(clean, 0.4) == 0.0  # equal to the threshold is not flagged
    assert math.isnan(flag_rate(torch.empty(0), 0.0))


def test_empirical_threshold_is_feature_squeezings_index_rule():
    scores = torch.arange(100, dtype=torch.float32).flip(0)  # 99..0, unsorted order on purpose
    t = threshold_for_rate(scores, 0.05)
    assert t == 94.0  # sorted[ceil(100 * 0.95) - 1] = sorted[94]
    assert flag_rate(scores, t) == pytest.approx(0.05)  # exactly floor(N * rate) flagged
    # rates where N * (1 - rate) is not an integer, and 0.95 * 500 which floats put just off 475
    for n, rate in ((500, 0.05), (37, 0.1), (10, 0.01), (7, 0.5)):
        s = torch.rand(n, generator=torch.Generator().manual_seed(n))
        t = threshold_for_rate(s, rate)
        assert t == float(s.sort().values[math.ceil(n * (1 - rate) - 1e-9) - 1])
        assert int((s > t).sum()) == math.floor(n * rate + 1e-9)
    assert threshold_for_rate(scores, 0.0) == 99.0  # flags nothing


def test_empirical_rule_flags_one_more_than_threshold_at_rate():
    s = torch.arange(500, dtype=torch.float32)
    assert int((s > threshold_for_rate(s, 0.05)).sum()) == 25
    assert int((s > threshold_at_rate(s, 0.05)).sum()) == 24  # the existing helper, unchanged


def test_normal_threshold_is_the_fitted_quantile():
    s = torch.randn(2000, generator=torch.Generator().manual_seed(0)) * 0.07 - 0.2
    t = threshold_for_rate(s, 0.01, "normal")
    mean, std = stats.norm.fit(s.double().numpy())
    assert t == pytest.approx(stats.norm.ppf(0.99, mean, std), rel=1e-9)
    assert 0.0 <= flag_rate(s, t) <= 0.02
    assert threshold_for_rate(torch.full((5,), 0.3), 0.01, "normal") == pytest.approx(0.3)  # no spread


@pytest.mark.parametrize(
    ("scores", "rate", "rule", "message"),
    [
        (torch.tensor([0.1, float("nan")]), 0.05, "empirical", "not finite"),
        (torch.empty(0), 0.05, "empirical", "empty"),
        (torch.rand(10), 1.0, "empirical", "below 1"),
        (torch.rand(10), 0.0, "normal", "rate must be in (0.0, 1.0]"),
        (torch.rand(10), 0.05, "median", "unknown threshold rule 'median'"),
    ],
)
def test_threshold_rejects_bad_input(scores, rate, rule, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        threshold_for_rate(scores, rate, rule)


def test_detection_matrix_rows_are_configurations_columns_attacks():
    cells = {
        "strip": {
            "none": {"fpr": 0.02},
            "badnets": {"fpr": 0.0, "tpr": 0.9, "roc_auc": 0.99},
            "blend": {"fpr": 0.01, "tpr": 0.5, "roc_auc": 0.8},
        },
        "fs": {"badnets": {"fpr": 0.05, "tpr": 0.1, "roc_auc": 0.4}},
    }
    attacks, rows = detection_matrix(cells)
    assert attacks == ["badnets", "blend"]
    config, tprs, fpr, auc = rows[0]
    assert (config, tprs) == ("strip", [0.9, 0.5])
    assert fpr == pytest.approx(0.01) and auc == pytest.approx(0.895)
    assert rows[1][0] == "fs" and rows[1][1][0] == 0.1 and math.isnan(rows[1][1][1])


def _record(attack, defense, seed, metrics):
    return SimpleNamespace(attack=attack, defense=defense, seed=seed, outcome=DefenseOutcome(metrics))


def test_detection_matrix_table_averages_seeds_in_percent():
    clean, hit = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.35, 0.5, 0.6, 0.7])
    records = [
        _record("badnets", "strip", 0, detection_metrics(clean, hit, 0.3)),  # tpr 1.0, fpr 0.25
        _record("badnets", "strip", 1, detection_metrics(clean, hit, 0.55)),  # tpr 0.5, fpr 0
        _record("none", "strip", 0, detection_metrics(clean, None, 0.3)),
    ]
    table = detection_matrix_table(records)
    assert table.headers == ["detector", "badnets: detection", "FPR", "ROC-AUC"]
    # FPR: badnets' mean over seeds (0.125) and the clean model's (0.25), averaged; AUC 15 of 16 pairs ordered
    assert table.rows == [["strip", "75.0", "18.8", "93.8"]]
