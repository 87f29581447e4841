"""Detection metrics shared by the input detectors, and the detection table of the report."""

import math
from types import SimpleNamespace

import pytest
import torch
from scipy import stats

from backdoorlab.errors import ConfigError
from backdoorlab.experiments.evaluation import DefenseOutcome
from backdoorlab.experiments.population import InspectionRecord, PopulationResult, detection_summary
from backdoorlab.metrics import (
    detection_matrix,
    detection_metrics,
    flag_rate,
    model_detection_metrics,
    pr_auc,
    rates_at_threshold,
    threshold_at_rate,
    threshold_for_rate,
    tpr_at_fpr,
)
from backdoorlab.report.detectors import detection_matrix_table
from backdoorlab.report.inspection import population_table


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
    assert table.headers == [
        "detector",
        "badnets: detection",
        "FPR",
        "ROC-AUC",
        "PR-AUC",
        "TPR at 1% FPR",
        "TPR at 5% FPR",
    ]
    # FPR: badnets' mean over seeds (0.125) and the clean model's (0.25), averaged; AUC 15 of 16 pairs ordered;
    # PR-AUC 0.95 and TPR 3 of 4 at both FPRs (see test_detection_metrics_rows_with_and_without_attacked_scores)
    assert table.rows == [["strip", "75.0", "18.8", "93.8", "95.0", "75.0", "75.0"]]
    # records of an older run, without the new rows: the table keeps its old columns
    old = [_record("badnets", "strip", 0, {"fpr": 0.02, "tpr": 0.9, "roc_auc": 0.97, "threshold": 0.1})]
    assert detection_matrix_table(old).headers == ["detector", "badnets: detection", "FPR", "ROC-AUC"]
    assert detection_matrix_table(old).rows == [["strip", "90.0", "2.0", "97.0"]]


def test_pr_auc_is_average_precision_by_hand():
    # ranked: 0.8 (P), 0.4 (N), 0.35 (P), 0.1 (N): precision 1/1 and 2/3 at the two positives, AP = 5/6
    assert pr_auc(torch.tensor([0.1, 0.4]), torch.tensor([0.35, 0.8])) == pytest.approx(5 / 6)
    # infinite scores rank like any other: a perfect ordering
    assert pr_auc(torch.tensor([-math.inf, 0.2]), torch.tensor([math.inf, 0.3])) == 1.0
    assert math.isnan(pr_auc(torch.tensor([0.1]), torch.empty(0)))
    assert math.isnan(pr_auc(torch.empty(0), torch.tensor([0.1])))
    with pytest.raises(ConfigError, match="some are NaN"):
        pr_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0.3]))


def test_tpr_at_fpr_sets_the_threshold_on_negatives():
    negatives = torch.arange(100, dtype=torch.float64)  # 0..99
    positives = torch.tensor([93.5, 96.0, 98.5, 200.0])
    assert tpr_at_fpr(negatives, positives, 0.01) == 0.5  # one negative (99) above t = 98: 98.5 and 200 flagged
    assert tpr_at_fpr(negatives, positives, 0.05) == 0.75  # five negatives above t = 94
    assert tpr_at_fpr(negatives, positives, 0.0) == 0.25  # t = 99: only 200
    # fewer than 100 negatives: 1% lets none through, t = their maximum and equal scores are not flagged
    assert tpr_at_fpr(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.3, 0.31]), 0.01) == 0.5
    assert math.isnan(tpr_at_fpr(negatives, torch.empty(0), 0.01))
    with pytest.raises(ConfigError, match="empty or not finite"):
        tpr_at_fpr(torch.empty(0), positives, 0.01)


