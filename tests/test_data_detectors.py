"""Data detectors on planted features (known answers), the evaluator's training set and rates, and a filter-and-retrain
cell on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.data import load_dataset
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.data_detectors.scan import anomaly_index
from backdoorlab.defenses.data_detectors.spectre import que_scores
from backdoorlab.experiments.data_evaluation import detection_rows, evaluate_data_detector, training_set
from backdoorlab.experiments.evaluation import EvaluationContext, evaluate_defense
from backdoorlab.models import TrainingConfig, train_new_model

DETECTORS = ["activation_clustering", "spectral_signatures", "spectre", "scan"]


def planted(classes=4, per_class=200, dims=20, poison=10, target=1, seed=0):
    """Gaussian features per class; ``poison`` rows of class ``target`` shifted far along one direction (a
    separable activation cluster). Returns train features, labels, poison mask, clean features, clean labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (classes, dims))
    y = np.repeat(np.arange(classes), per_class)
    x = centres[y] + rng.normal(0, 1, (len(y), dims))
    rows = np.flatnonzero(y == target)[:poison]
    x[rows] += 8.0 * np.eye(dims)[3]
    mask = np.zeros(len(y), dtype=bool)
    mask[rows] = True
    yc = np.repeat(np.arange(classes), 50)
    xc = centres[yc] + rng.normal(0, 1, (len(yc), dims))
    as_t = lambda a: torch.from_numpy(a)  # noqa: E731
    return as_t(x), as_t(y).long(), as_t(mask), as_t(xc), as_t(yc).long()


@pytest.mark.parametrize("name", DETECTORS)
def test_planted_poison_ranks_first(name):
    x, y, poison, xc, yc = planted()
    # ICA gives every component unit variance, so on isotropic Gaussian noise the planted direction is one of ten
    # equal ones; PCA keeps its variance (real activations are far from Gaussian: see the benchmark)
    params = {"spectre": {"dims": 8}, "activation_clustering": {"reduce": "pca"}}.get(name, {})
    det = DEFENSES.build(name, params).detect(x, y, xc, yc, seed=0)
    top = torch.argsort(det.scores, descending=True, stable=True)[: int(poison.sum())]
    assert poison[top].all(), f"{name}: the planted cluster must be ranked first"
    assert det.flagged[poison].all(), f"{name}: every planted row must be removed"


def test_scan_flags_only_the_contaminated_class_and_nothing_when_clean():
    x, y, poison, xc, yc = planted(classes=6)
    det = DEFENSES.build("scan", {}).detect(x, y, xc, yc)
    assert det.suspicious_classes == (1,)
    assert torch.equal(det.flagged, poison)
    clean_x, clean_y, _, xc, yc = planted(classes=6, poison=0)
    assert DEFENSES.build("scan", {}).detect(clean_x, clean_y, xc, yc).suspicious_classes == ()


def test_spectral_signatures_removes_one_and_a_half_epsilon_per_class():
    x, y, _, xc, yc = planted()
    det = DEFENSES.build("spectral_signatures", {"epsilon": 0.05}).detect(x, y, xc, yc)
    per_class = torch.bincount(y[det.flagged], minlength=4)
    assert per_class.tolist() == [15, 15, 15, 15]  # round(1.5 * 0.05 * 200)


def test_activation_clustering_relative_size_spares_clean_classes():
    x, y, poison, xc, yc = planted()
    det = DEFENSES.build("activation_clustering", {"cluster_analysis": "relative_size", "reduce": "pca"}).detect(
        x, y, xc, yc
    )
    assert det.suspicious_classes == (1,) and det.flagged[poison].all()


def test_que_with_alpha_zero_is_the_mean_squared_norm():
    z = np.random.default_rng(0).normal(size=(50, 4))
    scores, _ = que_scores(z, 0.0)
    np.testing.assert_allclose(scores, (z**2).sum(axis=1) / 4)


def test_anomaly_index_is_median_and_mad():
    stats = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    np.testing.assert_allclose(anomaly_index(stats), (stats - 3.0) / 1.4826)


