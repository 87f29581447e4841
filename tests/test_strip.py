"""STRIP: stable entropy, the superimposition, the boundary rule, bad input, and detection on backdoored models."""

import math
from types import SimpleNamespace

import pytest
import torch
from scipy import stats
from torch import nn

from backdoorlab.attacks import Backdoor, BadNets, TargetRule
from backdoorlab.data import Split
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.input_detectors.outputs import entropy_bits, log_probabilities
from backdoorlab.defenses.input_detectors.strip import STRIP
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.evaluation import DefenseOutcome, EvaluationContext, evaluate_defense
from backdoorlab.report.section_strip import strip_section
from backdoorlab.triggers import square_trigger

SHAPE = (1, 6, 6)


def test_entropy_in_bits_of_known_distributions():
    assert entropy_bits(log_probabilities(torch.zeros(1, 8))).item() == pytest.approx(3.0)  # uniform over 8
    half = torch.log(torch.tensor([[0.5, 0.5, 0.0, 0.0]]))  # log-probability outputs with exact zeros (-inf)
    assert entropy_bits(log_probabilities(half)).item() == pytest.approx(1.0)
    probs = torch.tensor([[0.25, 0.25, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert entropy_bits(log_probabilities(probs, "probabilities")).tolist() == pytest.approx([1.5, 0.0])


def test_entropy_never_nan_on_extreme_outputs():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-float("inf"), 0.0, 0.0], [0.0, 0.0, 0.0]])
    h = entropy_bits(log_probabilities(logits))
    assert not torch.isnan(h).any()
    assert h.tolist() == pytest.approx([0.0, 1.0, math.log2(3)])


def test_log_probability_outputs_give_the_same_entropy_as_logits():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(0)) * 4
    assert torch.allclose(
        entropy_bits(log_probabilities(torch.log_softmax(logits, 1))),
        entropy_bits(log_probabilities(logits)),
        atol=1e-6,
    )


class CornerBackdoor(nn.Module):
    """Class 0, confidently, when the bottom-right pixel is >= 0.99; otherwise a fixed random linear classifier."""

    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(math.prod(SHAPE), 10)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(10, 36, generator=torch.Generator().manual_seed(1)) * 0.3)
            self.linear.bias.zero_()
        self.softmax = softmax

    def forward(self, x):
        fired = x[:, 0, -1, -1] >= 0.99
        out = torch.where(
            fired[:, None],
            30 * nn.functional.one_hot(torch.zeros_like(fired, dtype=torch.long), 10),
            self.linear(x.flatten(1)),
        )
        return torch.softmax(out, 1) if self.softmax else out


