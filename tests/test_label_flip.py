import pytest
import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.data import Split
from backdoorlab.errors import ConfigError
from backdoorlab.metrics import clean_accuracy


def _train(n=500, k=10):
    return Split(torch.rand(n, 1, 8, 8), torch.arange(n) % k)


def test_random_flips_change_exactly_the_chosen_labels():
    train = _train()
    out = ATTACKS.build("label_flip", {"flip_rate": 0.2}).flip(train, 10, seed=0)
    idx = out.poisoned_indices
    assert len(idx) == 100 and len(idx.unique()) == 100
    assert out.split.y[idx].ne(train.y[idx]).all(), "a flipped label is always another class"
    keep = torch.ones(500, dtype=torch.bool)
    keep[idx] = False
    assert torch.equal(out.split.y[keep], train.y[keep]) and torch.equal(out.split.x, train.x)
    assert len(out.split.y[idx].unique()) == 10, "new labels spread over the classes"
    again = ATTACKS.build("label_flip", {"flip_rate": 0.2}).flip(train, 10, seed=0)
    assert torch.equal(again.split.y, out.split.y)
    assert not torch.equal(ATTACKS.build("label_flip", {"flip_rate": 0.2}).flip(train, 10, seed=1).split.y, out.split.y)


def test_flips_to_a_chosen_class():
    train = _train()
    out = ATTACKS.build("label_flip", {"flip_rate": 0.4, "mode": "to_target", "target": 7}).flip(train, 10, seed=0)
    idx = out.poisoned_indices
    assert len(idx) == 200 and train.y[idx].ne(7).all() and out.split.y[idx].eq(7).all()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"flip_rate": 0}, "flip_rate"),
        ({"flip_rate": 1.2}, "flip_rate"),
        ({"mode": "to_target", "target": 10}, "label_flip target 10"),
        ({"mode": "pairs"}, "mode"),
    ],
)
def test_label_flip_parameter_checks(digits, params, message):
    with pytest.raises(ConfigError, match=message):
        ATTACKS.build("label_flip", params).check(digits)


def test_label_flip_backdoor_has_no_trigger_and_costs_accuracy(digits, fast_training):
    bd = ATTACKS.build("label_flip", {"flip_rate": 0.6, "mode": "to_target"}).run(
        digits, "badnet_cnn", fast_training, seed=0, progress=False
    )
    assert bd.trigger is None and bd.target_rule is None
    assert len(bd.poisoned_indices) == round(0.6 * len(digits.train)) and bd.info["flipped"] == len(bd.poisoned_indices)
    assert clean_accuracy(bd.model, digits.test) < 0.8, "most labels point at one class: the model follows them"
