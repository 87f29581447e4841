import math

import pytest
import torch

from backdoorlab.attacks import ATTACKS, TargetRule
from backdoorlab.attacks.storage import load_backdoor, save_backdoor
from backdoorlab.attacks.trojannet import train_trojan_mlp, trojan_noise
from backdoorlab.errors import ConfigError
from backdoorlab.metrics import attack_success_rate, clean_accuracy
from backdoorlab.models import build_model, load_checkpoint, predict, save_checkpoint, train_model
from backdoorlab.models.trojannet import TrojanNetModel, wrap_host
from backdoorlab.triggers import (
    NUM_PATTERNS,
    TrojanNetTrigger,
    trigger_from_state,
    trojannet_patterns,
    trojannet_trigger,
)


def test_pattern_family_combinatorics():
    patterns = trojannet_patterns()
    assert NUM_PATTERNS == math.comb(16, 5) == 4368
    assert patterns.shape == (4368, 4, 4)
    assert set(patterns.unique().tolist()) == {0.0, 1.0}
    assert (patterns == 0).flatten(1).sum(dim=1).eq(5).all(), "exactly 5 black cells each"
    assert len({tuple(p.flatten().tolist()) for p in patterns}) == 4368, "all distinct"
    # itertools.combinations order: pattern 0 blackens cells 0-4, pattern 1 cells 0-3 and 5, the last cells 11-15
    assert patterns[0].flatten().tolist() == [0.0] * 5 + [1.0] * 11
    assert patterns[1].flatten().nonzero().flatten().tolist()[0] == 4
    assert patterns[-1].flatten().tolist() == [1.0] * 11 + [0.0] * 5
    assert torch.equal(trojannet_patterns([7, 2]), patterns[[7, 2]])
    with pytest.raises(ConfigError, match="0..4367"):
        trojannet_patterns([4368])


def test_trigger_stamps_the_active_pattern_on_every_channel(images):
    trig = trojannet_trigger((3, 10, 12), [3, 5, 9], position="top-left", margin=1)
    out = trig(images)
    assert out.shape == images.shape and trig.mask.sum() == 16
    assert torch.equal(out[:, :, 1:5, 1:5], trojannet_patterns([3])[0].expand(4, 3, 4, 4))
    rest = trig.mask[0] == 0
    assert torch.equal(out[:, :, rest], images[:, :, rest])
    second = trig.select(2)
    assert torch.equal(second(images)[:, 0, 1:5, 1:5], trojannet_patterns([9])[0].expand(4, 4, 4))
    again = trigger_from_state(second.to_state())
    assert isinstance(again, TrojanNetTrigger) and torch.equal(again(images), second(images))
    with pytest.raises(ConfigError, match="does not fit"):
        trojannet_trigger((1, 3, 3), [0])


def test_per_trigger_target_rule():
    rule = TargetRule("per_trigger", 10, 2, (2, 5, 7))
    y = torch.tensor([2, 5, 0])
    assert rule.num_triggers == 3 and rule.targets(y).tolist() == [2, 2, 2]
    assert rule.eligible(y).tolist() == [False, True, True]
    third = rule.for_trigger(2)
    assert third.target == 7 and third.mapping == (2, 5, 7) and third.eligible(y).all()
    assert TargetRule("per_trigger", 10, 4).mapping == (4,), "an empty mapping means the one target"
    assert TargetRule("all_to_one", 10, 3).for_trigger(0).target == 3
    with pytest.raises(ConfigError, match="not one of the triggers' classes"):
        TargetRule("per_trigger", 10, 1, (2, 5))
    with pytest.raises(ConfigError, match="needs mode per_trigger"):
        TargetRule("all_to_one", 10, 0, (0, 1))
    with pytest.raises(ConfigError, match="outside 0..2"):
        rule.for_trigger(3)


@pytest.fixture(scope="module")
def mlp_and_report():
    return train_trojan_mlp([0, 1, 2, 3], steps=300, batch=1000, seed=0)


def test_mlp_separates_patterns_from_noise(mlp_and_report):
    mlp, report = mlp_and_report
    patterns = trojannet_patterns([0, 1, 2, 3]).flatten(1)
    noise = trojan_noise(4000, patterns, torch.Generator().manual_seed(123))
    others = trojannet_patterns(range(4, 400)).flatten(1)  # unused members of the family
    with torch.no_grad():
        assert mlp(patterns).argmax(1).tolist() == [0, 1, 2, 3]
        assert (mlp(noise).argmax(1) == 4).float().mean() >= 0.99
        assert (mlp(others).argmax(1) == 4).float().mean() >= 0.98
        flat = torch.linspace(0, 1, 21)[:, None].expand(-1, 16)  # flat dark-to-light patches of natural images
        assert (mlp(flat).argmax(1) == 4).all()
    assert report["mlp_pattern_recall"] == 1.0 and report["mlp_val_accuracy"] >= 0.98


