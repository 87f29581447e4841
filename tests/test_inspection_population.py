"""Detection over a population of models: the summary figures, the model cache, the inspector loop, and the
report pieces (anomaly bars, reversed triggers, population table)."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from backdoorlab.attacks import Attack, BadNets
from backdoorlab.defenses.inspection.base import Inspector, Reversal
from backdoorlab.defenses.inspection.neural_cleanse import NeuralCleanse
from backdoorlab.defenses.inspection.verdict import Verdict
from backdoorlab.errors import ConfigError
from backdoorlab.experiments import population as pop
from backdoorlab.experiments.artifacts import load_artifacts, save_artifacts
from backdoorlab.experiments.evaluation import DefenseOutcome, EvaluationContext, evaluate_defense
from backdoorlab.models import TrainingConfig
from backdoorlab.report import section_deepinspect, section_neural_cleanse  # noqa: F401  (registers builders)
from backdoorlab.report.build import DefenseRecord
from backdoorlab.report.inspection import population_section, population_table
from backdoorlab.report.sections import SECTION_BUILDERS, defense_sections

from .inspection_support import digits

TINY_TRAINING = TrainingConfig(epochs=2, batch_size=64, lr=3e-3, augment_shift=0)


def _verdict(score: float, infected: bool) -> Verdict:
    """A verdict whose model score is ``score`` (label 0 sits below the median with that index)."""
    stat = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    index = torch.tensor([score, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    return Verdict("stub", "size", stat, index, suspected=[0] if infected else [], seconds=2.0)


def _record(role, score, infected, first=None) -> pop.InspectionRecord:
    metrics = {"flagged": float(infected)}
    if first is not None:
        metrics |= {"target_ranked_first": float(first), "target_flagged": float(infected and first)}
    return pop.InspectionRecord("stub", role, 0, None if role == "clean" else 0, _verdict(score, infected), metrics)


def test_detection_summary_by_hand() -> None:
    records = [
        _record("clean", 0.5, False),
        _record("clean", 2.5, True),
        _record("clean", 1.0, False),
        _record("backdoored", 3.0, True, True),
        _record("backdoored", 4.0, True, True),
        _record("backdoored", 1.5, False, False),
    ]
    s = pop.detection_summary(records)
    assert s["tpr"] == pytest.approx(2 / 3) and s["fpr"] == pytest.approx(1 / 3)
    assert s["roc_auc"] == pytest.approx(8 / 9)  # 8 of the 9 (clean, backdoored) pairs are ordered right
    assert s["target_ranked_first"] == pytest.approx(2 / 3) and s["target_flagged"] == pytest.approx(2 / 3)
    assert s["score_clean"] == pytest.approx(4 / 3) and s["seconds"] == 2.0
    assert (s["n_clean"], s["n_backdoored"]) == (3.0, 3.0)
    assert torch.isnan(torch.tensor(pop.detection_summary(records[:3])["roc_auc"]))


def test_spread_targets() -> None:
    assert pop.spread_targets(5, 10) == [0, 2, 4, 6, 8]
    assert pop.spread_targets(3, 10) == [0, 3, 6]
    assert pop.spread_targets(4, 3) == [0, 1, 2, 0]


class NoTarget(Attack):
    name: ClassVar[str] = "no_target"


def test_population_errors() -> None:
    ds = digits()
    with pytest.raises(ConfigError, match="no target parameter"):
        pop.attack_with_target(NoTarget(), 1)
    with pytest.raises(ConfigError, match="needs 2 seeds and 2 targets"):
        pop.population_models(ds, "badnet_cnn", TINY_TRAINING, "badnets", k=2, seeds=[0])
    with pytest.raises(ConfigError, match="k must be >= 1"):
        pop.population_models(ds, "badnet_cnn", TINY_TRAINING, "badnets", k=0)
    with pytest.raises(ConfigError, match="badnets target 12"):
        pop.population_models(ds, "badnet_cnn", TINY_TRAINING, {"name": "badnets"}, k=1, targets=[12])
    with pytest.raises(ConfigError, match="not a model inspector"):
        pop.inspect_members(ds, [], [("x", BadNets())], attack="badnets")  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="two inspectors share the label 'stub'"):
        pop.inspect_members(ds, [], [StubInspector(), StubInspector(cutoff=1.0)], attack="badnets")


class StubInspector(Inspector):
    """Statistic = mean logit per label on the clean images, negated: no training, deterministic."""

    name: ClassVar[str] = "stub"

    def _reverse(self, model, clean, input_shape, num_classes, *, seed, device, progress) -> Reversal:
        with torch.no_grad():
            return Reversal(statistic=-model(clean.x).mean(dim=0).double() + 100)


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    result = pop.inspect_population(
        digits(),
        "badnet_cnn",
        TINY_TRAINING,
        {"name": "badnets", "size": 2},
        [StubInspector(), ("stub-low", StubInspector(cutoff=0.5))],
        k=2,
        cache=cache,
        targets=[1, 5],
        device="cpu",
    )
    return result, cache


def test_population_trains_inspects_and_summarises(population) -> None:
    result, _ = population
    assert [(m.role, m.seed, m.target) for m in result.members] == [
        ("clean", 0, None),
        ("clean", 1, None),
        ("backdoored", 0, 1),
        ("backdoored", 1, 5),
    ]
    assert all(0 <= m.clean_accuracy <= 1 for m in result.members)
    assert all(m.asr is not None and 0 <= m.asr <= 1 for m in result.members[2:])
    assert len(result.records) == 8 and result.inspectors() == ["stub", "stub-low"]
    summary = result.summary()
    assert summary["stub"]["n_clean"] == 2 and summary["stub"]["n_backdoored"] == 2
    # same statistic, lower cutoff: the low-cutoff inspector flags at least as many models
    assert summary["stub-low"]["tpr"] >= summary["stub"]["tpr"] and summary["stub-low"]["fpr"] >= summary["stub"]["fpr"]
    assert summary["stub"]["roc_auc"] == summary["stub-low"]["roc_auc"]
    bad = [r for r in result.records if r.role == "backdoored"]
    assert [r.target for r in bad] == [1, 1, 5, 5] and all("target_statistic" in r.metrics for r in bad)


def test_population_reuses_the_cache(population, monkeypatch) -> None:
    result, cache = population

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading from the cache")

    monkeypatch.setattr("backdoorlab.models.recipe.train_model", no_training)
    again = pop.population_models(
        digits(),
        "badnet_cnn",
        TINY_TRAINING,
        {"name": "badnets", "size": 2},
        k=2,
        targets=[1, 5],
        cache=str(cache),
        device="cpu",
    )
    for old, new in zip(result.members, again, strict=True):
        assert (old.role, old.seed, old.target) == (new.role, new.seed, new.target)
        assert all(
            torch.equal(a, b)
            for a, b in zip(old.model.state_dict().values(), new.model.state_dict().values(), strict=True)
        )
    assert len(list(cache.glob("*.pt"))) == 4


def test_rows_and_population_table(population, tmp_path) -> None:
    result, _ = population
    rows = result.result_rows("run1", "digits", "badnet_cnn")
    summary_rows = [r for r in rows if r.attack == "population:badnets"]
    assert {r.metric for r in summary_rows} >= {"tpr", "fpr", "roc_auc"} and all(r.seed == -1 for r in summary_rows)
    assert {r.attack for r in rows} == {"none", "badnets", "population:badnets"}
    table = population_table(result)
    assert table.headers[:6] == ["inspector", "attack", "clean + backdoored models", "TPR", "FPR", "ROC-AUC"]
    assert [row[0] for row in table.rows] == ["stub", "stub-low"] and table.rows[0][2] == "2 + 2"
    section = population_section(result, tmp_path)
    assert section.figures[0].is_file() and section.figures[0].stat().st_size > 1000


def nc_statistic(outcome: DefenseOutcome) -> torch.Tensor:
    return torch.tensor(outcome.artifacts["summary"]["statistic"], dtype=torch.float64)


def test_neural_cleanse_report_section(tmp_path) -> None:
    ds = digits()
    model = pop.population_models(ds, "badnet_cnn", TINY_TRAINING, "badnets", k=1, targets=[2], device="cpu")[1]
    nc = NeuralCleanse(max_epochs=2, batches_per_epoch=1)
    outcome = evaluate_defense(nc, model.model, model.backdoor, EvaluationContext(ds, device="cpu"))
    assert isinstance(outcome, DefenseOutcome) and outcome.artifacts["true_target"] == 2
    assert outcome.artifacts["true_mask"].shape == (1, 8, 8)
    save_artifacts(tmp_path / "cell.pt", outcome.artifacts)  # the runner keeps artifacts on disk for the report
    outcome = DefenseOutcome(outcome.metrics, load_artifacts(tmp_path / "cell.pt"))
    torch.testing.assert_close(outcome.artifacts["verdict"].statistic, nc_statistic(outcome), atol=1e-4, rtol=0)
    records = [
        DefenseRecord("badnets", "nc", "neural_cleanse", 0, outcome),
        DefenseRecord("badnets", "nc", "neural_cleanse", 1, outcome),
    ]
    section = SECTION_BUILDERS.get("neural_cleanse")(records, tmp_path)
    assert section is not None and len(section.tables[0].rows) == 2
    assert [f.name for f in section.figures] == ["neural_cleanse_anomaly.png", "neural_cleanse_triggers.png"]
    assert all(f.stat().st_size > 1000 for f in section.figures)
    assert [s.title for s in defense_sections(records, tmp_path)] == ["Neural Cleanse"]
    assert "deepinspect" in SECTION_BUILDERS
