import pytest
import torch

from backdoorlab.errors import ConfigError
from backdoorlab.triggers import (
    BADNETS_PATTERN,
    TRIGGERS,
    blend_trigger,
    pattern_trigger,
    pixel_trigger,
    square_trigger,
    trigger_from_state,
)


def test_square_bottom_right_with_margin(images):
    trig = square_trigger((3, 10, 12), 3, color=1.0)
    out = trig(images)
    assert torch.all(out[:, :, 6:9, 8:11] == 1.0)
    untouched = torch.ones(10, 12, dtype=torch.bool)
    untouched[6:9, 8:11] = False
    assert torch.equal(out[:, :, untouched], images[:, :, untouched])
    assert trig.mask.sum() == 9


def test_square_colour_per_channel_and_position(images):
    trig = square_trigger((3, 10, 12), 2, color=[1.0, 1.0, 0.0], position=(0, 0))
    out = trig(images)
    assert out[:, 0, 0:2, 0:2].eq(1).all() and out[:, 2, 0:2, 0:2].eq(0).all()


def test_pixel_and_pattern(images):
    out = pixel_trigger((3, 10, 12))(images)
    assert out[:, :, 8, 10].eq(1).all() and int((out != images).any(dim=(0, 1)).sum()) <= 1
    pat = pattern_trigger((3, 10, 12))
    assert torch.equal(pat.mask[0, 6:9, 8:11], BADNETS_PATTERN)


def test_blend_formula(images):
    pattern = torch.rand(3, 10, 12)
    out = blend_trigger(pattern, 0.2)(images)
    assert torch.allclose(out, 0.8 * images + 0.2 * pattern, atol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: square_trigger((1, 8, 8), 9), "larger than the 8x8 image"),
        (lambda: square_trigger((1, 8, 8), 8, margin=1), "does not fit"),
        (lambda: square_trigger((1, 8, 8), 2, position="middle"), "unknown trigger position"),
        (lambda: square_trigger((1, 8, 8), 2, color=1.5), "colour must be in"),
        (lambda: blend_trigger(torch.rand(1, 4, 4), 0.0), "alpha must be in"),
        (lambda: TRIGGERS.build("star"), "unknown trigger 'star'; valid names: pattern, pixel, square"),
        (lambda: TRIGGERS.build("pixel", {"size": 3}), r"^trigger pixel\.size: unknown field"),
    ],
)
def test_bad_trigger_parameters(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_trigger_on_wrong_image_size():
    with pytest.raises(ConfigError, match="cannot be applied"):
        square_trigger((1, 8, 8), 2)(torch.rand(1, 1, 9, 9))


def test_state_round_trip(images):
    trig = square_trigger((3, 10, 12), 3)
    again = trigger_from_state(trig.to_state())
    assert torch.equal(again(images), trig(images)) and again.describe() == trig.describe()


def test_named_triggers_match_the_functions(images):
    square = TRIGGERS.build("square", {"size": 2, "position": "top-left", "margin": 0}).make((3, 10, 12))
    assert torch.equal(square(images), square_trigger((3, 10, 12), 2, position="top-left", margin=0)(images))
    glyph = [[1.0, 1.0], [0.0, 1.0]]
    pattern = TRIGGERS.build("pattern", {"glyph": glyph, "color": 0.5}).make((3, 10, 12))
    assert torch.equal(pattern.mask, pattern_trigger((3, 10, 12), glyph=torch.tensor(glyph), color=0.5).mask)
    assert torch.equal(TRIGGERS.build("pattern").make((1, 8, 8)).mask[0, 4:7, 4:7], BADNETS_PATTERN)
