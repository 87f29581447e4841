"""The pruning-aware attack's four steps on a tiny model: prune dormant channels, retrain poisoned, re-instate the
channels, make them dormant; the backdoor works before any defense."""

from __future__ import annotations

import copy

import pytest
import torch

from backdoorlab.attacks import ATTACKS, BadNets
from backdoorlab.attacks.pruning_aware import PruningAware, dormancy_module, make_dormant
from backdoorlab.defenses.repair.pruning import Pruning
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.evaluation import EvaluationContext, evaluate_defense
from backdoorlab.metrics import backdoor_metrics
from backdoorlab.models import build_model, train_model
from backdoorlab.models.channels import ChannelMask, channel_means, channel_summary, find_site
from backdoorlab.utils.seeding import make_generator


@pytest.fixture(scope="module")
def clean_model(digits, fast_training):
    model = build_model("badnet_cnn", digits.input_shape, 10, digits.mean, digits.std, seed=0)
    return train_model(model, digits.train.x, digits.train.y, fast_training, seed=0, progress=False)


@pytest.fixture(scope="module")
def attacked(digits, fast_training, clean_model):
    attack = PruningAware(prune_ratio=0.25, probe_size=400)
    return attack, attack.implant(clean_model, digits, fast_training, architecture="badnet_cnn", seed=0)


def test_registered_and_a_badnets_attack():
    assert ATTACKS.get("pruning_aware") is PruningAware and issubclass(PruningAware, BadNets)
    with pytest.raises(ConfigError, match="prune_ratio"):
        ATTACKS.build("pruning_aware", {"prune_ratio": 1.0})
    with pytest.raises(ConfigError, match="dormancy_margin"):
        ATTACKS.build("pruning_aware", {"dormancy_margin": -1})


def test_step2_reinstated_channels_are_the_clean_models_dormant_ones(digits, clean_model, attacked):
    attack, bd = attacked
    site = find_site(clean_model)
    probe = digits.train.subset(torch.randperm(len(digits.train), generator=make_generator(0))[:400])
    expected = torch.argsort(channel_means(clean_model, probe.x, site), stable=True)[:8]
    assert bd.info["reinstated_channels"] == expected.tolist()
    assert bd.info["reinstated_fraction"] == 0.25 and bd.info["layer"] == "net.0.3"


def test_step3_backdoor_lives_in_the_kept_channels(digits, attacked):
    _, bd = attacked
    m = backdoor_metrics(bd.model, digits.test, bd.trigger, bd.target_rule)
    assert m["asr"] >= 0.8 and m["clean_accuracy"] >= 0.8, m
    site = find_site(bd.model)
    with ChannelMask(bd.model, site, bd.info["reinstated_channels"]):
        masked = backdoor_metrics(bd.model, digits.test, bd.trigger, bd.target_rule)
    assert masked["asr"] == pytest.approx(m["asr"], abs=0.01), "removing the decoys does not touch the backdoor"


def test_step4_reinstated_channels_are_dormant_and_pruned_first(digits, attacked, clean_model):
    _, bd = attacked
    decoys = bd.info["reinstated_channels"]
    site = find_site(bd.model)
    keep = bd.target_rule.eligible(digits.test.y)
    clean_act = channel_means(bd.model, digits.test.x, site)
    triggered_act = channel_means(bd.model, bd.trigger(digits.test.x[keep]), site)
    assert clean_act[decoys].max() <= 1e-3 and triggered_act[decoys].max() <= 1e-3
    # re-instated: the decoys' conv weights are the clean model's (they were frozen at 0 gradient), not zero
    conv = site.layer
    assert torch.allclose(bd.model.get_submodule(conv).weight[decoys], clean_model.get_submodule(conv).weight[decoys])
    assert all(s >= 0 for s in bd.info["bias_shift"]) and max(bd.info["bias_shift"]) > 0
    outcome = evaluate_defense(Pruning(), bd.model, bd, EvaluationContext(digits, device="cpu"))
    pruned_first = outcome.artifacts["activations"]["order"][: len(decoys)]
    assert sorted(pruned_first) == sorted(decoys), "the defender's pruning removes the decoys first"
    assert outcome.metrics["pruned_channels"] >= len(decoys)


def test_implant_does_not_change_the_clean_model(digits, fast_training, clean_model):
    state = copy.deepcopy(clean_model.state_dict())
    PruningAware(prune_ratio=0.1, probe_size=50, retrain_epochs=1).implant(clean_model, digits, fast_training)
    assert all(torch.equal(state[k], v) for k, v in clean_model.state_dict().items())


def test_make_dormant_silences_channels_behind_batchnorm():
    model = build_model("cnn_small", (3, 8, 8), 10, seed=0).eval()
    site = find_site(model)
    assert dormancy_module(model, site) == "net.0.18"  # the BatchNorm's bias, not the bias-free conv
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    channels = torch.tensor([0, 1, 2, 3])
    shift = make_dormant(model, site, channels, x, margin=0.5)
    assert shift.shape == (4,) and (shift >= 0).all()
    assert channel_summary(model, x, site.output).max[channels].abs().max() == 0
    assert channel_summary(model, x, site.output).max[4:].max() > 0


def test_layers_without_a_relu_are_refused():
    model = build_model("preact_resnet18", (3, 8, 8), 10, seed=0)
    with pytest.raises(ConfigError, match="needs a ReLU right after the pruned layer"):
        dormancy_module(model, find_site(model, "net.layers.7.conv2"))  # a residual branch: no ReLU follows
    assert dormancy_module(model, find_site(model)) == "net.bn"  # relu(net.bn(.)): the functional ReLU counts
    small = build_model("badnet_cnn", (1, 8, 8), 10)
    assert dormancy_module(small, find_site(small)) == "net.0.3"  # no BatchNorm: the conv's own bias
