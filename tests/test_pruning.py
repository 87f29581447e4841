"""Channel masks, the pruning stop rule, and the pruning / fine-tuning / fine-pruning repairs on tiny models."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from backdoorlab.attacks import BadNets
from backdoorlab.data import Split
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.repair.activations import activation_profile
from backdoorlab.defenses.repair.fine_pruning import FinePruning
from backdoorlab.defenses.repair.fine_tuning import FineTuning
from backdoorlab.defenses.repair.pruning import Pruning, PruningCurve, prune_by_activation
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.artifacts import load_artifacts, save_artifacts
from backdoorlab.experiments.evaluation import EvaluationContext, defender_data, evaluate_defense
from backdoorlab.experiments.store import ResultRow
from backdoorlab.models import build_model, predict_logits
from backdoorlab.models.channels import (
    ChannelMask,
    bake_pruning,
    channel_means,
    find_site,
    prune_count_within_drop,
)
from backdoorlab.models.replay import MaskedReplay
from backdoorlab.report.section_fine_pruning import fine_pruning_table, table1_section
from backdoorlab.report.sections import SECTION_BUILDERS

# (architecture, input shape, layer or None for the default, expected site chain)
SITES = [
    ("badnet_cnn", (1, 8, 8), None, ("net.0.3", ("net.0.4",), 32)),
    ("cnn_small", (3, 8, 8), None, ("net.0.17", ("net.0.18", "net.0.19"), 128)),
    ("preact_resnet18", (3, 8, 8), "net.bn", ("net.bn", (), 512)),
    ("preact_resnet18", (3, 8, 8), None, ("net.bn", (), 512)),  # relu(net.bn(.)), not the last residual conv
    ("preact_resnet18", (3, 8, 8), "net.layers.7.conv2", ("net.layers.7.conv2", (), 512)),
]


def _model(arch, shape):
    model = build_model(arch, shape, 10, seed=0)
    with torch.no_grad():  # BatchNorm with non-trivial statistics, so that BN(0) != 0 unless the mask is right
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
                m.bias.uniform_(0.5, 1.0, generator=torch.Generator().manual_seed(2))
    return model.eval()


@pytest.mark.parametrize("arch, shape, layer, expected", SITES)
def test_site_chain_and_masks_zero_the_channels(arch, shape, layer, expected):
    model = _model(arch, shape)
    site = find_site(model, layer)
    assert (site.layer, site.chain, site.channels) == expected
    x = torch.rand(6, *shape, generator=torch.Generator().manual_seed(0))
    before = channel_means(model, x, site)
    pruned = torch.nonzero(before.abs() > 0).flatten()[[0, 3, 5]]  # channels active before masking (post-ReLU: not all)
    with ChannelMask(model, site, pruned):
        masked_acts = channel_means(model, x, site)
        masked_logits = predict_logits(model, x)
    assert masked_acts[pruned].abs().max() == 0
    others = torch.ones(site.channels, dtype=torch.bool)
    others[pruned] = False
    assert torch.allclose(masked_acts[others], before[others])
    assert not torch.allclose(masked_logits, predict_logits(model, x)), "the hook is removed on exit"

    baked = bake_pruning(copy.deepcopy(model), site, pruned)
    assert channel_means(baked, x, site)[pruned].abs().max() == 0
    assert torch.allclose(predict_logits(baked, x), masked_logits, atol=1e-5)
    baked.train()  # batch statistics: the zeroed channel must stay 0 in train mode too
    with torch.no_grad():
        captured = {}
        handle = baked.get_submodule(site.output).register_forward_hook(lambda m, i, o: captured.update(out=o))
        baked(x)
        handle.remove()
    assert captured["out"][:, pruned].abs().max() == 0
    fresh = build_model(arch, shape, 10)
    fresh.load_state_dict(baked.state_dict())  # same architecture: the checkpoint loads into build_model


@pytest.mark.parametrize("arch, shape, layer, expected", SITES[:3])
def test_replay_matches_full_forward_under_mask(arch, shape, layer, expected):
    model = _model(arch, shape)
    site = find_site(model, layer)
    x = torch.rand(9, *shape, generator=torch.Generator().manual_seed(3))
    replay = MaskedReplay(model, site, x, batch_size=4)
    assert replay.split
    for pruned in ([], [1, 2], list(range(site.channels - 1))):
        with ChannelMask(model, site, pruned):
            expected_logits = predict_logits(model, x)
        assert torch.allclose(replay.logits(pruned), expected_logits, atol=1e-5)


class _Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so the replay must fall back to full passes."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.body(x).mean(dim=(2, 3))
        return self.head(h) if h.sum() > -1 else -self.head(h)


def test_replay_falls_back_for_untraceable_models():
    torch.manual_seed(0)
    model = _Untraceable().eval()
    site = find_site(model)
    x = torch.rand(5, 1, 6, 6)
    replay = MaskedReplay(model, site, x)
    assert not replay.split
    with ChannelMask(model, site, [1]):
        assert torch.allclose(replay.logits([1]), predict_logits(model, x))


def test_find_site_errors_name_the_layer():
    model = build_model("badnet_cnn", (1, 8, 8), 10, seed=0)
    with pytest.raises(ConfigError, match="layer 'net.9' is not in the model; prunable layers .*net.0.3"):
        find_site(model, "net.9")
    with pytest.raises(ConfigError, match="'net.0.4' is not a prunable layer"):
        find_site(model, "net.0.4")
    with pytest.raises(ConfigError, match="no Conv2d"):
        find_site(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_stop_rule_keeps_last_count_within_the_drop():
    counts = [0, 1, 2, 3, 4]
    assert prune_count_within_drop(counts, [0.90, 0.91, 0.86, 0.85, 0.5], 0.04) == 2  # 0.85 < 0.86: stop before
    assert prune_count_within_drop(counts, [0.90, 0.70, 0.90, 0.90, 0.90], 0.04) == 0  # the first fall stops it
    assert prune_count_within_drop(counts, [0.9] * 5, 0.04) == 4


@pytest.fixture(scope="module")
def backdoored(digits, fast_training):
    return BadNets().run(digits, "badnet_cnn", fast_training, seed=0, progress=False)


def test_pruning_stops_at_the_validation_threshold(digits, backdoored):
    result = prune_by_activation(backdoored.model, digits.val, Pruning())
    acc = dict(zip(result.counts, result.val_accuracy, strict=True))
    assert acc[result.pruned] >= acc[0] - 0.04
    assert result.pruned == result.site.channels or acc[result.pruned + 1] < acc[0] - 0.04
    expected_order = torch.argsort(channel_means(backdoored.model, digits.val.x, result.site), stable=True)
    assert torch.equal(result.pruned_channels, expected_order[: result.pruned])
    weights = result.model.get_submodule(result.site.layer).weight
    assert weights[result.pruned_channels].abs().sum() == 0 and weights.abs().sum() > 0
    fixed = prune_by_activation(backdoored.model, digits.val, Pruning(prune_ratio=0.5, step=5))
    assert fixed.pruned == 16 and 16 in fixed.counts


def test_repairs_leave_the_input_model_alone(digits, backdoored):
    state = copy.deepcopy(backdoored.model.state_dict())
    for defense in (Pruning(), FineTuning(epochs=1), FinePruning(epochs=1)):
        repaired = defense.repair(backdoored.model, digits.val, seed=0)
        assert repaired is not backdoored.model
        assert all(torch.equal(state[k], v) for k, v in backdoored.model.state_dict().items())
        build_model("badnet_cnn", digits.input_shape, 10).load_state_dict(repaired.state_dict())
        assert not any(m._forward_hooks for m in repaired.modules()), "masks are baked in, no hooks are left"


@pytest.fixture(scope="module")
def outcomes(digits, backdoored):
    """The runner's view: ``evaluate`` of pruning and of fine-pruning on the backdoored digits model."""
    ctx = EvaluationContext(digits, seed=0, device="cpu")
    return {
        "pruning": evaluate_defense(Pruning(), backdoored.model, backdoored, ctx),
        "fine_pruning": evaluate_defense(
            FinePruning(epochs=3, lr=0.05, augment_shift=0), backdoored.model, backdoored, ctx
        ),
    }


