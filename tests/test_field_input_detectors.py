"""SCALE-UP, IBD-PSC, TeCo, BaDExpert and sequential STRIP on hand-built models whose backdoor is known exactly."""

import pytest
import torch
from torch import nn

from backdoorlab.data import Split
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.guard import guard
from backdoorlab.defenses.input_detectors.badexpert import BaDExpert
from backdoorlab.defenses.input_detectors.corruptions import CORRUPTIONS, corrupt
from backdoorlab.defenses.input_detectors.ibd_psc import IBDPSC, amplified, scalable_layers
from backdoorlab.defenses.input_detectors.scale_up import ScaleUp
from backdoorlab.defenses.input_detectors.sequential_strip import SequentialSTRIP
from backdoorlab.defenses.input_detectors.strip import STRIP
from backdoorlab.defenses.input_detectors.teco import TeCo
from backdoorlab.errors import ConfigError
from backdoorlab.metrics import roc_auc

from .test_strip import TRIGGER, CornerBackdoor, _clean


class BNCornerBackdoor(nn.Module):
    """A small BN network (random weights) with the corner backdoor of :class:`CornerBackdoor` on top."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(36, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Linear(32, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Linear(32, 10),
        ).eval()

    def forward(self, x):
        fired = x[:, 0, -1, -1] >= 0.99
        trojan = 30 * nn.functional.one_hot(torch.zeros_like(fired, dtype=torch.long), 10).float()
        return torch.where(fired[:, None], trojan, self.body(x))


def _own_labels(model: nn.Module, split: Split) -> Split:
    """The clean split relabelled with the model's own predictions (a model that is right on its clean data)."""
    with torch.no_grad():
        return Split(split.x, model(split.x).argmax(1))


def _auc(detector, clean: torch.Tensor, attacked: torch.Tensor) -> float:
    return roc_auc(detector.score(clean), detector.score(attacked))


def test_every_new_detector_is_registered():
    for name in ("scale_up", "ibd_psc", "teco", "badexpert", "sequential_strip"):
        assert name in DEFENSES


def test_scale_up_triggered_inputs_are_fully_consistent():
    model, test = CornerBackdoor(), _clean(200, seed=1)
    det = ScaleUp(normalize="none").fit(model, _clean(100), num_classes=10)
    assert torch.equal(det.score(TRIGGER(test.x)), torch.ones(200))  # the trigger survives every scale
    assert det.score(test.x).mean() < 0.9
    assert det.threshold_ == 0.5


def test_scale_up_normalisation_uses_clean_statistics_only():
    model = CornerBackdoor()
    raw = ScaleUp(normalize="none").fit(model, _clean(100), num_classes=10)
    glob = ScaleUp().fit(model, _clean(100), num_classes=10)
    spc = raw.clean_scores_
    expected = (spc - spc.mean()) / spc.std(unbiased=False)
    assert torch.allclose(glob.clean_scores_, expected, atol=1e-5)
    per_class = ScaleUp(normalize="per_class", fpr=0.05).fit(model, _clean(100), num_classes=10)
    assert (per_class.clean_scores_ > per_class.threshold_).float().mean() <= 0.05
    test = _clean(200, seed=1)
    assert _auc(per_class, test.x, TRIGGER(test.x)) > 0.9


def test_ibd_psc_amplifies_the_last_bn_layers_of_a_copy():
    model = BNCornerBackdoor()
    names, is_bn = scalable_layers(model)
    assert is_bn and names == ["body.2", "body.5"]
    before = model.body[5].weight.clone()
    copy = amplified(model, names[-1:], 1.5)
    assert torch.allclose(copy.body[5].weight, 1.5 * before) and torch.equal(copy.body[2].weight, model.body[2].weight)
    assert torch.equal(model.body[5].weight, before)


def test_ibd_psc_flags_triggered_inputs_of_a_bn_model():
    model = BNCornerBackdoor()
    clean = _own_labels(model, _clean(200))
    det = IBDPSC().fit(model, clean, num_classes=10)
    test = _clean(200, seed=1)
    trig = det.score(TRIGGER(test.x))
    assert (trig > 0.999).all() and det.predict(TRIGGER(test.x)).all()
    assert det.score(test.x).mean() < 0.9
    assert 1 <= det.calibration_metrics()["start_layers"] <= 2


def test_ibd_psc_without_bn_warns_and_falls_back_to_conv_and_linear_layers():
    with pytest.warns(UserWarning, match="no batch-norm"):
        det = IBDPSC().fit(CornerBackdoor(), _clean(100), num_classes=10)
    assert det.calibration_metrics()["uses_bn"] == 0.0
    assert det.predict(TRIGGER(_clean(20, seed=1).x)).all()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_keeps_shape_and_range_and_is_seeded(name):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for severity in (1, 5):
        out = corrupt(x, name, severity, torch.Generator().manual_seed(1))
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, corrupt(x, name, severity, torch.Generator().manual_seed(1)))
    grey = corrupt(x[:, :1], name, 3, torch.Generator().manual_seed(1))
    assert grey.shape == (4, 1, 32, 32)
    far = (corrupt(x, name, 5, torch.Generator().manual_seed(1)) - x).abs().mean()
    assert far > 1e-3  # severity 5 changes the image


def test_teco_flip_severities_and_score_of_a_known_model():
    model = CornerBackdoor()
    det = TeCo(fpr=0.1).fit(model, _clean(60), num_classes=10)
    test = _clean(60, seed=1)
    flips = det.flip_severities(TRIGGER(test.x))
    assert flips.shape == (60, 15) and flips.min() >= 1 and flips.max() <= 6
    # the corner pixel survives brightness (it only rises) but not contrast (it falls below 0.99 at once)
    assert (flips[:, CORRUPTIONS.index("brightness")] == 6).all()
    assert (flips[:, CORRUPTIONS.index("contrast")] == 1).all()
    assert torch.allclose(det.score(TRIGGER(test.x)), flips.std(dim=1, unbiased=False))
    assert _auc(det, test.x, TRIGGER(test.x)) > 0.8


