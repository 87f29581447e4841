"""The repairs of issue 19 (ANP, I-BAU, NAD, SAU, CLP, FST) and the evaluator's post-repair ``retuned_asr``.

Known answers by hand (CLP's channel Lipschitz bound, NAD's attention map, ANP's threshold rule), the threat model
(no repair touches the test split), and, marked slow, I-BAU and ANP lowering the ASR of a backdoor planted in
digits.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from backdoorlab.attacks import ATTACKS
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.repair.anp import ANP
from backdoorlab.defenses.repair.clp import channel_lipschitz, clp_prune, conv_bn_pairs
from backdoorlab.defenses.repair.fst import FST
from backdoorlab.defenses.repair.nad import attention_map, find_stages
from backdoorlab.experiments.evaluation import (
    EvaluationContext,
    defender_data,
    evaluate_repair,
    measure_model,
    retuned_asr,
)
from backdoorlab.models import TrainingConfig, build_model

from .test_contracts import FAST_DEFENSES

NEW = ("anp", "i_bau", "nad", "sau", "clp", "fst")


@pytest.fixture(scope="module")
def planted(digits):
    """BadNets (3x3 square, target 0, 10%) planted in badnet_cnn on digits."""
    cfg = TrainingConfig(epochs=8, batch_size=64, lr=3e-3, augment_shift=0)
    return ATTACKS.build("badnets", {}).run(digits, "badnet_cnn", cfg, seed=0, progress=False)


def test_clp_channel_bound_matches_a_hand_computation():
    conv = nn.Conv2d(2, 2, (1, 2), bias=False)
    bn = nn.BatchNorm2d(2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, 0, :] = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # singular values 4, 3
        conv.weight[1, :, 0, :] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # rank one, singular value 2
        bn.weight.copy_(torch.tensor([-1.0, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0 - bn.eps, 1.0 - bn.eps]))
    assert torch.allclose(channel_lipschitz(conv, None), torch.tensor([4.0, 2.0]))
    assert torch.allclose(channel_lipschitz(conv, bn), torch.tensor([4.0 * 0.5, 2.0 * 3.0]))


def test_clp_prunes_the_outlying_channel_of_each_layer():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.ReLU())
    with torch.no_grad():
        for conv in (model[0], model[3]):
            conv.weight.fill_(0.1)
            conv.weight[2] *= 50  # one channel with a huge Lipschitz bound
    assert [bn is not None for _, bn in conv_bn_pairs(model)] == [True, False]
    assert clp_prune(model, u=2.0) == 2
    assert float(model[1].weight[2].detach()) == 0 and float(model[1].bias[2].detach()) == 0
    assert float(model[3].weight[2].detach().abs().sum()) == 0 and float(model[3].weight[1].abs().sum()) > 0


def test_anp_masks_lie_in_unit_interval_and_the_threshold_uses_validation_accuracy_only(digits, planted):
    anp = ANP(iterations=20, batch_size=64)
    masks = anp.learn_masks(planted.model, digits.val, seed=0, device="cpu")
    assert [len(m) for m in masks] == [16, 32]  # badnet_cnn has no BatchNorm: conv channels
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in masks)
    assert any(float(m.min()) < 1 for m in masks), "twenty iterations must move some mask"
    grid = anp.grid()
    assert grid[0] == 0 and grid[-1] == pytest.approx(0.9) and len(grid) == 19
    curve = [0.9, 0.9, 0.89, 0.885, 0.87, *[0.5] * 14]
    assert anp.choose(curve) == pytest.approx(0.15)  # 0.87 is 3 points down: stop before it
    assert ANP(threshold=0.2).choose(curve) == 0.2


def test_nad_attention_map_and_stages_by_hand():
    f = torch.zeros(1, 2, 2, 2)
    f[0, 0, 0, 0], f[0, 1, 0, 0], f[0, 1, 1, 1] = 3.0, -4.0, 5.0  # sum of squares: 25 at (0,0) and (1,1)
    assert torch.allclose(attention_map(f, 2), torch.tensor([[1, 0, 0, 1]]) / 2**0.5, atol=1e-6)
    model = build_model("cnn_small", (3, 32, 32), 10)
    assert find_stages(model, (3, 32, 32)) == ["net.0.12", "net.0.19", "net.0"]


def test_fst_keeps_the_head_norm_and_moves_it(digits, planted):
    before = planted.model.net[-1].weight.detach().clone()
    # one epoch cannot retrain the re-initialised head: the guard (on by default) would keep the input model
    repaired = FST(epochs=1, max_accuracy_drop=1.0).repair(planted.model, digits.val, seed=0, device="cpu")
    after = repaired.net[-1].weight
    assert float(after.norm()) == pytest.approx(float(before.norm()), rel=1e-4)
    assert float(torch.nn.functional.cosine_similarity(after.flatten(), before.flatten(), dim=0)) < 0.5


class _Forbidden:
    """A split that fails the test when anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"a repair read the test split ({name})")

    def __len__(self):
        raise AssertionError("a repair read the test split (len)")


