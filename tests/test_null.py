"""The model-level decision at a stated false-alarm rate: the null laws of the MAD indices, the p-values, the
reference null against class bias, and the combination of inspectors. Pure statistics: no model is trained."""

from __future__ import annotations

import pytest
import torch

from backdoorlab.defenses.inspection.null import (
    ReferenceNull,
    alpha_shares,
    apply_reference,
    batched_scores,
    combine_p_values,
    decide,
    null_cutoff,
    tail_p_values,
)
from backdoorlab.defenses.inspection.verdict import (
    Verdict,
    anomaly_index,
    leave_one_out_deviation,
    left_tail_deviation,
)
from backdoorlab.errors import ConfigError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("k", [5, 10, 11])
@pytest.mark.parametrize(
    ("kind", "index"),
    [("mad", anomaly_index), ("left_tail", left_tail_deviation), ("loo", leave_one_out_deviation)],
)
def test_batched_scores_match_the_per_model_indices(k, kind, index) -> None:
    x = torch.randn(40, k, generator=_gen(k), dtype=torch.float64)
    expected = []
    for row in x:
        below = row < row.quantile(0.5)  # torch's quantile interpolates like numpy's median
        expected.append(float(index(row)[below].max()))
    torch.testing.assert_close(batched_scores(x, kind), torch.tensor(expected, dtype=torch.float64))


def test_cutoffs_at_alpha_are_far_above_two() -> None:
    assert null_cutoff("mad", 10, 0.05) == pytest.approx(3.9, abs=0.1)  # the figure for K = 10
    assert null_cutoff("mad", 43, 0.05) == pytest.approx(3.48, abs=0.1)
    assert null_cutoff("left_tail", 10, 0.05) > null_cutoff("mad", 10, 0.05)  # the left-tail MAD is smaller
    assert null_cutoff("mad", 10, 0.01) > null_cutoff("mad", 10, 0.05)


@pytest.mark.parametrize("kind", ["mad", "left_tail", "loo"])
def test_false_alarm_rate_on_fresh_null_models_is_alpha(kind) -> None:
    # 20000 clean "models" drawn with another seed than the calibration: the rate is alpha within 4 standard errors
    scores = batched_scores(torch.randn(20_000, 10, generator=_gen(7), dtype=torch.float64), kind)
    assert abs(float((scores > null_cutoff(kind, 10, 0.05)).double().mean()) - 0.05) < 0.0062
    assert float((scores > 2.0).double().mean()) > 0.3  # the papers' per-label rule flags about a third


def test_p_values_are_tail_fractions() -> None:
    p = tail_p_values("mad", 10, torch.tensor([0.0, 2.0, 3.9, 20.0]))
    assert float(p[0]) == 1.0 and 0.3 < float(p[1]) < 0.36 and 0.04 < float(p[2]) < 0.06 and float(p[3]) < 1e-4
    assert bool((p[:-1] >= p[1:]).all())


def test_decision_flags_a_clear_outlier_with_a_small_p_value() -> None:
    stat = torch.tensor([10.0, 11, 9.5, 10.5, 9.8, 10.2, 11.3, 9.1, 10.7, 1.0], dtype=torch.float64)
    d = decide(stat, "mad", 0.05)
    assert d.suspected == [9] and d.p_value == float(d.p_values[9]) < 1e-3
    assert d.cutoff == pytest.approx(null_cutoff("mad", 10, 0.05))
    assert bool((d.p_values[stat > stat.median()] == 1).all())  # labels above the median are never flagged
    # with the papers' fixed cutoff a mild outlier is flagged, at the model level it is not
    mild = stat.clone()
    mild[9] = 7.8  # index about 2.6
    assert decide(mild, "mad", 0.05, cutoff=2.0).suspected == [9] and decide(mild, "mad", 0.05).suspected == []


