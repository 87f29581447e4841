"""The field's attacks (issue 18): their triggers' exact values, their poisoning, and the stealth figures."""

from __future__ import annotations

import math

import pytest
import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.attacks.adaptive import keep_random, piece_masks
from backdoorlab.attacks.base import TargetRule
from backdoorlab.attacks.clean_label import pgd
from backdoorlab.attacks.per_batch import BatchPoisoning
from backdoorlab.attacks.trojannn import selected_layer, strongest_neurons
from backdoorlab.data import Split, build_dataset
from backdoorlab.errors import ConfigError
from backdoorlab.models import TrainingConfig, build_model, train_model
from backdoorlab.stealth import stealth_metrics, trigger_stealth
from backdoorlab.triggers import QuantizeTrigger, WarpTrigger, corner_checkerboard, sinusoid_trigger, trigger_from_state
from backdoorlab.triggers.warping import identity_grid, warping_field
from backdoorlab.utils.seeding import make_generator


def tiny_dataset(n=200, classes=4, side=12, channels=1):
    gen = make_generator(0)
    x = torch.rand(n, channels, side, side, generator=gen)
    y = torch.arange(n) % classes
    return build_dataset("tiny", x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :], val_size=10)


def test_sig_sinusoid_has_the_papers_amplitude_and_frequency():
    trig = sinusoid_trigger((3, 4, 24), 20 / 255, 6)
    row = trig.pattern[0, 0]
    expected = torch.tensor([20 / 255 * math.sin(2 * math.pi * j * 6 / 24) for j in range(24)])
    assert torch.allclose(row, expected, atol=1e-6)
    assert torch.equal(trig.pattern[2, 3], row)  # same on every row and channel
    assert abs(float(trig.pattern.max()) - 20 / 255) < 1e-6  # j = 1 of a 4-pixel period hits the peak
    x = torch.full((1, 3, 4, 24), 0.5)
    assert torch.allclose(trig(x)[0, 1, 2], 0.5 + row)


def test_sig_defaults_and_train_signal():
    sig = ATTACKS.build("sig", {})
    assert sig.delta == pytest.approx(20 / 255) and sig.frequency == 6 and sig.poison_rate == 0.05
    sig = ATTACKS.build("sig", {"test_delta": 40 / 255})
    test = sig.make_trigger(tiny_dataset(side=24))  # 4 pixels a period: j = 1 is a peak
    assert float(test.pattern.max()) == pytest.approx(40 / 255, abs=1e-6)
    assert float(sig.train_trigger(test).pattern.max()) == pytest.approx(20 / 255, abs=1e-3)


def test_clean_label_poisons_only_target_images_and_keeps_labels():
    ds = tiny_dataset()
    sig = ATTACKS.build("sig", {"poison_rate": 0.1, "target": 2})
    trig = sig.make_trigger(ds)
    poisoned = sig.poison(ds.train, trig, sig.target_rule(ds), seed=0)
    assert len(poisoned.poisoned_indices) == round(0.1 * len(ds.train))
    assert (ds.train.y[poisoned.poisoned_indices] == 2).all()
    assert torch.equal(poisoned.split.y, ds.train.y)
    changed = (poisoned.split.x != ds.train.x).flatten(1).any(dim=1).nonzero().flatten()
    assert set(changed.tolist()) <= set(poisoned.poisoned_indices.tolist())
    with pytest.raises(ConfigError, match="target class 2 has"):
        ATTACKS.build("sig", {"poison_rate": 0.5, "target": 2}).poison(ds.train, trig, sig.target_rule(ds), 0)


def test_checkerboard_is_in_the_four_corners_at_its_amplitude():
    trig = corner_checkerboard((1, 10, 10), 64 / 255)
    p = trig.pattern[0]
    assert p[0, 0] == pytest.approx(64 / 255) and p[0, 1] == pytest.approx(-64 / 255)
    assert torch.equal(p[:3, :3], p[-3:, -3:]) and torch.equal(p[:3, -3:], p[-3:, :3])
    assert int((p != 0).sum()) == 36 and p[3:7, 3:7].abs().sum() == 0
    full = corner_checkerboard((1, 10, 10), 1.0)(torch.full((1, 1, 10, 10), 0.5))
    assert set(full[0, 0, :3, :3].flatten().tolist()) == {0.0, 1.0}


