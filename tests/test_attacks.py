import pytest
import torch

from backdoorlab.attacks import ATTACKS, BadNets, TargetRule
from backdoorlab.data import Split
from backdoorlab.errors import ConfigError
from backdoorlab.metrics import backdoor_metrics
from backdoorlab.triggers import square_trigger


def _train_split(n=200, k=10):
    return Split(torch.rand(n, 1, 8, 8), torch.arange(n) % k)


def test_target_rule_all_to_one_and_all_to_all():
    y = torch.tensor([0, 1, 9])
    one = TargetRule("all_to_one", 10, target=0)
    assert one.targets(y).tolist() == [0, 0, 0] and one.eligible(y).tolist() == [False, True, True]
    every = TargetRule("all_to_all", 10)
    assert every.targets(y).tolist() == [1, 2, 0] and every.eligible(y).all()
    with pytest.raises(ConfigError, match="outside the classes"):
        TargetRule("all_to_one", 10, target=10)


def test_replace_poisoning_counts_and_labels():
    train = _train_split()
    attack = BadNets(poison_rate=0.1, target=3)
    trig = square_trigger((1, 8, 8), 3)
    rule = TargetRule("all_to_one", 10, 3)
    out = attack.poison(train, trig, rule, seed=0)
    idx = out.poisoned_indices
    assert len(out.split) == 200 and len(idx) == 20
    assert (train.y[idx] != 3).all(), "target-class images are never poisoned"
    assert out.split.y[idx].eq(3).all()
    assert torch.equal(out.split.x[idx], trig(train.x[idx]))
    others = torch.ones(200, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(out.split.x[others], train.x[others]) and torch.equal(out.split.y[others], train.y[others])


def test_add_poisoning_appends_copies():
    train = _train_split()
    out = BadNets(poison_rate=0.1, poisoning="add", mode="all_to_all").poison(
        train, square_trigger((1, 8, 8), 3), TargetRule("all_to_all", 10), seed=1
    )
    assert len(out.split) == 220 and out.poisoned_indices.tolist() == list(range(200, 220))
    assert torch.equal(out.split.x[:200], train.x)


def test_poison_indices_depend_on_seed_only():
    train = _train_split()
    args = (train, square_trigger((1, 8, 8), 3), TargetRule("all_to_one", 10, 0))
    a, b, c = (BadNets().poison(*args, seed=s).poisoned_indices for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"poison_rate": 1.5}, "poison_rate"),
        ({"poison_rate": 0}, "poison_rate"),
        ({"mode": "some"}, "mode"),
        ({"colour": 1}, "colour: unknown field"),
    ],
)
def test_badnets_parameter_validation(params, message):
    with pytest.raises(ConfigError, match=message):
        ATTACKS.build("badnets", params)


def test_badnets_checks_against_dataset(digits):
    with pytest.raises(ConfigError, match="target 10 is outside the classes 0..9"):
        BadNets(target=10).check(digits)
    with pytest.raises(ConfigError, match="larger than the 8x8 image"):
        BadNets(size=9).check(digits)


def test_unknown_attack_lists_names():
    with pytest.raises(ConfigError, match="valid names: adaptive_blend, .*badnets"):
        ATTACKS.get("trojan-horse")


def test_badnets_end_to_end_on_digits(digits, fast_training):
    bd = BadNets(size=2).run(digits, "badnet_cnn", fast_training, seed=0, progress=False)
    m = backdoor_metrics(bd.model, digits.test, bd.trigger, bd.target_rule)
    assert m["asr"] > 0.9 and m["clean_accuracy"] > 0.85
    assert bd.attack == "badnets" and bd.params["poison_rate"] == 0.1
    assert len(bd.poisoned_indices) == round(0.1 * len(digits.train))
