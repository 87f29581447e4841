"""The guard on repairs that train: a repair that destroys clean accuracy is retried at lr/10, then reverted."""

from __future__ import annotations

import pytest
import torch

from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.repair.accuracy_guard import accuracy, guarded_training
from backdoorlab.models import build_model, train_model


@pytest.fixture(scope="module")
def trained(digits, fast_training):
    m = build_model("badnet_cnn", digits.input_shape, digits.num_classes, digits.mean, digits.std, seed=0)
    return train_model(m, digits.train.x, digits.train.y, fast_training, seed=0, device="cpu", progress=False)


def _wrecked(model):
    broken = build_model("badnet_cnn", (1, 8, 8), 10, [0.5], [0.2], seed=0)
    broken.load_state_dict(model.state_dict())
    torch.nn.init.zeros_(broken.net[-1].weight)
    return broken.eval()


def test_guard_retries_then_reverts(digits, trained):
    clean = digits.val
    tried = []

    def train(scale):
        tried.append(scale)
        return _wrecked(trained) if scale == 1.0 else trained

    kept, figures = guarded_training(train, trained, clean, 0.1)
    assert kept is trained and tried == [1.0, 0.1] and figures["guard_lr_scale"] == 0.1
    kept, figures = guarded_training(lambda s: _wrecked(trained), trained, clean, 0.1)
    assert figures["guard_reverted"] == 1.0 and figures["guard_lr_scale"] == 0.0
    assert all(
        torch.equal(a, b) for a, b in zip(kept.state_dict().values(), trained.state_dict().values(), strict=True)
    )
    assert figures["guard_accuracy_after"] == figures["guard_accuracy_before"] == accuracy(trained, clean, "cpu")


@pytest.mark.slow
def test_fine_tuning_that_would_destroy_the_model_is_stopped(digits, trained):
    before = accuracy(trained, digits.test, "cpu")
    wild = {"lr": 8.0, "epochs": 2, "augment_shift": 0}
    unguarded = DEFENSES.build("fine_tuning", {**wild, "max_accuracy_drop": 1.0})
    destroyed = unguarded.repair(trained, digits.val, seed=0, device="cpu")
    assert accuracy(destroyed, digits.test, "cpu") < before - 0.3
    guarded = DEFENSES.build("fine_tuning", wild)
    kept = guarded.repair(trained, digits.val, seed=0, device="cpu")
    figures, _ = guarded.figures(trained, {"test": digits.test}, device="cpu")
    assert accuracy(kept, digits.test, "cpu") >= before - 0.1
    assert figures["guard_lr_scale"] < 1.0 or figures["guard_reverted"] == 1.0


@pytest.mark.slow
def test_default_fine_tuning_passes_the_guard_unchanged(digits, trained):
    repair = DEFENSES.build("fine_tuning", {"epochs": 2, "augment_shift": 0})
    repaired = repair.repair(trained, digits.val, seed=0, device="cpu")
    figures, _ = repair.figures(trained, {"test": digits.test}, device="cpu")
    assert figures["guard_lr_scale"] == 1.0 and figures["guard_reverted"] == 0.0
    reference = DEFENSES.build("fine_tuning", {"epochs": 2, "augment_shift": 0, "max_accuracy_drop": 1.0})
    same = reference.repair(trained, digits.val, seed=0, device="cpu")
    assert all(
        torch.equal(a, b) for a, b in zip(repaired.state_dict().values(), same.state_dict().values(), strict=True)
    )
