"""Feature Squeezing: squeezers against scipy/OpenCV, the L1 score, the threshold, bad input, the report."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from backdoorlab.data import Split
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.input_detectors.feature_squeezing import FeatureSqueezing
from backdoorlab.defenses.input_detectors.squeezers import BitDepth, Median, NonLocalMeans, parse_squeezer
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.config import parse_config
from backdoorlab.experiments.evaluation import DefenseOutcome
from backdoorlab.report.section_feature_squeezing import feature_squeezing_section


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [1, 2, 5, 8])
def test_bit_depth_matches_evademl_formula(bits):
    x = torch.cat([_rand(60), torch.tensor([0.0, 0.5, 1.0, 0.25, 1 / 6, 0.75])]).view(2, 3, 11, 1)
    levels = 2**bits - 1
    expected = np.rint(x.numpy() * levels) / levels
    got = BitDepth(bits)(x)
    assert got.shape == x.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-7)
    assert len(torch.unique(got)) <= levels + 1


def test_one_bit_binarizes_at_half():
    x = torch.tensor([0.0, 0.49, 0.5, 0.51, 1.0]).view(1, 1, 1, 5)
    assert BitDepth(1)(x).flatten().tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # 0.5 rounds half to even, as np.rint


@pytest.mark.parametrize(("kh", "kw"), [(2, 2), (3, 3), (2, 3), (1, 4), (5, 5), (9, 9)])
def test_median_matches_scipy_reflect(kh, kw):
    x = _rand(2, 3, 7, 6, seed=kh * 10 + kw)  # 9x9 is wider than the 6-pixel axis: reflection repeats
    expected = ndimage.median_filter(x.numpy(), size=(1, 1, kh, kw), mode="reflect")
    np.testing.assert_array_equal(Median(kh, kw)(x).numpy(), expected)


def test_median_2x2_is_the_upper_middle_of_the_window_above_left():
    x = torch.tensor([[0.0, 0.1, 0.2], [0.3, 0.4, 0.5], [0.6, 0.7, 0.8]]).view(1, 1, 3, 3)
    out = Median(2, 2)(x)
    # pixel (1, 1) sees (0,0) (0,1) (1,0) (1,1) = 0.0 0.1 0.3 0.4 -> upper middle 0.3
    assert out[0, 0, 1, 1].item() == pytest.approx(0.3)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.0)  # reflect: the window repeats the corner pixel


@pytest.mark.parametrize("channels", [1, 3])
def test_non_local_means_matches_opencv_on_uint8(channels):
    x = _rand(2, channels, 12, 12, seed=channels)
    got = NonLocalMeans(11, 3, 4)(x)
    assert got.shape == x.shape and got.dtype == torch.float32
    for i in range(2):
        img = np.rint(x[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        if channels == 1:
            ref = cv2.fastNlMeansDenoising(img[:, :, 0], None, h=4, templateWindowSize=3, searchWindowSize=11)
            ref = ref[..., None]
        else:
            ref = cv2.fastNlMeansDenoisingColored(img[:, :, ::-1].copy(), None, 4, 4, 3, 11)[:, :, ::-1]
        np.testing.assert_array_equal(np.rint(got[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8), ref)


def test_non_local_means_rejects_two_channels():
    with pytest.raises(ConfigError, match="1 or 3 channels, got 2"):
        NonLocalMeans(11, 3, 4)(_rand(1, 2, 8, 8))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bit_depth_1", BitDepth(1)),
        ("median_2x2", Median(2, 2)),
        ("median_3_3", Median(3, 3)),
        ("nlm_11-3-4", NonLocalMeans(11, 3, 4.0)),
        ("nlm_13_3_2", NonLocalMeans(13, 3, 2.0)),
    ],
)
def test_parse_squeezer(name, expected):
    assert parse_squeezer(name) == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("median_2x2x", "unknown squeezer 'median_2x2x'; use bit_depth_B"),
        ("bit_depth_9", "bit depth must be 1..8"),
        ("nlm_11-4-4", "odd windows"),
        ("nlm_11-3_4", "unknown squeezer"),
        ("median_0x2", "1..31 pixels"),
    ],
)
def test_parse_squeezer_errors(name, message):
    with pytest.raises(ConfigError, match=message):
        parse_squeezer(name)


def test_bad_squeezer_name_is_one_config_error_line():
    with pytest.raises(ConfigError, match=r"defenses\[0\] \(feature_squeezing\)\.squeezers: unknown squeezer") as e:
        parse_config({"defenses": [{"name": "feature_squeezing", "squeezers": ["bit_depth_1", "median_2x2x"]}]})
    assert "\n" not in str(e.value)


class ThresholdModel(nn.Module):
    """Two classes; the logit gap follows the mean of the top-left 2x2 pixels around 0.4, steeply."""

    def forward(self, x):
        gap = 40 * (x[:, 0, :2, :2].mean(dim=(1, 2)) - 0.4)
        return torch.stack([torch.zeros_like(gap), gap], dim=1)


def test_score_is_l1_between_softmaxes_and_joint_is_max():
    clean = Split(torch.full((40, 1, 4, 4), 0.9) * _rand(40, 1, 1, 1).clamp_min(0.6), torch.ones(40, dtype=torch.long))
    fs = FeatureSqueezing(squeezers=["bit_depth_1", "median_2x2"]).fit(ThresholdModel(), clean, num_classes=2)
    x = torch.full((2, 1, 4, 4), 0.45)  # class 1 at 0.45, but 1-bit squeezing sends it to 0 -> class 0
    x[1] = 0.95  # stays class 1 after either squeezer
    per = fs.squeezer_scores(x)
    assert per.shape == (2, 2)
    p = torch.softmax(torch.tensor([0.0, 40 * 0.05]), 0)
    assert per[0, 0].item() == pytest.approx((p - torch.tensor([1.0, 0.0])).abs().sum().item(), abs=1e-5)
    assert per[0, 1].item() == pytest.approx(0.0, abs=1e-6)  # a flat image is its own median
    assert torch.equal(fs.score(x), per.max(dim=1).values)
    assert 0.0 <= per.min() and per.max() <= 2.0
    assert fs.predict(x).tolist() == [True, False]


def test_fit_threshold_follows_the_fpr_on_clean_scores():
    clean = Split(0.3 + 0.2 * _rand(200, 1, 4, 4), torch.zeros(200, dtype=torch.long))
    fs = FeatureSqueezing(fpr=0.05).fit(ThresholdModel(), clean, num_classes=2)
    scores = fs.clean_scores_
    assert scores.shape == (200,)
    assert fs.threshold_ == float(scores.sort().values[189])  # ceil(200 * 0.95) - 1
    assert int(fs.predict(clean.x).sum()) == 10


def test_registered_and_bad_input_errors(digits):
    fs = DEFENSES.build("feature_squeezing")
    assert fs.squeezers == ["bit_depth_1", "median_2x2"] and fs.fpr == 0.05
    with pytest.raises(ConfigError, match="not fitted"):
        fs.score(digits.test.x[:2])
    with pytest.raises(ConfigError, match="outputs 2 scores per input but the data has 10 classes"):
        fs.fit(ThresholdModel(), digits.val, num_classes=10)
    with pytest.raises(ConfigError, match="clean labels go up to 9"):
        fs.fit(ThresholdModel(), digits.val)
    fs.fit(ThresholdModel(), Split(digits.val.x, torch.zeros(len(digits.val), dtype=torch.long)))
    with pytest.raises(ConfigError, match=r"pixel values in \[0, 1\], got values in \[0, 255\]"):
        fs.score(digits.test.x[:4] * 255)
    with pytest.raises(ConfigError, match="needs clean images to calibrate on, got none"):
        fs.fit(ThresholdModel(), Split(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)))
    with pytest.raises(ConfigError, match="does not accept images of shape"):
        fs.fit(nn.Sequential(nn.Flatten(), nn.Linear(5, 10)), digits.val, num_classes=10)


def test_report_section_writes_histograms(tmp_path):
    outcome = DefenseOutcome(
        {"fpr": 0.05, "threshold": 0.01, "tpr": 0.2, "roc_auc": 0.6},
        {"clean_scores": _rand(50) * 0.02, "attacked_scores": torch.zeros(30)},
    )
    clean_model = DefenseOutcome({"fpr": 0.04, "threshold": 0.01}, {"clean_scores": _rand(50), "attacked_scores": None})
    records = [
        SimpleNamespace(attack=a, defense="fs", method="feature_squeezing", seed=0, outcome=o)
        for a, o in (("none", clean_model), ("badnets", outcome))
    ]
    section = feature_squeezing_section(records, tmp_path)
    assert section.tables[0].rows == [["fs", "20.0", "4.5", "60.0"]]
    assert [f.name for f in section.figures] == ["feature_squeezing_scores_fs.png"]
    assert section.figures[0].stat().st_size > 5000