def test_detection_metrics_rows_with_and_without_attacked_scores():
    clean, attacked = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.35, 0.5, 0.6, 0.7])
    m = detection_metrics(clean, attacked, 0.3)
    assert set(m) == {"fpr", "threshold", "tpr", "roc_auc", "pr_auc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr"}
    assert (m["fpr"], m["tpr"]) == (0.25, 1.0)
    assert m["roc_auc"] == pytest.approx(15 / 16)
    assert m["pr_auc"] == pytest.approx(0.95)  # ranked P P P N P ...: precisions 1, 1, 1, 4/5
    # 4 clean scores: neither 1% nor 5% lets one through, so t = 0.4 and 3 of 4 attacked scores exceed it
    assert m["tpr_at_1pct_fpr"] == m["tpr_at_5pct_fpr"] == 0.75
    assert set(detection_metrics(clean, None, 0.3)) == {"fpr", "threshold"}
    assert set(detection_metrics(clean, torch.empty(0), 0.3)) == {"fpr", "threshold"}


def test_model_detection_metrics_by_hand():
    m = model_detection_metrics([0.5, 1.0, 2.5, 3.0], [2.0, 4.0, 5.0, 6.0])
    assert m["roc_auc"] == pytest.approx(14 / 16)  # 2.0 beats two clean models, the others beat all four
    assert m["pr_auc"] == pytest.approx(11 / 12)  # ranked P P P N N P N N: precisions 1, 1, 1, 4/6
    assert m["fpr_at_95pct_tpr"] == 0.5  # all 4 backdoored needed: t = 2.0 flags clean 2.5 and 3.0
    # 20 backdoored: 19 are enough, so the lowest one (1.0) may be missed and t = 2.0; a clean tie counts as flagged
    m = model_detection_metrics(torch.tensor([0.5, 1.5, 2.0, 10.0]), torch.arange(1, 21, dtype=torch.float64))
    assert m["fpr_at_95pct_tpr"] == 0.5
    assert model_detection_metrics([-math.inf, 0.0], [math.inf, 1.0]) == {
        "roc_auc": 1.0,
        "pr_auc": 1.0,
        "fpr_at_95pct_tpr": 0.0,
    }
    assert all(math.isnan(v) for v in model_detection_metrics([], [1.0]).values())
    with pytest.raises(ConfigError, match="some are NaN"):
        model_detection_metrics([float("nan")], [1.0])


def _population_records():
    """Clean model scores 0.5, 2.5, 1.0 and backdoored 3.0, 4.0, 1.5; verdicts flag scores above 2."""

    def record(role, score):
        verdict = SimpleNamespace(score=score, infected=score > 2.0, seconds=1.0)
        return InspectionRecord("nc", role, 0, None if role == "clean" else 0, verdict, {})

    return [record("clean", s) for s in (0.5, 2.5, 1.0)] + [record("backdoored", s) for s in (3.0, 4.0, 1.5)]


def test_population_detection_summary_reports_model_level_figures():
    records = _population_records()
    s = detection_summary(records)
    assert s["roc_auc"] == pytest.approx(8 / 9)  # 8 of the 9 (clean, backdoored) pairs ordered right
    assert s["pr_auc"] == pytest.approx(11 / 12)  # ranked P P N P N N: precisions 1, 1, 3/4
    assert s["fpr_at_95pct_tpr"] == pytest.approx(1 / 3)  # all 3 needed: t = 1.5 flags the clean 2.5
    assert (s["tpr"], s["fpr"]) == (pytest.approx(2 / 3), pytest.approx(1 / 3))  # the verdicts' own decisions
    assert math.isnan(detection_summary(records[:3])["fpr_at_95pct_tpr"])


def test_population_table_shows_pr_auc_and_fpr_at_95pct_tpr():
    records = _population_records()
    table = population_table(PopulationResult("badnets", [], records))
    assert table.headers[5:8] == ["ROC-AUC", "PR-AUC", "FPR at 95% TPR"]
    # as in test_population_detection_summary_reports_model_level_figures: 8/9, 11/12, 1/3
    assert table.rows[0][5:8] == ["0.89", "0.92", "33%"]
