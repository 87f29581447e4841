"""A population run through the grid runner: seeds 0..k-1, one target per backdoored model, and the report's
model-level detection table built from the inspector cells."""

import pytest

from backdoorlab.experiments.config import parse_config
from backdoorlab.experiments.runner import Runner
from backdoorlab.report import write_run_report

POPULATION = {
    "name": "pop",
    "dataset": "digits",
    "training": {"epochs": 8, "lr": 0.003, "batch_size": 64, "augment_shift": 0},
    "attacks": [{"name": "badnets", "size": 2, "poison_rate": 0.1}],
    "defenses": [{"name": "neural_cleanse", "max_epochs": 4, "batches_per_epoch": 2, "examples": 0}],
    "population": {"k": 2},
}


def test_population_config_sets_seeds_and_spreads_targets():
    cfg = parse_config(POPULATION)
    assert cfg.seeds == [0, 1]
    assert [cfg.population_target(s, 10) for s in cfg.seeds] == [0, 5]
    with pytest.raises(Exception, match="population.k is 2 but 3 seeds"):
        parse_config({**POPULATION, "seeds": [0, 1, 2]})


def test_population_run_aims_each_seed_at_its_target_and_reports_detection(tmp_path):
    cfg = parse_config({**POPULATION, "population": {"k": 2, "targets": [3, 7]}})
    result = Runner(cfg, tmp_path, run_name="p", progress=False, log=lambda _: None).run()
    rows = {(r.attack, r.defense, r.seed, r.metric): r.value for r in result.rows}
    assert rows[("badnets", "none", 0, "asr")] > 0.5 and rows[("badnets", "none", 1, "asr")] > 0.5
    # the reversed trigger's rank is measured against each model's own target
    assert {("badnets", "neural_cleanse", s, "target_ranked_first") in rows for s in (0, 1)} == {True}
    md = write_run_report(result.run, tmp_path)[0].read_text()
    assert "Model inspection over a population (badnets)" in md
    line = next(x for x in md.splitlines() if x.startswith("| neural_cleanse | badnets |"))
    assert "| 2 + 2 |" in line
    assert (result.directory / "population_0_badnets.png").stat().st_size > 1000