@pytest.mark.parametrize("name", NEW)
def test_no_repair_reads_the_test_split(name, digits, planted):
    guarded = copy.copy(digits)
    object.__setattr__(guarded, "test", _Forbidden())
    repair = DEFENSES.build(name, FAST_DEFENSES.get(name, {}))
    clean = defender_data(repair, guarded, seed=0)
    assert torch.equal(clean.x[: len(digits.val)], digits.val.x)  # the defender's clean split, nothing poisoned
    repaired = repair.repair(planted.model, clean, seed=0, device="cpu", progress=False)
    assert repaired(digits.val.x[:2]).shape == (2, 10)


def test_retuned_asr_is_measured_by_the_evaluator_on_request(digits, planted):
    ctx = EvaluationContext(digits, seed=0)
    plain = evaluate_repair(DEFENSES.build("fst", {"epochs": 1}), planted.model, planted, ctx)
    assert "retuned_asr" not in plain.metrics
    kept = copy.deepcopy(plain.artifacts["model"])
    values = [retuned_asr(kept, planted, digits, seed=0) for _ in range(2)]
    assert values[0] == values[1] and 0 <= values[0] <= 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(kept.state_dict().values(), plain.artifacts["model"].state_dict().values(), strict=True)
    )
    ctx.retune = True
    assert "retuned_asr" in evaluate_repair(DEFENSES.build("clp"), planted.model, planted, ctx).metrics


@pytest.mark.slow
@pytest.mark.parametrize("name,params", [("i_bau", {}), ("anp", {"iterations": 300, "max_accuracy_drop": 0.05})])
def test_repair_lowers_the_asr_of_a_planted_backdoor(name, params, digits, planted):
    before = measure_model(planted.model, planted, digits.test)
    after = evaluate_repair(DEFENSES.build(name, params), planted.model, planted, EvaluationContext(digits)).metrics
    assert before["asr"] > 0.9
    assert after["asr"] < 0.8 * before["asr"], f"{name} left ASR {after['asr']:.3f} of {before['asr']:.3f}"
    assert after["clean_accuracy"] > before["clean_accuracy"] - 0.1


@pytest.mark.parametrize("name, wrecking", [("i_bau", {"lr": 1.0}), ("sau", {"lr": 1.0, "rounds": 2})])
def test_a_repair_that_wrecks_the_model_is_retried_then_reverted_by_the_guard(name, wrecking, digits, planted):
    from backdoorlab.defenses.repair.accuracy_guard import accuracy

    repair = DEFENSES.build(name, {**FAST_DEFENSES.get(name, {}), **wrecking, "max_accuracy_drop": 0.05})
    repaired = repair.repair(planted.model, digits.val, seed=0, device="cpu")
    figures, _ = repair.figures(repaired, {}, device="cpu")
    assert figures["guard_accuracy_before"] == pytest.approx(accuracy(planted.model, digits.val, "cpu"))
    assert figures["guard_accuracy_after"] >= figures["guard_accuracy_before"] - 0.05
    assert figures["guard_lr_scale"] in (0.0, 0.1)  # the first try (lr 1.0) fell too far
    assert accuracy(repaired, digits.val, "cpu") == pytest.approx(figures["guard_accuracy_after"])


def test_anp_and_clp_knob_curves_reach_the_report(digits, planted, tmp_path):
    from types import SimpleNamespace

    from backdoorlab.report.sections import defense_sections

    ctx = EvaluationContext(digits, seed=0)
    records = [
        SimpleNamespace(
            attack="badnets",
            defense=name,
            method=name,
            seed=0,
            outcome=evaluate_repair(DEFENSES.build(name, FAST_DEFENSES.get(name, {})), planted.model, planted, ctx),
        )
        for name in ("anp", "clp")
    ]
    anp, clp = defense_sections(records, tmp_path)
    assert anp.title.startswith("ANP") and clp.title.startswith("CLP")
    threshold = records[0].outcome.metrics["pruning_threshold"]
    assert anp.tables[0].rows[0][1] == f"{threshold:.3g}"  # the value the repair chose, not a curve point
    assert clp.tables[0].rows[0][1] == "3"  # CLP's u
    assert [f.name for f in (*anp.figures, *clp.figures)] == ["anp_knob.png", "clp_knob.png"]
    assert all(f.stat().st_size > 5000 for f in (*anp.figures, *clp.figures))
