import numpy as np
import pytest
import torch

from backdoorlab.attacks import ATTACKS, TargetRule
from backdoorlab.data import Split, build_dataset
from backdoorlab.errors import ConfigError, DataError
from backdoorlab.models import train_new_model
from backdoorlab.triggers import (
    REFLECTION_MODELS,
    ReflectionTrigger,
    fit_images,
    gaussian_blur,
    ghost_copies,
    trigger_from_state,
    vignette,
)

SMALL = {"offset": [1, 3]}  # ghost offsets that fit 8x8 digits


def _reflections(n=6, shape=(3, 10, 12), seed=1):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model", REFLECTION_MODELS)
def test_each_reflection_model_keeps_shape_and_range(images, model):
    trig = ReflectionTrigger(_reflections(), model, offset=(2, 4), seed=3)
    out = trig(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert (out - images).abs().mean() > 0.01, "the reflection changes the image"
    assert torch.equal(trig(images), out), "deterministic"
    assert torch.allclose(trig(images[:2]), out[:2], atol=1e-5), "one row of draws per image"
    assert not torch.equal(ReflectionTrigger(_reflections(), model, offset=(2, 4), seed=4)(images), out)


def test_same_depth_is_the_weighted_blend_in_linear_light(images):
    refl = _reflections(1)
    trig = ReflectionTrigger(refl, "same_depth", reflection_weight=(0.3, 0.3), gamma=1.0)
    assert torch.allclose(trig(images), 0.7 * images + 0.3 * refl, atol=1e-6)
    gamma = ReflectionTrigger(refl, "same_depth", reflection_weight=(0.3, 0.3))(images)
    expected = (0.7 * images**2.2 + 0.3 * refl**2.2) ** (1 / 2.2)
    assert torch.allclose(gamma, expected, atol=1e-5)


def test_blur_ghost_and_vignette_helpers():
    flat = torch.full((2, 1, 12, 12), 0.4)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.0, 5.0])), flat, atol=1e-6)
    noise = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(noise, torch.tensor([1.0, 3.0]))
    assert blurred[1].std() < blurred[0].std() < noise[0].std(), "a larger sigma smooths more"
    assert torch.allclose(
        ghost_copies(noise, torch.zeros(2, 2, dtype=torch.long), torch.tensor([0.3, 1.0])), noise, atol=1e-5
    )
    dot = torch.zeros(1, 1, 20, 20)
    dot[0, 0, 10, 10] = 1.0
    ghost = ghost_copies(dot, torch.tensor([[4, 4]]), torch.tensor([0.5]))
    peaks = (ghost[0, 0] > 0.05).nonzero()
    assert len(peaks) >= 2 and (peaks.max(0).values - peaks.min(0).values >= 3).all(), "two shifted copies"
    mask = vignette(12, 12, torch.zeros(1, 2))
    assert mask.shape == (1, 1, 12, 12) and float(mask.max()) <= 1
    assert mask[0, 0, 5:7, 5:7].min() > 0.9 and mask[0, 0, 0, 0] < 0.05


def test_reflection_trigger_state_round_trip(images):
    trig = ReflectionTrigger(_reflections(), "ghost", offset=(2, 3), seed=7)
    again = trigger_from_state(trig.to_state())
    assert isinstance(again, ReflectionTrigger) and torch.equal(again(images), trig(images))


def test_reflection_trigger_checks():
    with pytest.raises(ConfigError, match="ghost offset range"):
        ReflectionTrigger(_reflections(shape=(1, 8, 8)), offset=(3, 8))
    with pytest.raises(ConfigError, match="unknown reflection model"):
        ReflectionTrigger(_reflections(), "mirror")
    with pytest.raises(ConfigError, match="cannot be applied"):
        ReflectionTrigger(_reflections(), offset=(1, 2))(torch.rand(2, 1, 10, 12))


def _train(n=300, k=10):
    return Split(torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(n) % k)


def test_clean_label_poisoning_touches_only_target_class_images():
    train = _train()
    attack = ATTACKS.build("refool", {"target": 3, "target_rate": 0.5, **SMALL})
    trig = attack.reflection_trigger(torch.rand(5, 1, 8, 8), seed=0)
    out = attack.poison(train, trig, TargetRule("all_to_one", 10, 3), seed=0)
    idx = out.poisoned_indices
    assert len(idx) == 15, "half of the 30 target-class images"
    assert train.y[idx].eq(3).all() and torch.equal(out.split.y, train.y), "labels unchanged"
    changed = (out.split.x != train.x).flatten(1).any(dim=1)
    assert changed.nonzero().flatten().tolist() == idx.tolist()