def test_bpp_squeezes_to_eight_levels():
    x = torch.linspace(0, 1, 256).reshape(1, 1, 16, 16)
    q = QuantizeTrigger(8)(x)
    assert len(torch.unique(q)) == 8 and (q * 7 - torch.round(q * 7)).abs().max() < 1e-5
    assert (q - x).abs().max() <= 0.5 / 7 + 1e-6
    d = QuantizeTrigger(2, dithering=True)(torch.full((1, 1, 8, 8), 0.25))
    assert set(d.unique().tolist()) == {0.0, 1.0} and abs(float(d.mean()) - 0.25) < 0.1  # error diffused


def test_wanet_field_is_smooth_bounded_and_its_noise_mode_differs():
    grid = warping_field(32, 32, 4, 0.5, 1.0, make_generator(0))
    delta = (grid - identity_grid(32, 32)) * 32 / 2  # in pixels
    assert grid.shape == (1, 32, 32, 2) and float(grid.abs().max()) <= 1
    assert 0 < float(delta.abs().max()) < 3  # s = 0.5: a sub-pixel to pixel-scale warp
    trig = WarpTrigger(grid)
    x = torch.rand(3, 3, 32, 32, generator=make_generator(1))
    assert torch.allclose(WarpTrigger(identity_grid(32, 32))(x), x, atol=1e-5)
    noisy = trig.noisy(x, make_generator(2))
    assert not torch.allclose(noisy, trig(x)) and (noisy - trig(x)).abs().mean() < (trig(x) - x).abs().mean() * 2
    again = trigger_from_state(trig.to_state())
    assert torch.equal(again(x), trig(x))


def test_batch_poisoning_hook_rows():
    rule = TargetRule("all_to_all", 4, 0)
    hook = BatchPoisoning(lambda x: x + 1, rule, 0.1, 2.0, lambda x, _b, _g: x - 1)
    x, y = torch.zeros(20, 1, 2, 2), torch.arange(20) % 4
    xb, yb = hook(x, y, make_generator(0))
    assert (xb[:2] == 1).all() and torch.equal(yb[:2], (y[:2] + 1) % 4)
    assert (xb[2:6] == -1).all() and torch.equal(yb[2:], y[2:]) and (xb[6:] == 0).all()


def test_adaptive_pieces_and_partial_masks():
    masks = piece_masks(8, 8, 16)
    assert masks.shape == (16, 8, 8) and torch.equal(masks.sum(0), torch.ones(8, 8))
    part = keep_random(masks, 5, 8, make_generator(0))
    assert torch.equal(part.sum(dim=(1, 2, 3)), torch.full((5,), 32.0))  # half the 64 pixels
    with pytest.raises(ConfigError, match="square number"):
        piece_masks(8, 8, 10)


def test_adaptive_blend_poisons_and_covers():
    ds = tiny_dataset(n=400)
    attack = ATTACKS.build("adaptive_blend", {"poison_rate": 0.05, "cover_rate": 0.05, "pieces": 4})
    trig = attack.make_trigger(ds)
    out = attack.poison(ds.train, trig, attack.target_rule(ds), seed=0)
    changed = (out.split.x != ds.train.x).flatten(1).any(dim=1)
    relabelled = out.split.y != ds.train.y
    assert int(changed.sum()) == 20 and int(relabelled.sum()) == 10
    assert torch.equal(relabelled.nonzero().flatten(), out.poisoned_indices)
    diff = (out.split.x - ds.train.x)[out.poisoned_indices].abs().flatten(1)
    assert ((diff > 0).float().mean(dim=1) <= 0.5 + 1e-6).all()  # at most half the pieces carry the pattern


def test_adaptive_patch_test_trigger_has_all_patches():
    ds = tiny_dataset(side=16)
    attack = ATTACKS.build("adaptive_patch", {"size_fraction": 0.25})
    trig = attack.make_trigger(ds)
    assert int(trig.mask.sum()) == 4 * 16  # four 4x4 patches, one per quadrant
    part = attack.partial_masks(trig, 3, make_generator(0))
    assert torch.equal((part > 0).sum(dim=(1, 2, 3)), torch.full((3,), 32))