def test_fine_pruning_keeps_pruned_channels_pruned(digits, backdoored, outcomes):
    outcome = outcomes["fine_pruning"]
    repaired, curve = outcome.artifacts["model"], PruningCurve(**outcome.artifacts["pruning"])
    order = torch.tensor(outcome.artifacts["activations"]["order"])
    pruned = order[: curve.pruned]
    assert curve.pruned >= 1, "the digits model has dormant channels to prune"
    site = find_site(repaired)
    assert channel_means(repaired, digits.test.x, site)[pruned].abs().max() == 0
    kept = order[curve.pruned :]
    conv = site.layer
    assert not torch.equal(repaired.get_submodule(conv).weight[kept], backdoored.model.get_submodule(conv).weight[kept])
    m = outcome.metrics
    assert 0 <= m["clean_accuracy"] <= 1 and 0 <= m["asr"] <= 1
    assert m["pruned_fraction"] == pytest.approx(curve.pruned / 32)
    assert m["asr_after_pruning"] == pytest.approx(curve.asr[curve.counts.index(curve.pruned)])
    assert len(curve.test_accuracy) == len(curve.counts) == 33 and curve.counts[-1] == 32
    assert curve.test_accuracy[-1] < 0.2, "with every channel pruned the model is at chance"


def test_pruning_evaluate_rows_and_artifacts_survive_saving(digits, backdoored, outcomes, tmp_path):
    outcome = outcomes["pruning"]
    assert set(outcome.metrics) >= {
        "clean_accuracy",
        "asr",
        "robust_accuracy",
        "pruned_fraction",
        "val_accuracy_drop",
        "pruning_threshold",
    }
    assert outcome.metrics["val_accuracy_drop"] <= 0.04
    save_artifacts(tmp_path / "a.pt", outcome.artifacts)
    loaded = load_artifacts(tmp_path / "a.pt")
    assert PruningCurve(**loaded["pruning"]).pruned == int(outcome.metrics["pruned_channels"])
    act = loaded["activations"]
    assert len(act["clean"]) == len(act["triggered"]) == 32
    profile = activation_profile(backdoored.model, digits.test.x)
    assert act["clean"] == pytest.approx(profile.clean.tolist(), abs=1e-6)