def test_unreached_labels_are_reported_never_counted() -> None:
    stat = torch.tensor([10.0, 11, 9.5, 10.5, 9.8, 10.2, 11.3, 9.1, 0.1, 1.0], dtype=torch.float64)
    reached = torch.ones(10, dtype=torch.bool)
    reached[8] = False  # its generator failed and left a tiny perturbation
    d = decide(stat, "left_tail", 0.05, reached=reached)
    assert 8 not in d.suspected and d.suspected == [9]
    assert float(d.index[8]) == 0.0 and float(d.p_values[8]) == 1.0
    assert d.cutoff == pytest.approx(null_cutoff("left_tail", 9, 0.05))  # the null of 9 counted labels
    few = decide(stat, "left_tail", 0.05, reached=torch.arange(10) < 2)
    assert few.suspected == [] and few.p_value == 1.0


def _biased(gen: torch.Generator, n: int) -> list[torch.Tensor]:
    """Per-label sizes of ``n`` clean models of a task where label 0 is always easy to reach (class bias)."""
    base = torch.full((10,), 10.0, dtype=torch.float64)
    base[0] = 2.0
    return [base * torch.exp(0.1 * torch.randn(10, generator=gen, dtype=torch.float64)) for _ in range(n)]


def test_reference_null_absorbs_class_bias_and_still_flags_a_target() -> None:
    gen = _gen(3)
    reference = ReferenceNull.from_statistics(_biased(gen, 4))
    assert reference.degrees_of_freedom == 30
    clean = _biased(gen, 1)[0]
    assert decide(clean, "mad", 0.05).suspected == [0]  # the normal null mistakes the bias for a backdoor
    assert decide_ref(clean, reference) == []
    trojaned = clean.clone()
    trojaned[6] = 3.0
    assert decide_ref(trojaned, reference) == [6]


def decide_ref(stat: torch.Tensor, reference: ReferenceNull) -> list[int]:
    from backdoorlab.defenses.inspection.null import decide_reference

    return decide_reference(stat, reference, 0.05).suspected


def test_reference_null_false_alarm_rate_is_at_most_alpha() -> None:
    gen = _gen(11)
    flagged = sum(bool(decide_ref(s, ReferenceNull.from_statistics(_biased(gen, 3)))) for s in _biased(gen, 400))
    assert flagged / 400 <= 0.05 + 0.03  # Bonferroni over labels: conservative


def test_apply_reference_rewrites_the_decision_only() -> None:
    gen = _gen(5)
    stat = _biased(gen, 1)[0]
    d = decide(stat, "mad", 0.05)
    v = Verdict(
        "neural_cleanse", "mask L1", stat, d.index, d.cutoff, d.suspected, p_values=d.p_values, p_value=d.p_value
    )
    assert v.infected and v.summary()["null"] == "normal"
    again = apply_reference(v, ReferenceNull.from_statistics(_biased(gen, 4)))
    assert not again.infected and again.null == "reference" and again.p_value > 0.05
    assert torch.equal(again.statistic, v.statistic) and again.summary()["p_values"] is not None


def test_inspectors_combine_by_bonferroni() -> None:
    assert combine_p_values([0.03, 0.5]) == pytest.approx(0.06)
    assert combine_p_values([0.9, 0.8, 0.7]) == 1.0
    # weighted: flagged iff some p-value is at most its share of alpha
    assert combine_p_values([0.03, 0.5], [0.8, 0.2]) == pytest.approx(0.0375)
    assert combine_p_values([0.5, 0.009], [0.8, 0.2]) == pytest.approx(0.045)
    assert alpha_shares(["neural_cleanse", "deepinspect"], {"neural_cleanse": 4}) == pytest.approx(
        {"neural_cleanse": 0.8, "deepinspect": 0.2}
    )
    assert alpha_shares(["a", "b", "c"]) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    with pytest.raises(ConfigError, match="as many positive shares"):
        combine_p_values([0.1, 0.2], [1.0])
    with pytest.raises(ConfigError, match="no inspector"):
        combine_p_values([])
    with pytest.raises(ConfigError, match="at least 2 clean reference models"):
        ReferenceNull.from_statistics([torch.ones(10)])