class Recorder(nn.Module):
    """Wraps a model and keeps every batch it was given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.batches = model, []

    def forward(self, x):
        self.batches.append(x.detach().clone())
        return self.model(x)


def _clean(n: int, seed: int = 0) -> Split:
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    x[:, 0, -1, -1] = 0.0  # like MNIST's black border: overlays never fire the trigger by themselves
    return Split(x, torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed)))


TRIGGER = square_trigger(SHAPE, 1, margin=0)


def test_strip_flags_triggered_inputs_of_a_backdoored_model():
    strip = STRIP(n_overlays=20).fit(CornerBackdoor(), _clean(200), seed=0, num_classes=10)
    test = _clean(300, seed=1)
    clean_h, trojan_h = strip.entropy(test.x), strip.entropy(TRIGGER(test.x))
    assert trojan_h.max() < 1e-6 < 0.5 < clean_h.mean()
    assert strip.predict(TRIGGER(test.x)).all()
    assert strip.predict(test.x).float().mean() <= 0.03
    assert strip.boundary_ == pytest.approx(-strip.threshold_)


def test_boundary_is_the_normal_fit_quantile_of_clean_entropies():
    strip = STRIP(n_overlays=20, frr=0.02).fit(CornerBackdoor(), _clean(200), seed=3)
    h = -strip.clean_scores_
    mean, std = stats.norm.fit(h.double().numpy())
    assert strip.boundary_ == pytest.approx(stats.norm.ppf(0.02, mean, std), rel=1e-6)
    empirical = STRIP(n_overlays=20, frr=0.02, boundary="empirical").fit(CornerBackdoor(), _clean(200), seed=3)
    assert (-empirical.clean_scores_ < empirical.boundary_).sum() <= 4  # at most 2% of 200 below it


def test_negative_boundary_warns():
    model = CornerBackdoor()
    with torch.no_grad():
        model.linear.weight.mul_(10)  # confident, widely spread clean entropies: the normal fit dips below 0
    with pytest.warns(UserWarning, match="no input can be flagged"):
        strip = STRIP(n_overlays=20, frr=0.01).fit(model, _clean(200), seed=0)
    assert strip.boundary_ <= 0 and not strip.predict(TRIGGER(_clean(5).x)).any()


def test_additive_overlays_are_distinct_pool_images_never_the_input_itself():
    clean, model = _clean(60), Recorder(CornerBackdoor())
    strip = STRIP(n_overlays=25, batch_size=80).fit(model, clean, seed=0)
    copies = torch.cat(model.batches[1:])  # the first batch is fit's check of the output size
    assert copies.shape == (60 * 25, *SHAPE)
    assert max(len(b) for b in model.batches) <= 80  # 3 inputs x 25 copies per forward pass
    diffs = copies.view(60, 25, -1) - clean.x.view(60, 1, -1)  # x + x_t - x = x_t
    match = (diffs[:, :, None, :] - clean.x.view(1, 1, 60, -1)).abs().amax(-1) < 1e-6  # (input, copy, pool image)
    assert (match.sum(-1) >= 1).all()  # every copy adds one pool image
    drawn = match.float().argmax(-1)
    assert all(len(set(row.tolist())) == 25 for row in drawn)  # without replacement
    assert not (drawn == torch.arange(60)[:, None]).any()  # and never the input itself while calibrating
    assert copies.max() > 1.0  # the paper's superimposition is not clipped
    assert strip.threshold_ < 0


def test_blend_mode_is_a_convex_combination():
    clean, model = _clean(40), Recorder(CornerBackdoor())
    strip = STRIP(n_overlays=10, superimpose="blend", blend_alpha=0.7).fit(model, clean, seed=0)
    model.batches.clear()
    x = torch.full((1, *SHAPE), 0.5)
    strip.score(x)
    copies = torch.cat(model.batches)
    overlays = (copies - 0.7 * 0.5) / 0.3
    assert ((overlays[:, None] - clean.x[None]).abs().amax(dim=(2, 3, 4)) < 1e-5).any(dim=1).all()
    assert copies.max() <= 1.0


def test_same_seed_same_scores_other_seed_other_draws():
    clean, x = _clean(120), _clean(10, seed=5).x
    a = STRIP(n_overlays=15).fit(CornerBackdoor(), clean, seed=0)
    b = STRIP(n_overlays=15).fit(CornerBackdoor(), clean, seed=0)
    c = STRIP(n_overlays=15).fit(CornerBackdoor(), clean, seed=1)
    assert torch.equal(a.score(x), b.score(x)) and torch.equal(a.score(x), a.score(x))
    assert not torch.equal(a.score(x), c.score(x))


def test_probability_outputs_match_logit_outputs():
    clean, x = _clean(80), _clean(6, seed=2).x
    logits = STRIP(n_overlays=10).fit(CornerBackdoor(), clean, seed=0)
    probs = STRIP(n_overlays=10, output="probabilities").fit(CornerBackdoor(softmax=True), clean, seed=0)
    assert torch.allclose(logits.entropy(x), probs.entropy(x), atol=1e-5)


def test_bad_input_is_one_config_error_each():
    with pytest.raises(ConfigError, match="strip needs more than n_overlays=100 clean images .* got 50"):
        STRIP().fit(CornerBackdoor(), _clean(50))
    with pytest.raises(ConfigError, match="outputs 10 scores per input but the data has 43 classes"):
        STRIP(n_overlays=5).fit(CornerBackdoor(), _clean(20), num_classes=43)
    with pytest.raises(ConfigError, match="not fitted"):
        STRIP().score(_clean(2).x)
    strip = STRIP(n_overlays=5).fit(CornerBackdoor(), _clean(20))
    with pytest.raises(ConfigError, match=r"pixel values in \[0, 1\], got values in \[-0.5"):
        strip.score(_clean(3).x - 0.5)
    with pytest.raises(ConfigError, match=r"clean images must have pixel values in \[0, 1\]"):
        STRIP(n_overlays=5).fit(CornerBackdoor(), Split(_clean(20).x * 2, _clean(20).y))
    with pytest.raises(ConfigError, match=r"n_overlays: Input should be greater than or equal to 1"):
        DEFENSES.build("strip", {"n_overlays": 0})
    with pytest.raises(ConfigError, match="unknown field"):
        DEFENSES.build("strip", {"overlays": 10})


def test_evaluate_rows_on_a_trained_tiny_backdoor(digits, fast_training):
    bd = BadNets().run(digits, "badnet_cnn", fast_training, seed=0, progress=False)
    strip = DEFENSES.build("strip", {"n_overlays": 50})
    outcome = evaluate_defense(strip, bd.model, bd, EvaluationContext(digits, seed=0))
    m = outcome.metrics
    assert set(m) == {
        "fpr",
        "tpr",
        "roc_auc",
        "pr_auc",
        "tpr_at_1pct_fpr",
        "tpr_at_5pct_fpr",
        "threshold",
        "entropy_boundary",
        "clean_entropy_mean",
        "clean_entropy_std",
    }
    assert m["roc_auc"] > 0.9 and m["tpr"] > m["fpr"] + 0.3 and m["fpr"] <= 0.06
    assert outcome.artifacts["clean_scores"].shape == (len(digits.test),)
    assert -outcome.artifacts["attacked_scores"].mean() < -outcome.artifacts["clean_scores"].mean() - 0.2


def test_evaluate_on_a_clean_model_and_the_report_section(tmp_path):
    ds = SimpleNamespace(val=_clean(150), test=_clean(100, seed=1), num_classes=10)
    bd = Backdoor(CornerBackdoor(), TRIGGER, TargetRule("all_to_one", 10, 0), "corner", {})
    strip = STRIP(n_overlays=20)
    records = [
        SimpleNamespace(
            attack=a,
            defense="strip",
            method="strip",
            seed=0,
            outcome=evaluate_defense(strip, CornerBackdoor(), b, EvaluationContext(ds)),
        )
        for a, b in (("none", None), ("corner", bd))
    ]
    assert "tpr" not in records[0].outcome.metrics and records[0].outcome.artifacts["attacked_scores"] is None
    assert records[1].outcome.metrics["tpr"] == 1.0
    section = strip_section(records, tmp_path)
    assert section.tables[0].headers == [
        "detector",
        "corner: detection",
        "FPR",
        "ROC-AUC",
        "PR-AUC",
        "TPR at 1% FPR",
        "TPR at 5% FPR",
    ]
    assert section.tables[0].rows[0][1] == "100.0"
    assert [r[:2] + r[-1:] for r in section.tables[1].rows] == [["strip", "none", "–"], ["strip", "corner", "0.0"]]
    assert section.figures[0].name == "strip_entropy_strip.png" and section.figures[0].stat().st_size > 5000
    assert isinstance(records[1].outcome, DefenseOutcome)
