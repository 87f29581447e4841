import numpy as np
import pytest
import torch
from PIL import Image

from backdoorlab.attacks import ATTACKS, TargetRule
from backdoorlab.data import Split
from backdoorlab.errors import ConfigError, DataError
from backdoorlab.metrics import attack_success_rate


def test_noise_pattern_blend_and_alphas(digits):
    attack = ATTACKS.build("blend", {"alpha": 0.3, "test_alpha": 0.2, "noise_seed": 4})
    trig = attack.make_trigger(digits)
    pattern = attack.pattern(digits)
    assert pattern.shape == digits.input_shape and torch.equal(pattern, attack.pattern(digits))
    assert not torch.equal(pattern, ATTACKS.build("blend", {"noise_seed": 5}).pattern(digits))
    x = digits.test.x[:8]
    assert torch.allclose(trig(x), 0.8 * x + 0.2 * pattern, atol=1e-6), "measured with test_alpha"
    assert torch.allclose(attack.train_trigger(trig)(x), 0.7 * x + 0.3 * pattern, atol=1e-6), "poisons with alpha"
    assert trig.describe() == {"kind": "blend", "alpha": 0.2}


def test_image_pattern_is_resized_to_the_dataset(tmp_path, digits):
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:, 16:] = 255  # right half white
    Image.fromarray(rgb).save(tmp_path / "kitty.png")
    pattern = ATTACKS.build("blend", {"image": str(tmp_path / "kitty.png")}).pattern(digits)
    assert pattern.shape == (1, 8, 8)
    assert pattern[0, :, :3].max() < 0.05 and pattern[0, :, 5:].min() > 0.95
    np.save(tmp_path / "p.npy", np.full((4, 4), 0.5, dtype=np.float32))
    assert torch.allclose(ATTACKS.build("blend", {"image": str(tmp_path / "p.npy")}).pattern(digits), torch.tensor(0.5))
    with pytest.raises(DataError, match="image file not found"):
        ATTACKS.build("blend", {"image": str(tmp_path / "missing.png")}).check(digits)


def test_blend_poisoning_relabels_blended_rows(digits):
    train = Split(torch.rand(200, 1, 8, 8), torch.arange(200) % 10)
    attack = ATTACKS.build("blend", {"poison_rate": 0.2, "target": 2})
    trig = attack.make_trigger(digits)
    out = attack.poison(train, attack.train_trigger(trig), TargetRule("all_to_one", 10, 2), seed=0)
    idx = out.poisoned_indices
    assert len(idx) == 40 and train.y[idx].ne(2).all() and out.split.y[idx].eq(2).all()
    assert torch.allclose(out.split.x[idx], 0.8 * train.x[idx] + 0.2 * trig.pattern, atol=1e-6)


@pytest.mark.parametrize(
    "params, message",
    [({"alpha": 0}, "alpha"), ({"test_alpha": 1.5}, "test_alpha"), ({"target": 10}, "blend target 10 is outside")],
)
def test_blend_parameter_checks(digits, params, message):
    with pytest.raises(ConfigError, match=message):
        ATTACKS.build("blend", params).check(digits)


def test_blend_end_to_end_on_digits(digits, fast_training):
    bd = ATTACKS.build("blend", {"alpha": 0.3, "test_alpha": 0.3, "poison_rate": 0.2}).run(
        digits, "badnet_cnn", fast_training, seed=0, progress=False
    )
    assert attack_success_rate(bd.model, digits.test, bd.trigger, bd.target_rule) >= 0.8
    assert bd.params["alpha"] == 0.3 and len(bd.poisoned_indices) == round(0.2 * len(digits.train))