def test_scan_shares_alpha_four_to_one_between_its_inspectors(monkeypatch) -> None:
    from backdoorlab.audit import scan as scan_module

    built = []
    real_build = scan_module.DEFENSES.build

    def spy(name, params=None, where=None):
        built.append((name, dict(params or {})))
        raise ConfigError("stop after building")

    monkeypatch.setattr(scan_module.DEFENSES, "build", spy)
    with pytest.raises(ConfigError, match="stop after building"):
        scan_module.scan_model("m.onnx", "digits", inspectors=["neural_cleanse", "deepinspect"], alpha=0.05)
    assert built[0][0] == "neural_cleanse" and built[0][1]["alpha"] == pytest.approx(0.04)
    shares = scan_module.alpha_shares(["neural_cleanse", "deepinspect"], scan_module.SCAN_WEIGHTS)
    assert 0.05 * shares["deepinspect"] == pytest.approx(0.01)
    assert real_build("deepinspect", {"alpha": 0.01}).alpha == 0.01


def test_log_scale_tests_the_logarithm_of_the_sizes() -> None:
    # sizes spread multiplicatively (a clean model's labels between 10 and 80) and one label 10x below the smallest:
    # on the linear scale the spread hides it, on the log scale it stands out
    stat = torch.tensor([10.0, 14.0, 20.0, 28.0, 40.0, 56.0, 80.0, 24.0, 33.0, 1.0], dtype=torch.float64)
    linear, log = decide(stat, "mad", 0.05), decide(stat, "mad", 0.05, scale="log")
    assert linear.suspected == [] and log.suspected == [9]
    same = decide(stat.log(), "mad", 0.05)
    assert torch.equal(log.index, same.index) and log.p_value == same.p_value
    from backdoorlab.defenses import DEFENSES

    nc = DEFENSES.build("neural_cleanse", {"index_scale": "log", "index": "paper"})
    assert torch.allclose(nc.outlier_index(stat), anomaly_index(stat.log()))
    assert torch.allclose(DEFENSES.build("neural_cleanse").outlier_index(stat), leave_one_out_deviation(stat.log()))
    # unset: log for the decision at alpha, linear with the papers' fixed cutoff
    assert DEFENSES.build("neural_cleanse").scale == "log"
    assert DEFENSES.build("neural_cleanse", {"cutoff": 2}).scale == "linear"
    assert DEFENSES.build("deepinspect", {"cutoff": 2, "index_scale": "log"}).scale == "log"
    with pytest.raises(ConfigError, match="index_scale"):
        DEFENSES.build("neural_cleanse", {"index_scale": "sqrt"})


def test_leave_one_out_deviation_is_grubbs_studentized_distance() -> None:
    stat = torch.tensor([10.0, 11, 9.5, 10.5, 9.8, 10.2, 11.3, 9.1, 10.7, 1.0], dtype=torch.float64)
    index = leave_one_out_deviation(stat)
    others = stat[:-1]
    assert float(index[-1]) == pytest.approx(float((others.mean() - 1.0) / others.std()), rel=1e-9)
    assert float(index[1]) < 0  # above the others: the unsuspicious side
    # the scale comes from all other labels: the same outlier needs a smaller cutoff and gets a smaller p-value
    assert null_cutoff("loo", 10, 0.05) < null_cutoff("mad", 10, 0.05)
    moderate = torch.tensor([80.0, 125, 86, 62, 91, 71, 77, 101, 70, 24], dtype=torch.float64)
    loo, mad = decide(moderate, "loo", 0.05, scale="log"), decide(moderate, "mad", 0.05, scale="log")
    assert loo.suspected == [9] and loo.p_value < mad.p_value
    with pytest.raises(ConfigError, match="at least 3"):
        leave_one_out_deviation([1.0, 2.0])


def test_index_follows_the_decision_rule() -> None:
    from backdoorlab.defenses import DEFENSES

    assert DEFENSES.build("neural_cleanse").index_in_effect == "loo"
    assert DEFENSES.build("deepinspect").index_in_effect == "loo"
    assert DEFENSES.build("neural_cleanse", {"cutoff": 2}).index_in_effect == "mad"
    assert DEFENSES.build("deepinspect", {"cutoff": 2}).index_in_effect == "left_tail"
    assert DEFENSES.build("deepinspect", {"index": "paper"}).index_in_effect == "left_tail"
    with pytest.raises(ConfigError, match="index"):
        DEFENSES.build("neural_cleanse", {"index": "grubbs"})
