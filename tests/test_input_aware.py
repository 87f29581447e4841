"""The input-aware dynamic attack (issue 18): its generator networks, the per-batch hook, the mask pre-training,
and a smoke run on a slice of digits."""

from __future__ import annotations

import copy

import pytest
import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.attacks.base import TargetRule
from backdoorlab.attacks.input_aware import InputAwarePoisoning, cross_stamp, pretrain_mask
from backdoorlab.attacks.storage import load_backdoor, save_backdoor
from backdoorlab.data import load_dataset
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.evaluation import make_probes
from backdoorlab.models import TrainingConfig
from backdoorlab.triggers import trigger_from_state
from backdoorlab.triggers.input_aware import InputAwareTrigger, default_shape, diversity_loss, mask_of, pattern_of
from backdoorlab.utils.seeding import make_generator


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 28, 28), (16, 2)),
        ((3, 32, 32), (32, 3)),
        ((1, 8, 8), (16, 2)),
        ((1, 30, 30), (16, 1)),
        ((3, 7, 7), (32, 0)),
    ],
)
def test_generators_fit_the_image_and_stay_in_range(shape, expected):
    assert default_shape(*shape) == expected
    trig = InputAwareTrigger.new(shape, seed=0)
    x = torch.rand(5, *shape, generator=make_generator(1))
    out = trig(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    pat, mask = pattern_of(trig.generator, x), mask_of(trig.mask_net, x)
    assert pat.shape == x.shape and mask.shape == (5, 1, *shape[1:])


def test_trigger_state_round_trip_and_shape_check():
    trig = InputAwareTrigger.new((1, 8, 8), seed=3)
    x = torch.rand(4, 1, 8, 8, generator=make_generator(0))
    again = trigger_from_state(trig.to_state())
    assert torch.equal(trig(x), again(x))
    assert not torch.equal(InputAwareTrigger.new((1, 8, 8), seed=4)(x), trig(x)), "the seed draws the weights"
    with pytest.raises(ConfigError, match="cannot be applied"):
        trig(torch.rand(2, 1, 9, 9))


def test_diversity_loss_value_and_finite_gradient_on_equal_outputs():
    x1, x2 = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    out1 = torch.zeros(2, 1, 2, 2, requires_grad=True)
    out2 = torch.full((2, 1, 2, 2), 0.5)
    assert diversity_loss(x1, x2, out1, out2).item() == pytest.approx(2.0, rel=1e-5)  # rms 1 / rms 0.5
    same = torch.zeros(2, 1, 2, 2, requires_grad=True)
    diversity_loss(x1, x2, same, torch.zeros(2, 1, 2, 2)).backward()
    assert torch.isfinite(same.grad).all()


def test_hook_poisons_crosses_and_steps_the_generator():
    trig = InputAwareTrigger.new((1, 8, 8), seed=0)
    trig.mask_net.eval().requires_grad_(False)
    trig.mask_net[-1].bias.data.fill_(0.5)  # an untrained mask is ~0 in eval mode: make it ~0.5 everywhere
    rule = TargetRule("all_to_one", 4, 3)
    hook = InputAwarePoisoning(trig, rule, rate=0.1, cross_rate=0.1, lambda_div=1.0, lr=0.01)
    x = torch.rand(20, 1, 8, 8, generator=make_generator(0))
    y = torch.arange(20) % 4
    xb, yb = hook(x, y, make_generator(1))
    assert torch.equal(yb[:2], torch.full((2,), 3)) and torch.equal(yb[2:], y[2:]), "cross rows keep their labels"
    assert torch.equal(xb[4:], x[4:]) and (xb[:4] != x[:4]).flatten(1).any(dim=1).all()
    assert xb.requires_grad and not x.requires_grad
    own = trig.stamp(x[2:4])[0]
    assert not torch.allclose(xb[2:4], own), "cross rows carry another input's trigger, not their own"
    before = [p.detach().clone() for p in trig.generator.parameters()]
    xb.sum().backward()  # stands for the trainer's loss.backward()
    hook(x, y, make_generator(2))  # the next batch takes the generator's step
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trig.generator.parameters(), strict=True))
    hook.finish()
    assert all(p.grad is None and not p.requires_grad for p in trig.generator.parameters())
    assert not trig.generator.training


def test_mask_pretraining_pulls_the_mask_towards_its_density(digits):
    trig = InputAwareTrigger.new(digits.input_shape, seed=0)
    x = digits.train.x[:256]
    with torch.no_grad():  # batch statistics, on a copy: an untrained net in eval mode gives ~0 everywhere
        start = float(mask_of(copy.deepcopy(trig.mask_net).train(), x).mean())
    info = pretrain_mask(
        trig, x, epochs=3, batch_size=64, lr=0.01, density=0.032, lambda_norm=100, lambda_div=1, seed=0
    )
    assert start > 0.2 and info["mask_mean"] < start - 0.05 and all(v == v for v in info.values())  # no NaN
    assert not trig.mask_net.training and not any(p.requires_grad for p in trig.mask_net.parameters())


def test_input_aware_smoke_on_digits(digits, tmp_path):
    attack = ATTACKS.build("input_aware", {"mask_epochs": 1, "mode": "all_to_all"})
    bd = attack.run(digits, "badnet_cnn", TrainingConfig(epochs=2, augment_shift=0), seed=0, device="cpu")
    assert bd.attack == "input_aware" and bd.poisoned_indices is None and bd.info["poisoning"] == "per_batch"
    assert bd.target_rule.mode == "all_to_all"
    x = digits.test.x[:16]
    triggered = bd.trigger(x)
    assert triggered.shape == x.shape and float(triggered.min()) >= 0 and float(triggered.max()) <= 1
    assert (triggered != x).flatten(1).any(dim=1).all(), "every input is stamped"
    assert not torch.allclose(cross_stamp(bd.trigger, x), triggered), "another input's trigger is not this one's"
    pat = pattern_of(bd.trigger.generator, x)
    assert (pat[0] - pat[1]).abs().mean() > 1e-3, "the trigger differs per input"
    probes = make_probes(bd, digits.test)  # the evaluator's triggered test inputs come from the generator
    assert torch.equal(probes.triggered.x, bd.trigger(digits.test.x))
    assert torch.equal(probes.triggered.y, (digits.test.y + 1) % digits.num_classes)
    path = tmp_path / "ia.pt"
    save_backdoor(path, bd, digits.input_shape, digits.num_classes)
    loaded = load_backdoor(path)
    assert torch.equal(loaded.trigger(x), triggered), "the saved backdoor carries its trained generator"


def test_input_aware_rejects_a_target_outside_the_classes(digits):
    with pytest.raises(ConfigError, match="target 12"):
        ATTACKS.build("input_aware", {"target": 12}).check(digits)