def test_trojannn_picks_the_strongest_neurons_and_drives_them():
    model = build_model("badnet_cnn", (1, 12, 12), 4, [0.5], [0.25], seed=0)
    hidden, classifier = selected_layer(model)
    assert classifier.out_features == 4
    with torch.no_grad():
        hidden.weight[7] *= 10
    assert 7 in strongest_neurons(hidden, 2).tolist()
    ds = tiny_dataset()
    attack = ATTACKS.build("trojannn", {"steps": 30, "batch": 8, "target_value": 5.0})
    trig, info = attack.optimise_patch(model, ds, seed=0)
    assert info["neurons"][0] == 7 and trig.mask.sum() == 9  # a 3x3 square on 12x12 images
    untouched = attack.make_trigger(ds)
    captured = []
    classifier.register_forward_pre_hook(lambda _m, i: captured.append(i[0]))
    x = ds.train.x[:8]
    model(untouched(x))
    model(trig(x))
    before, after = (c[:, info["neurons"]].mean() for c in captured)
    assert after > before


def test_pgd_stays_in_the_ball_and_raises_the_loss():
    model = build_model("badnet_cnn", (1, 12, 12), 4, [0.5], [0.25], seed=0)
    ds = tiny_dataset()
    train_model(model, ds.train.x, ds.train.y, TrainingConfig(epochs=2, augment_shift=0), progress=False)
    x, y = ds.test.x[:16], ds.test.y[:16]
    adv = pgd(model, x, y, 8 / 255, 2 / 255, 5)
    loss = torch.nn.functional.cross_entropy
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6
    with torch.no_grad():
        assert loss(model(adv), y) > loss(model(x), y)


def test_stealth_metrics_exact_values():
    x = torch.full((2, 1, 8, 8), 0.5)
    t = x.clone()
    t[:, :, 0, 0] = 0.6  # one pixel off by 0.1
    m = stealth_metrics(x, t)
    assert m["linf"] == pytest.approx(0.1, abs=1e-6) and m["l2"] == pytest.approx(0.1, abs=1e-6)
    assert m["psnr"] == pytest.approx(10 * math.log10(64 / 0.01), abs=1e-3)
    assert 0 < m["ssim"] < 1
    same = stealth_metrics(x, x)
    assert same["psnr"] == 100 and same["ssim"] == pytest.approx(1.0) and same["l2"] == 0
    with pytest.raises(ValueError, match="equal"):
        stealth_metrics(x, x[:1])


def test_trigger_stealth_counts_only_the_eligible_images_and_stops_at_n():
    # class-0 images are untouched by this trigger's rule (target 0), so only classes 1-3 count
    x = torch.full((8, 1, 4, 4), 0.5)
    y = torch.tensor([0, 1, 0, 2, 3, 1, 0, 2])
    seen: list[int] = []

    def trigger(batch):
        seen.append(len(batch))
        return batch + 0.1 * torch.arange(1, len(batch) + 1).view(-1, 1, 1, 1)

    rule = TargetRule("all_to_one", num_classes=4, target=0)
    m = trigger_stealth(trigger, rule, Split(x, y), n=3)
    assert seen == [3]  # the first 3 of the 5 eligible images
    assert m["linf"] == pytest.approx(0.2, abs=1e-6)  # mean of 0.1, 0.2, 0.3
    only_targets = Split(x[y == 0], y[y == 0])
    assert trigger_stealth(trigger, rule, only_targets) == {}


@pytest.mark.parametrize("name", ["wanet", "bpp"])
def test_per_batch_attacks_leave_the_data_and_record_it(name):
    ds = tiny_dataset()
    bd = ATTACKS.build(name, {"mode": "all_to_all"}).run(
        ds, "badnet_cnn", TrainingConfig(epochs=1, augment_shift=0), seed=0, device="cpu", progress=False
    )
    assert bd.poisoned_indices is None and bd.info["poisoning"] == "per_batch"
    assert bd.target_rule.mode == "all_to_all"
    assert isinstance(Split(ds.test.x, ds.test.y), Split)
