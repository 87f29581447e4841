"""Neural Cleanse: the MAD statistics, the vectorised cost schedule, detection of a planted trigger, batched vs
per-label agreement, unlearning, and the errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch

from backdoorlab.attacks import TargetRule
from backdoorlab.data import Split
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.inspection.neural_cleanse import CostSchedule, NeuralCleanse, stamp_all
from backdoorlab.defenses.inspection.verdict import Verdict, anomaly_index, flagged_labels, left_tail_deviation
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.evaluation import EvaluationContext, evaluate_defense
from backdoorlab.metrics import attack_success_rate, backdoor_metrics
from backdoorlab.triggers import square_trigger

from .inspection_support import TARGET, backdoored_digits, digits, planted_digits

# Short schedule for 8x8 digits: the same algorithm, fewer epochs (about 4 s for 10 labels).
FAST = dict(patience=2, early_stop_patience=6, max_epochs=40, batches_per_epoch=2)


def test_anomaly_index_matches_hand_computation() -> None:
    # median 3, |x - 3| = [2, 1, 0, 1, 97], MAD = 1 -> index = dev / 1.4826
    index = anomaly_index([1.0, 2.0, 3.0, 4.0, 100.0])
    expected = torch.tensor([2.0, 1.0, 0.0, 1.0, 97.0], dtype=torch.float64) / 1.4826
    torch.testing.assert_close(index, expected)
    # even count: median is the mean of the two middle values (2.5), MAD = median([1.5, .5, .5, 1.5]) = 1.0
    torch.testing.assert_close(
        anomaly_index([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.5, 0.5, 0.5, 1.5], dtype=torch.float64) / 1.4826
    )


def test_left_tail_deviation_matches_hand_computation() -> None:
    # median 9.5; left half [1, 8, 9] deviates by [8.5, 1.5, 0.5] -> MAD_left = 1.5 * 1.4826
    df = left_tail_deviation([1.0, 8.0, 9.0, 10.0, 11.0, 12.0])
    assert df[0] == pytest.approx(8.5 / (1.5 * 1.4826))
    assert df[5] == pytest.approx(-2.5 / (1.5 * 1.4826))
    assert df[2] > 0 > df[3]


def test_only_labels_below_the_median_are_flagged() -> None:
    stat = torch.tensor([1.0, 10.0, 10.5, 11.0, 11.5, 40.0], dtype=torch.float64)
    index = anomaly_index(stat)
    assert index[5] > 2 and index[0] > 2  # both tails are far out ...
    assert flagged_labels(stat, index, 2.0) == [0]  # ... but only the small one counts
    same = anomaly_index([5.0] * 6)
    assert torch.isfinite(same).all() and float(same.max()) == 0.0


def test_verdict_score_and_ranking() -> None:
    stat = torch.tensor([9.0, 10.0, 1.0, 11.0, 12.0], dtype=torch.float64)
    v = Verdict("neural_cleanse", "mask L1", stat, anomaly_index(stat), suspected=[2])
    assert v.infected and v.ranking[0] == 2 and v.score == pytest.approx(float(anomaly_index(stat)[2]))
    assert "suspected [2]" in repr(v)
    assert v.summary()["statistic"] == [9.0, 10.0, 1.0, 11.0, 12.0]


@pytest.mark.parametrize("values", [[1.0, 2.0], [1.0, float("nan"), 3.0]])
def test_mad_rejects_bad_statistics(values) -> None:
    with pytest.raises(ConfigError, match="MAD outlier test"):
        anomaly_index(values)


def test_cost_schedule_follows_the_reference_rules() -> None:
    sched = CostSchedule(init_cost=1e-3, patience=2, multiplier=2.0, early_stop_threshold=0.99, early_stop_patience=3)
    sched.start(2)
    yes, no = torch.tensor([True, False]), torch.tensor([False, False])
    l1 = torch.tensor([10.0, 10.0], dtype=torch.float64)
    improved, _ = sched.update(yes, l1)
    assert improved.tolist() == [True, False] and sched.cost.tolist() == [0.0, 0.0]
    sched.update(yes, l1)  # second success at cost 0: cost armed to init_cost, counters reset, then one success
    assert sched.cost[0] == pytest.approx(1e-3) and sched.cost[1] == 0.0
    sched.update(yes, l1 - 1)  # second success at init_cost: up by 2
    assert sched.cost[0] == pytest.approx(2e-3) and bool(sched.up_flag[0])
    assert not bool(sched.update(no, l1)[1][0])  # best L1 9 stale for 1 epoch
    assert not bool(sched.update(no, l1)[1][0])  # 2 epochs; second failure: down by 2 ** 1.5
    assert sched.cost[0] == pytest.approx(2e-3 / 2**1.5) and bool(sched.down_flag[0])
    assert bool(sched.update(no, l1)[1][0])  # up and down both happened, stale for 3 epochs: stop
    assert not bool(sched.update(no, l1)[1][1])  # label 1 never reached the threshold: it never stops early


def test_stamp_all_shapes_and_values() -> None:
    x = torch.rand(5, 3, 6, 7)
    masks, patterns = torch.zeros(2, 1, 6, 7), torch.ones(2, 3, 6, 7)
    masks[1] = 1
    out = stamp_all(x, masks, patterns)
    assert out.shape == (2, 5, 3, 6, 7)
    torch.testing.assert_close(out[0], x)
    assert bool((out[1] == 1).all())


@pytest.fixture(scope="module")
def planted_outcome():
    ds = digits()
    # the papers' rule: the per-label cutoff 2 on the index of the mask L1 itself (with a fixed cutoff the index
    # is taken on the linear scale)
    nc = NeuralCleanse(**FAST, cutoff=2.0)
    backdoor = _planted_backdoor()
    return evaluate_defense(nc, backdoor.model, backdoor, EvaluationContext(ds, seed=0, device="cpu"))


def _planted_backdoor():
    from backdoorlab.attacks import Backdoor

    ds = digits()
    trigger = square_trigger(ds.input_shape, 2, margin=0)
    return Backdoor(planted_digits(), trigger, TargetRule("all_to_one", ds.num_classes, TARGET), "planted", {})


def test_planted_trigger_is_recovered_at_its_label(planted_outcome) -> None:
    ds, verdict, m = digits(), planted_outcome.artifacts["verdict"], planted_outcome.metrics
    planted = _planted_backdoor()
    assert attack_success_rate(planted.model, ds.test, planted.trigger, planted.target_rule) > 0.95
    assert verdict.suspected[0] == TARGET and verdict.ranking[0] == TARGET
    assert m["flagged"] == 1.0 and m["target_ranked_first"] == 1.0 and m["target_anomaly_index"] > 2
    assert m["true_trigger_l1"] == 4.0 and m["target_statistic"] < 8.0  # within 2x of the 2x2 trigger
    assert verdict.masks.shape == (10, 1, 8, 8) and verdict.patterns.shape == (10, 1, 8, 8)
    assert verdict.examples.shape == (10, 4, 1, 8, 8)
    mask = verdict.masks[TARGET, 0]
    assert float(mask[5:, 5:].sum()) > 0.6 * float(mask.sum())  # the mass sits in the trigger's corner
    # the reversed trigger works on the model: stamped val images go to the target
    stamped = stamp_all(ds.val.x, verdict.masks[TARGET : TARGET + 1], verdict.patterns[TARGET : TARGET + 1])[0]
    assert float((planted_digits()(stamped).argmax(1) == TARGET).float().mean()) > 0.9
    assert planted_outcome.artifacts["true_target"] == TARGET
    assert verdict.details["reached_threshold"].all()
    assert verdict.alpha is None and verdict.cutoff == 2.0  # a fixed cutoff states no model-level alpha
    assert verdict.details["index_scale"] == "linear"
    # ... but the model-level p-value is still given: the planted trigger's index (about 4.4 with 16 images per
    # step, 3.1 with 32) against the normal null of 10 labels
    assert 0 < verdict.p_value < 0.3


def test_batched_and_per_label_agree() -> None:
    short = dict(patience=2, early_stop_patience=3, max_epochs=16, batches_per_epoch=1, batch_size=32, cutoff=2.0)
    batched = NeuralCleanse(**short).inspect(planted_digits(), digits().val, seed=0, device="cpu")
    per_label = NeuralCleanse(mode="per_label", **short).inspect(planted_digits(), digits().val, seed=0, device="cpu")
    assert batched.suspected == [TARGET]
    assert per_label.suspected == batched.suspected
    torch.testing.assert_close(per_label.statistic, batched.statistic, rtol=0.05, atol=0.5)
    assert per_label.details["epochs"].tolist() == batched.details["epochs"].tolist()


def test_the_model_is_not_changed() -> None:
    model = planted_digits()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    NeuralCleanse(max_epochs=1, batches_per_epoch=1).inspect(model, digits().val, seed=0, device="cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_unlearning_removes_a_trained_backdoor() -> None:
    ds, bd = digits(), backdoored_digits()
    before = backdoor_metrics(bd.model, ds.test, bd.trigger, bd.target_rule)
    repair = DEFENSES.get("nc_unlearning")(inspection=FAST)
    outcome = evaluate_defense(repair, bd.model, bd, EvaluationContext(ds, seed=0, device="cpu"))
    assert before["asr"] > 0.9
    assert outcome.metrics["flagged"] == 1.0 and outcome.artifacts["verdict"].suspected[0] == TARGET
    assert outcome.metrics["asr"] < before["asr"] - 0.4
    assert outcome.metrics["clean_accuracy"] > before["clean_accuracy"] - 0.15  # one epoch on 180 images costs some
    assert backdoor_metrics(bd.model, ds.test, bd.trigger, bd.target_rule) == before  # input model untouched


def test_unlearning_reuses_the_inspector_cells_verdict(monkeypatch) -> None:
    """With a shared ``ctx.verdicts`` the inspector runs once: the repair takes its verdict instead of inspecting."""
    ds, bd = digits(), backdoored_digits()
    ctx = EvaluationContext(ds, seed=0, device="cpu", verdicts={})
    inspected = evaluate_defense(DEFENSES.get("neural_cleanse")(**FAST), bd.model, bd, ctx)
    assert len(ctx.verdicts) == 1

    def no_second_inspection(*args, **kwargs):
        raise AssertionError("inspected again")

    monkeypatch.setattr(NeuralCleanse, "inspect", no_second_inspection)
    repaired = evaluate_defense(DEFENSES.get("nc_unlearning")(inspection=FAST), bd.model, bd, ctx)
    assert repaired.artifacts["verdict"] is inspected.artifacts["verdict"]
    other = DEFENSES.get("nc_unlearning")(inspection={**FAST, "max_epochs": 39})  # another inspector: inspects
    with pytest.raises(AssertionError, match="inspected again"):
        evaluate_defense(other, bd.model, bd, ctx)


def test_registered_as_inspector() -> None:
    assert DEFENSES.get("neural_cleanse").kind == "inspector"
    assert DEFENSES.get("nc_unlearning").kind == "repair"


def test_bad_input_raises_config_error() -> None:
    model, ds = planted_digits(), digits()
    with pytest.raises(ConfigError, match="needs clean images"):
        NeuralCleanse().inspect(model, None, input_shape=ds.input_shape)
    with pytest.raises(ConfigError, match=r"pixels in \[0, 1\]"):
        NeuralCleanse().inspect(model, Split(ds.val.x * 255, ds.val.y))
    with pytest.raises(ConfigError, match="at least 10 clean images"):
        NeuralCleanse().inspect(model, ds.val.head(3))
    with pytest.raises(ConfigError, match="does not accept inputs of shape"):
        NeuralCleanse().inspect(model, Split(torch.rand(20, 1, 28, 28), torch.zeros(20, dtype=torch.long)))
    with pytest.raises(ConfigError, match="lr"):
        _validated({"lr": -1})
    with pytest.raises(ConfigError, match="unknown field"):
        _validated({"learning_rate": 0.1})


def _validated(params: dict):
    return DEFENSES.build("neural_cleanse", params)


def test_l1_is_finite_and_positive(planted_outcome) -> None:
    stat = planted_outcome.artifacts["verdict"].statistic
    assert all(math.isfinite(v) and v > 0 for v in stat.tolist())