def test_dirty_label_poisoning_relabels_other_classes():
    train = _train()
    attack = ATTACKS.build("refool", {"variant": "dirty_label", "poison_rate": 0.1, **SMALL})
    out = attack.poison(
        train, attack.reflection_trigger(torch.rand(5, 1, 8, 8), 0), TargetRule("all_to_one", 10, 0), seed=0
    )
    idx = out.poisoned_indices
    assert len(idx) == 30 and train.y[idx].ne(0).all() and out.split.y[idx].eq(0).all()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (0.05, 0.45)),  # clean label: the reference code's alpha_t = 1 - U(0.05, 0.45)
        ({"variant": "dirty_label"}, (0.6, 0.6)),  # dirty label: BackdoorBench's fixed alpha_t = 0.4
        ({"variant": "dirty_label", "reflection_weight": [0.1, 0.2]}, (0.1, 0.2)),
    ],
)
def test_reflection_weight_default_follows_the_variant(params, expected):
    trig = ATTACKS.build("refool", {**params, **SMALL}).reflection_trigger(torch.rand(3, 1, 8, 8), seed=0)
    assert trig.reflection_weight == pytest.approx(expected)
    assert trig.describe()["reflection_weight"] == pytest.approx(list(expected))


def test_pool_from_another_dataset_file(tmp_path, digits):
    path = tmp_path / "other.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), y=np.arange(40) % 2)
    attack = ATTACKS.build("refool", {"pool": f"npz:{path}", "candidates": 10, "selected": 5, **SMALL})
    pool = attack.candidate_pool(digits, seed=0)
    assert pool.shape == (10, 1, 8, 8) and float(pool.max()) <= 1
    assert fit_images(torch.rand(2, 1, 4, 4), (3, 8, 8)).shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"mode": "all_to_all"}, ConfigError, "clean_label poisons the target class only"),
        ({"candidates": 100}, ConfigError, r"selected \(200\) cannot exceed candidates \(100\)"),
        ({"pool": "imagenet"}, ConfigError, "unknown refool pool"),
        ({"pool": "val"}, ConfigError, "refool pool 'val' is data the attacker does not hold"),
        ({"pool": "test"}, ConfigError, "refool pool 'test' is data the attacker does not hold"),
        ({"pool": "npz:/nonexistent/x.npz"}, DataError, "reflection pool file not found"),
        ({"target": 12}, ConfigError, "refool target 12 is outside the classes 0..9"),
        ({"offset": [3, 8]}, ConfigError, "ghost offset range"),
    ],
)
def test_refool_parameter_checks(digits, params, error, message):
    with pytest.raises(error, match=message):
        ATTACKS.build("refool", {**SMALL, **params}).check(digits)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.flatten(1)}


def test_reflection_pool_meets_neither_the_defenders_nor_the_evaluators_data():
    """Every image is unique (random pixels), so a pool image equal to a val or test image is the same sample."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(400, 1, 8, 8, generator=gen), torch.arange(400) % 4
    ds = build_dataset("unique", x, y, None, None, val_size=40, test_size=80)
    attack = ATTACKS.build("refool", {"candidates": 500, "selected": 20, "selection_rounds": 0, **SMALL})
    assert attack.pool == "train"
    pool = _rows(attack.pool_images(ds))
    assert len(pool) == int((ds.train.y != attack.target).sum())
    assert pool <= _rows(ds.train.x)
    assert not pool & _rows(ds.val.x) and not pool & _rows(ds.test.x)
    trigger = attack.reflection_trigger(attack.candidate_pool(ds, seed=0), seed=0)
    assert not _rows(trigger.reflections) & (_rows(ds.val.x) | _rows(ds.test.x))


def test_refool_run_with_selection(digits, fast_training):
    params = {
        "variant": "dirty_label",
        "candidates": 30,
        "selected": 10,
        "selection_rounds": 2,
        "selection_epochs": 1,
        "score_images": 200,
        **SMALL,
    }
    attack = ATTACKS.build("refool", params)
    clean = train_new_model("badnet_cnn", digits, fast_training, seed=0, progress=False)
    weights = attack.select_reflections(digits, clean, fast_training, attack.candidate_pool(digits, 0), seed=0)
    assert weights.shape == (30,) and (weights >= 0).all() and weights.sum() > 0
    bd = attack.run(digits, "badnet_cnn", fast_training.model_copy(update={"epochs": 3}), seed=0, progress=False)
    assert bd.info["variant"] == "dirty_label" and bd.info["reflections"] == 10
    assert len(bd.trigger.reflections) == 10 and len(bd.info["selection_weights"]) == 10
    assert bd.info["selection_weights"] == sorted(bd.info["selection_weights"], reverse=True)
    assert bd.info["injection_rate"] == pytest.approx(len(bd.poisoned_indices) / len(digits.train))