def test_detection_rows_against_true_poison():
    poison = torch.tensor([True, True, False, False, False])
    flagged = torch.tensor([True, False, True, False, False])
    scores = torch.tensor([5.0, 4.0, 3.0, 1.0, 0.0])
    rows = detection_rows(scores, flagged, poison)
    assert rows["tpr"] == 0.5 and rows["fpr"] == pytest.approx(1 / 3) and rows["precision"] == 0.5
    assert rows["roc_auc"] == 1.0 and rows["removed"] == 2


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_training_set_is_the_attacks_poisoned_set(digits):
    attack = ATTACKS.build("badnets", {"poison_rate": 0.05})
    bd = attack.run(digits, "badnet_cnn", TrainingConfig(epochs=1), seed=3, device="cpu", progress=False)
    train, mask = training_set(bd, digits, 3)
    assert torch.equal(mask.nonzero().flatten(), bd.poisoned_indices.sort().values)
    assert torch.equal(train.y[mask], torch.zeros(int(mask.sum()), dtype=torch.long))
    with pytest.raises(Exception, match="rebuilt"):
        training_set(bd, digits, 4)


@pytest.mark.slow
def test_scan_filter_and_retrain_cell_on_digits(digits):
    training = TrainingConfig(epochs=15, batch_size=32)
    attack = ATTACKS.build("badnets", {"poison_rate": 0.05})
    bd = attack.run(digits, "badnet_cnn", training, seed=0, device="cpu", progress=False)
    ctx = EvaluationContext(digits, seed=0, device="cpu", architecture="badnet_cnn", training=training)
    out = evaluate_defense(DEFENSES.build("scan", {}), bd.model, bd, ctx)
    assert out.metrics["roc_auc"] > 0.9 and out.metrics["poison_found"] == 1.0
    assert out.metrics["asr"] < 0.5 * float(bd.info.get("asr", 1.0)) or out.metrics["der"] > 0.6


def test_a_clean_model_has_no_poison_and_a_retrained_model(digits):
    model = train_new_model("badnet_cnn", digits, TrainingConfig(epochs=1), seed=0, progress=False)
    ctx = EvaluationContext(digits, seed=0, device="cpu", architecture="badnet_cnn", training=TrainingConfig(epochs=1))
    out = evaluate_defense(DEFENSES.build("spectral_signatures", {}), model, None, ctx)
    assert "tpr" not in out.metrics and 0 < out.metrics["fpr"] < 0.2 and "clean_accuracy" in out.metrics


def test_detection_only_cell_trains_no_network(digits, monkeypatch):
    model = train_new_model("badnet_cnn", digits, TrainingConfig(epochs=1), seed=0, progress=False)
    ctx = EvaluationContext(digits, seed=0, device="cpu", architecture="badnet_cnn", training=TrainingConfig(epochs=1))

    def no_training(*args, **kwargs):
        raise AssertionError("a detection-only cell trained a network")

    monkeypatch.setattr("backdoorlab.experiments.data_evaluation.train_new_model", no_training)
    out = evaluate_data_detector(DEFENSES.build("spectral_signatures", {}), model, None, ctx, retrain=False)
    assert out.metrics["removed"] > 0 and "clean_accuracy" not in out.metrics
    assert out.artifacts["flagged"].shape == (len(digits.train),)


@pytest.mark.parametrize("name", DETECTORS)
def test_a_collapsed_network_without_feature_variation_gets_finite_scores(name):
    # a network trained into collapse (all ReLUs dead) gives the same features for every input: the methods
    # that whiten or decompose used to divide by zero variances (FastICA returned NaN, MCD raised)
    x, y, _, xc, yc = planted()
    x, xc = torch.zeros_like(x), torch.zeros_like(xc)
    found = DEFENSES.build(name, {}).detect(x, y, xc, yc, seed=0)
    assert torch.isfinite(found.scores).all() and found.scores.shape == (len(y),)
    if name in ("activation_clustering", "scan"):
        assert not found.flagged.any() and found.suspicious_classes == ()


def test_spectre_falls_back_when_most_of_a_class_is_one_point():
    # a half-collapsed network maps 90% of a class to one point: no robust covariance exists on that support
    x, y, _, xc, yc = planted()
    rows = np.flatnonzero(y.numpy() == 2)
    x[rows[: int(0.9 * len(rows))]] = 0.0
    found = DEFENSES.build("spectre", {}).detect(x, y, xc, yc, seed=0)
    assert torch.isfinite(found.scores).all()
    assert found.class_statistics["mcd_fell_back_to_sample_covariance"].tolist() == [0, 0, 1, 0]