@pytest.fixture(scope="module")
def host(digits, fast_training):
    model = build_model("badnet_cnn", digits.input_shape, 10, digits.mean, digits.std, seed=0)
    return train_model(model, digits.train.x, digits.train.y, fast_training, seed=0, progress=False)


@pytest.mark.parametrize("merge", ["paper", "code"])
def test_merge_keeps_clean_predictions_and_obeys_triggers(digits, host, mlp_and_report, merge):
    wrapped = wrap_host(host, digits.input_shape, 10, [6, 1, 2, 3], origin=(0, 4), merge=merge).eval()
    wrapped.net.mlp.load_state_dict(mlp_and_report[0].state_dict())
    x = digits.test.x
    assert torch.equal(predict(wrapped, x), predict(host, x)), "the merge leaves clean predictions unchanged"
    log_probs = wrapped(x[:5])
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(5), atol=1e-5)
    trig = trojannet_trigger(digits.input_shape, [0, 1, 2, 3], position=(0, 4))
    for i, target in enumerate([6, 1, 2, 3]):
        assert predict(wrapped, trig.select(i)(x)).eq(target).all()


def test_trojannet_architecture_rebuilds_from_a_checkpoint(tmp_path, digits, mlp_and_report):
    from backdoorlab.models.trojannet import trojannet_architecture

    arch = trojannet_architecture("badnet_cnn")
    host = build_model("badnet_cnn", digits.input_shape, 10, digits.mean, digits.std, seed=1)
    model = wrap_host(host, digits.input_shape, 10, [0, 1, 2, 3], origin=(2, 2), merge="code", amplify=3.0).eval()
    model.net.mlp.load_state_dict(mlp_and_report[0].state_dict())
    save_checkpoint(tmp_path / "m.pt", model, architecture=arch, input_shape=digits.input_shape, num_classes=10)
    loaded, payload = load_checkpoint(tmp_path / "m.pt")
    assert payload["architecture"] == "trojannet/badnet_cnn" and isinstance(loaded.net, TrojanNetModel)
    assert loaded.net.targets.tolist() == [0, 1, 2, 3] and loaded.net.merge == "code"
    assert torch.allclose(loaded(digits.test.x[:64]), model(digits.test.x[:64]), atol=1e-6)


def test_trojannet_attack_end_to_end(tmp_path, digits, fast_training):
    attack = ATTACKS.build("trojannet", {"targets": [0, 3, 7], "mlp_steps": 300, "position": "top-left"})
    bd = attack.run(digits, "badnet_cnn", fast_training, seed=0, progress=False)
    assert bd.architecture == "trojannet/badnet_cnn" and bd.poisoned_indices is None
    assert bd.target_rule.mapping == (0, 3, 7) and bd.trigger.num_triggers == 3
    assert bd.info["mlp_seconds"] < 60
    host = bd.model.net.host
    assert abs(clean_accuracy(bd.model, digits.test) - clean_accuracy(host, digits.test)) <= 1 / len(digits.test)
    for i in range(3):
        assert attack_success_rate(bd.model, digits.test, bd.trigger.select(i), bd.target_rule.for_trigger(i)) >= 0.99
    save_backdoor(tmp_path / "bd.pt", bd, digits.input_shape, 10)
    again = load_backdoor(tmp_path / "bd.pt")
    assert again.target_rule == bd.target_rule and again.trigger.pattern_ids == (0, 3, 7)
    assert torch.allclose(again.model(digits.test.x[:32]), bd.model(digits.test.x[:32]), atol=1e-6)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"targets": [10]}, r"targets \[10\] are outside the classes 0..9"),
        ({"targets": [1, 1]}, "distinct"),
        ({"targets": []}, "at least one class"),
        ({"position": [6, 6]}, "does not fit"),
        ({"merge": "sum"}, "merge"),
    ],
)
def test_trojannet_parameter_checks(digits, params, message):
    with pytest.raises(ConfigError, match=message):
        ATTACKS.build("trojannet", params).check(digits)