def test_fine_tuning_train_fraction_adds_training_images(digits):
    assert defender_data(FineTuning(), digits, seed=0) is digits.val
    bigger = defender_data(FineTuning(train_fraction=0.1), digits, seed=0)
    assert len(bigger) == len(digits.val) + round(0.1 * len(digits.train))
    assert torch.equal(bigger.x[: len(digits.val)], digits.val.x)
    assert FinePruning(train_fraction=0.2).train_fraction_held == 0.2
    with pytest.raises(ConfigError, match="empty"):
        FineTuning().repair(nn.Sequential(nn.Flatten()), Split(torch.zeros(0, 1, 8, 8), torch.zeros(0).long()))


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("pruning", {"max_accuracy_drop": 2}, "max_accuracy_drop"),
        ("pruning", {"prune_ratio": 1.0}, "prune_ratio"),
        ("fine_tuning", {"lr": 0}, "lr"),
        ("fine_pruning", {"epochs": 0}, "epochs"),
        ("fine_pruning", {"optimiser": "sgd"}, "optimiser: unknown field"),
    ],
)
def test_parameters_are_checked(name, params, message):
    with pytest.raises(ConfigError, match=message):
        DEFENSES.build(name, params, where=name)


def _rows(attack, defense, ca, asr):
    return [
        ResultRow("r", "mnist5k", "badnet_cnn", attack, defense, seed, metric, value)
        for seed, (c, a) in enumerate(zip(ca, asr, strict=True))
        for metric, value in (("clean_accuracy", c), ("asr", a))
    ]


def test_fine_pruning_table_layout():
    rows = (
        _rows("badnets", "none", [0.98, 0.99], [1.0, 1.0])
        + _rows("badnets", "fine_pruning", [0.97, 0.97], [0.0, 0.02])
        + _rows("pruning_aware", "fine_tuning[lr=0.05]", [0.96], [0.1])
        + _rows("other", "none", [0.5], [0.5])
    )
    table = fine_pruning_table(rows)
    assert table.headers[:4] == ["dataset", "model", "Baseline / None cl", "Baseline / None bd"]
    assert "Pruning-aware / Fine-Tuning [lr=0.05] bd" in table.headers
    assert not any("other" in h for h in table.headers)
    row = dict(zip(table.headers, table.rows[0], strict=True))
    assert row["Baseline / None cl"] == "98.5 ± 6.4" and row["Baseline / Fine-Pruning bd"] == "1.0 ± 12.7"
    assert row["Pruning-aware / Fine-Tuning [lr=0.05] cl"] == "96.0" and row["Pruning-aware / None cl"] == "–"
    custom = fine_pruning_table(rows, attacks=[("BadNets", "badnets")], defenses=[("FP", "fine_pruning")])
    assert custom.headers == ["dataset", "model", "BadNets / FP cl", "BadNets / FP bd"]


def test_table1_section_picks_the_runs_attacks_and_repairs_by_method():
    rows = (
        _rows("bn-a", "none", [0.98], [1.0])
        + _rows("bn-a", "ft", [0.97], [0.3])
        + _rows("pa", "none", [0.97], [0.99])
        + _rows("pa", "fine_pruning", [0.96], [0.9])
    )
    attacks = [("bn-a", "badnets"), ("pa", "pruning_aware"), ("blend", "blend")]
    section = table1_section(rows, attacks, [("ft", "fine_tuning"), ("fine_pruning", "fine_pruning"), ("s", "strip")])
    (table,) = section.tables
    row = dict(zip(table.headers, table.rows[0], strict=True))
    assert row["Baseline (bn-a) / Fine-Tuning (ft) bd"] == "30.0"
    assert row["Pruning-aware (pa) / Fine-Pruning bd"] == "90.0"
    assert not any("blend" in h or "strip" in h for h in table.headers)
    assert table1_section(rows, attacks, [("s", "strip")]) is None


def test_report_sections_draw_curves_and_activations(outcomes, tmp_path):
    for method, outcome in outcomes.items():
        record = SimpleNamespace(
            attack="badnets",
            defense=method,
            method=method,
            seed=0,
            dataset="digits",
            model="badnet_cnn",
            outcome=outcome,
        )
        section = SECTION_BUILDERS.get(method)([record], tmp_path)
        assert [f.name for f in section.figures] == [f"{method}_curves.png", f"{method}_activations.png"]
        assert all(f.stat().st_size > 5000 for f in section.figures)
        assert section.tables[0].rows[0][0] == f"digits · badnet_cnn · badnets · {method}"
