"""BTI-DBF: the feature tap and the generator by hand, the reversal's shapes and determinism, bad parameters, and the
planted digits trigger's target ranked first (at the defaults, about 1 s per inspection on 8x8 digits)."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from pydantic import ValidationError

from backdoorlab.data import Split
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.inspection.bti_dbf import BtiDbf, FeatureTap, TinyUNet
from backdoorlab.errors import ConfigError
from backdoorlab.models.channels import find_site

from .inspection_support import TARGET, clean_digits, digits, planted_digits

TINY = {"mask_steps": 5, "generator_steps": 5, "batch_size": 16, "eval_samples": 40, "examples": 2}


def test_feature_tap_reads_and_replaces_the_site_output() -> None:
    model = clean_digits()
    site = find_site(model)
    x = digits().val.x[:6]
    with torch.no_grad(), FeatureTap(model, site) as tap:
        feats = tap.features(model, x)
        same = tap.logits(model, x, torch.ones(()))
        zeroed = tap.logits(model, x, torch.zeros(()))
    assert feats.shape[0] == 6 and feats.ndim == 4 and float(feats.min()) >= 0  # read after the ReLU
    torch.testing.assert_close(same, model(x))
    pool, head = model[1][0][5], model[1][1:]  # the avg-pool after the site, then flatten, fc, relu, fc
    torch.testing.assert_close(zeroed, head(pool(torch.zeros_like(feats))))
    with torch.no_grad():
        torch.testing.assert_close(model(x), same)  # the hook is gone after the block


def test_tiny_unet_keeps_the_shape_and_the_pixel_range() -> None:
    torch.manual_seed(0)
    g = TinyUNet(3, 4)
    x = torch.rand(2, 3, 7, 9, requires_grad=True)  # odd sizes: the upsampled block is resized to the skip's
    out = g(x)
    assert out.shape == x.shape and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    out.sum().backward()
    assert x.grad is not None and bool((x.grad != 0).any())  # straight-through clamp: gradients pass


def test_reversal_shapes_and_determinism() -> None:
    ds = digits()
    runs = [BtiDbf(**TINY).inspect(planted_digits(), ds.val, seed=3, device="cpu", progress=False) for _ in range(2)]
    v = runs[0]
    assert v.method == "bti_dbf" and v.statistic.shape == (10,) and v.reached is None
    assert bool((v.statistic > 0).all()) and bool(torch.isfinite(v.statistic).all())
    assert v.examples is not None and v.examples.shape == (10, 2, 1, 8, 8)
    assert float(v.examples.min()) >= 0 and float(v.examples.max()) <= 1
    soft, share = v.details["soft_share"], v.details["share"]
    assert soft.shape == share.shape == (10,) and bool(((share >= 0) & (share <= 1)).all())
    torch.testing.assert_close(v.statistic, -soft.log())
    assert v.details["mask"].shape[0] == 1 and 0 < v.details["mask_density"] < 1
    assert 0 <= v.details["reference_target"] < 10 and 0 < v.p_value <= 1
    assert torch.equal(v.statistic, runs[1].statistic)


def test_bad_parameters_and_data() -> None:
    for params in ({"mask_steps": 0}, {"norm_bound": 0}, {"eval_samples": 1}, {"width": 0}, {"layer_name": "x"}):
        with pytest.raises(ConfigError):
            DEFENSES.build("bti_dbf", params)
    with pytest.raises(ValidationError):
        BtiDbf(generator_lr=-1.0)
    ds = digits()
    with pytest.raises(ConfigError, match="no_such_layer"):
        BtiDbf(**TINY, layer="no_such_layer").inspect(planted_digits(), ds.val, device="cpu", progress=False)
    one_class = Split(ds.val.x[:20], torch.zeros(20, dtype=torch.long))
    with pytest.raises(ConfigError, match="2 classes"):
        BtiDbf(**TINY).inspect(planted_digits(), one_class, device="cpu", progress=False)


def test_planted_target_ranked_first() -> None:
    ds = digits()
    for seed in (0, 1):
        v = BtiDbf().inspect(planted_digits(), ds.val, seed=seed, device="cpu", progress=False)
        assert v.ranking[0] == TARGET and v.details["reference_target"] == TARGET


def test_a_torchscript_file_is_refused_in_one_line() -> None:
    # wrapped as the model-file loader wraps foreign modules
    traced = torch.jit.trace(copy.deepcopy(clean_digits()), digits().val.x[:2])  # the cached model stays trainable
    wrapped = torch.nn.Sequential(OrderedDict(net=traced)).requires_grad_(False)
    with pytest.raises(ConfigError, match="not a TorchScript file"):
        BtiDbf(**TINY).inspect(wrapped, digits().val, device="cpu")