def test_badexpert_keeps_the_backdoor_and_forgets_the_task():
    model = CornerBackdoor()
    det = BaDExpert(epochs=20).fit(model, _clean(200), num_classes=10)
    test = _clean(200, seed=1)
    assert (det.score(TRIGGER(test.x)) > 0.99).all()
    assert det.predict(TRIGGER(test.x)).all()
    assert det.predict(test.x).float().mean() < 0.1
    assert torch.equal(model.linear.weight, CornerBackdoor().linear.weight)  # the input model is untouched


def test_badexpert_needs_images_on_both_sides():
    with pytest.raises(ConfigError, match="expert_fraction"):
        BaDExpert(expert_fraction=0.01).fit(CornerBackdoor(), _clean(20), num_classes=10)


def test_sequential_strip_stops_early_on_clear_inputs_and_agrees_with_strip():
    model, clean, test = CornerBackdoor(), _clean(300), _clean(200, seed=1)
    full = STRIP(n_overlays=100).fit(model, clean, seed=0)
    seq = SequentialSTRIP(n_overlays=100, round_size=10).fit(model, clean, seed=0)
    assert seq.boundary_ == full.boundary_
    trig = TRIGGER(test.x)
    assert torch.equal(seq.predict(trig), full.predict(trig))
    assert (seq.overlays_used_ == 10).all()  # zero entropy: decided after one round
    assert 0 < seq.first_round_tau_ <= seq.boundary_
    agree = (seq.predict(test.x) == full.predict(test.x)).float().mean()
    assert agree >= 0.99 and seq.overlays_used_.float().mean() < 50


class UnsureAboveOneTwo(nn.Module):
    """Corner trigger -> class 0 at entropy ~0; otherwise entropy ~0.03 bit, or log2(10) bits when pixel (0, 0)
    of the (superimposed) input exceeds 1.2: clean mean entropies spread so widely that STRIP's normal-fit
    boundary falls below 0, while every clean copy keeps an entropy above the triggered ones'."""

    def forward(self, x):
        sure = 8.0 * nn.functional.one_hot(torch.ones(len(x), dtype=torch.long), 10).float()
        out = torch.where((x[:, 0, 0, 0] > 1.2)[:, None], torch.zeros_like(sure), sure)
        trojan = 30 * nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()
        return torch.where((x[:, 0, -1, -1] >= 0.99)[:, None], trojan, out)


def test_sequential_strip_flags_nothing_early_when_strip_can_flag_nothing():
    model, clean, test = UnsureAboveOneTwo(), _clean(150), _clean(40, seed=1)
    with pytest.warns(UserWarning, match="no input can be flagged"):
        seq = SequentialSTRIP(n_overlays=40).fit(model, clean, seed=0)
    assert seq.boundary_ <= 0 and seq.first_round_tau_ <= seq.boundary_
    assert not seq.predict(TRIGGER(test.x)).any()  # as STRIP: nothing can be flagged


def test_sequential_strip_in_one_round_is_strip():
    model, clean, test = CornerBackdoor(), _clean(150), _clean(30, seed=1)
    full = STRIP(n_overlays=40).fit(model, clean, seed=2)
    seq = SequentialSTRIP(n_overlays=40, round_size=40).fit(model, clean, seed=2)
    assert torch.allclose(seq.score(test.x), full.score(test.x), atol=1e-5)
    assert (seq.overlays_used_ == 40).all() and seq.first_round_tau_ == 0.0


@pytest.mark.parametrize("name", ["scale_up", "ibd_psc", "badexpert", "sequential_strip"])
def test_guard_takes_the_new_detectors(name):
    model = BNCornerBackdoor()
    clean = _own_labels(model, _clean(200))
    det = DEFENSES.build(name, {"n_overlays": 20} if name == "sequential_strip" else {})
    guarded = guard(model, det.fit(model, clean, num_classes=10))
    out = guarded(TRIGGER(_clean(10, seed=1).x))
    assert out.shape == (10, 11) and (out.argmax(1) == 10).all()  # every triggered input abstains


def test_the_evaluator_and_the_report_section_take_a_new_detector(tmp_path):
    from types import SimpleNamespace

    from backdoorlab.attacks import Backdoor, TargetRule
    from backdoorlab.experiments.evaluation import EvaluationContext, evaluate_defense
    from backdoorlab.report.sections import defense_sections

    ds = SimpleNamespace(val=_clean(150), test=_clean(100, seed=1), num_classes=10)
    bd = Backdoor(CornerBackdoor(), TRIGGER, TargetRule("all_to_one", 10, 0), "corner", {})
    records = [
        SimpleNamespace(
            attack=a,
            defense="scale_up",
            method="scale_up",
            seed=0,
            outcome=evaluate_defense(ScaleUp(), CornerBackdoor(), b, EvaluationContext(ds)),
        )
        for a, b in (("none", None), ("corner", bd))
    ]
    assert records[1].outcome.metrics["roc_auc"] > 0.7 and "tpr_at_5pct_fpr" in records[1].outcome.metrics
    (section,) = defense_sections(records, tmp_path)
    assert section.title == "SCALE-UP" and "TPR at 5% FPR" in section.tables[0].headers
    assert section.figures[0].name == "scale_up_scores_scale_up.png" and section.figures[0].stat().st_size > 5000
