"""The grid runner: sweeps, defenses in the grid, resume after a kill, executors, and `backdoorlab report`."""

import sqlite3

import pytest
import torch

from backdoorlab.cli import main
from backdoorlab.defenses.base import DEFENSES, InputDetector
from backdoorlab.experiments import fingerprint
from backdoorlab.experiments.config import parse_config
from backdoorlab.experiments.grid import expand_cells
from backdoorlab.experiments.runner import Runner, default_run_name, run_code

TINY = {
    "name": "grid",
    "dataset": "digits",
    "training": {"epochs": 3, "lr": 0.003, "batch_size": 64, "augment_shift": 0},
    "attacks": [{"name": "badnets", "size": 2, "sweep": {"poison_rate": [0.05, 0.1]}}],
    "seeds": [0, 1],
}


class CornerDetector(InputDetector):
    """A stand-in detector for these tests: scores the mean of the bottom-right 2x2 corner."""

    name = "test_corner_detector"

    def fit(self, model, clean, *, seed=0, device="auto", num_classes=None):
        self._t = float(torch.quantile(self.score(clean.x), 0.95))
        return self

    def score(self, x):
        return x[:, :, -3:-1, -3:-1].mean(dim=(1, 2, 3))

    @property
    def threshold_(self):
        return self._t


@pytest.fixture(autouse=True)
def corner_detector(register_for_test):
    register_for_test(DEFENSES, "test_corner_detector", CornerDetector)


def _values(db, run):
    rows = (
        sqlite3.connect(db)
        .execute("SELECT attack, defense, seed, metric, value FROM results WHERE run=? AND metric != 'seconds'", (run,))
        .fetchall()
    )
    return {r[:4]: r[4] for r in rows}


def test_sweep_expands_labels_and_cells():
    cfg = parse_config({**TINY, "defenses": ["test_corner_detector"]})
    labels = [label for label, _ in cfg.build_attacks()]
    assert labels == ["badnets[poison_rate=0.05]", "badnets[poison_rate=0.1]"]
    cells = expand_cells(cfg)
    kinds = [c.kind for c in cells]
    # 2 seeds x (1 clean + 2 attacks + 3 defended models x 1 defense), ordered by phase
    assert kinds == ["clean"] * 2 + ["attack"] * 4 + ["defense"] * 6
    assert len({c.id for c in cells}) == len(cells)


def test_sweep_errors():
    with pytest.raises(Exception, match="sweep of 'poison_rate' has no values"):
        parse_config({**TINY, "attacks": [{"name": "badnets", "sweep": {"poison_rate": []}}]})
    with pytest.raises(Exception, match=r"attacks\[0\] \(badnets\).poison_rate"):
        parse_config({**TINY, "attacks": [{"name": "badnets", "sweep": {"poison_rate": [0.1, 3]}}]})


def test_run_name_follows_the_config():
    a, b = parse_config(TINY), parse_config({**TINY, "seeds": [0]})
    assert default_run_name(a) == default_run_name(parse_config(TINY)) != default_run_name(b)


def test_run_name_follows_the_model_sources(monkeypatch):
    cfg = parse_config(TINY)
    before = default_run_name(cfg)
    other = fingerprint.CodeFingerprint("0.1.0", "f" * 64, None)
    monkeypatch.setattr("backdoorlab.experiments.runner.code_fingerprint", lambda: other)
    assert default_run_name(cfg) != before and default_run_name(cfg).startswith("grid-")


def test_study_cells_follow_what_the_study_runs_on(register_for_test):
    from backdoorlab.studies import STUDIES, Study

    class OnBackdoored(Study):
        runs_on = ("backdoored",)

    register_for_test(STUDIES, "test_on_backdoored", OnBackdoored)
    cfg = parse_config({**TINY, "studies": ["test_on_backdoored", "fs_adversarial"]})
    study = [(c.seed, c.attack, c.defense) for c in expand_cells(cfg) if c.kind == "study"]
    attacks = ["badnets[poison_rate=0.05]", "badnets[poison_rate=0.1]"]
    assert study == [
        *((0, a, "test_on_backdoored") for a in attacks),
        (0, "none", "fs_adversarial"),
        *((1, a, "test_on_backdoored") for a in attacks),
        (1, "none", "fs_adversarial"),
    ]
    # a view (fine_pruning_table1) adds no cell
    cfg = parse_config({**TINY, "defenses": ["fine_tuning"], "studies": ["fine_pruning_table1"]})
    assert not [c for c in expand_cells(cfg) if c.kind == "study"]


@pytest.mark.slow
def test_resume_recomputes_only_missing_cells(tmp_path):
    cfg = parse_config({**TINY, "defenses": ["test_corner_detector"]})
    full = Runner(cfg, tmp_path / "a", log=lambda m: None, progress=False).run()
    assert full.computed == 12 and full.skipped == 0

    # simulate a run killed after 5 cells: copy those cells' rows and markers into a fresh store
    runner = Runner(cfg, tmp_path / "b", log=lambda m: None, progress=False)
    from backdoorlab.experiments.store import ResultsStore

    with ResultsStore(tmp_path / "b" / "results.sqlite") as store:
        store.start_or_resume(runner.run_name, cfg.model_dump(mode="json"), run_code())
        for cell in runner.cells[:5]:
            runner._commit(runner.bench.run_cell(cell), store)
    resumed = runner.run()
    assert resumed.computed == 7 and resumed.skipped == 5
    assert _values(tmp_path / "b" / "results.sqlite", runner.run_name) == _values(
        tmp_path / "a" / "results.sqlite", full.run
    )
    again = Runner(cfg, tmp_path / "b", log=lambda m: None, progress=False).run()
    assert again.computed == 0 and again.skipped == 12


def test_cells_made_by_other_code_are_not_reused(tmp_path, monkeypatch):
    from backdoorlab.errors import ConfigError
    from backdoorlab.experiments.store import ResultsStore, RunCode

    cfg = parse_config({**TINY, "seeds": [0], "attacks": []})
    runner = Runner(cfg, tmp_path, run_name="r", log=lambda m: None, progress=False)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.start_or_resume("r", cfg.model_dump(mode="json"), RunCode("0.1.0", "0" * 64, None))
        store.commit_cell("r", runner.cells[0].id, [], 1.0)
    with pytest.raises(ConfigError, match="holds cells computed by other code .*sha256 000000000000"):
        runner.run()
    with ResultsStore(tmp_path / "results.sqlite") as store:  # nothing was written by the refused run
        assert store.run_code("r").source_hash == "0" * 64 and store.rows("r") == []


@pytest.mark.slow
def test_grid_report_has_detection_and_rebuilds(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({**TINY, "seeds": [0], "defenses": ["test_corner_detector"]}))
    assert main(["run", str(cfg), "-o", str(tmp_path / "runs"), "--run-name", "g", "-q"]) == 0
    html = (tmp_path / "runs" / "g" / "report.html").read_text()
    assert "Input detectors" in html and "test_corner_detector" in html and "Run times" in html
    assert "Trigger stealth" in html and "PSNR (dB)" in html  # the attack cells' stealth rows
    code = run_code()
    assert f"model sources sha256 {code.source_hash[:12]}" in html
    (tmp_path / "runs" / "g" / "report.html").unlink()
    capsys.readouterr()

    # the report is rebuilt from the store alone: no dataset is loaded, no model built
    def refuse(*args, **kwargs):
        raise AssertionError("the report loaded a dataset or built a model")

    monkeypatch.setattr("backdoorlab.data.load_dataset", refuse)
    monkeypatch.setattr("backdoorlab.experiments.config.load_dataset", refuse)
    monkeypatch.setattr("backdoorlab.models.build_model", refuse)
    assert main(["report", "g", "-o", str(tmp_path / "runs")]) == 0
    rebuilt = (tmp_path / "runs" / "g" / "report.html").read_text()
    assert "Input detectors" in rebuilt and "digits: 10 classes, 1x8x8" in rebuilt
    assert main(["report", "nope", "-o", str(tmp_path / "runs")]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_process_pool_gives_the_same_numbers(tmp_path):
    cfg = parse_config({**TINY, "seeds": [0], "attacks": [{"name": "badnets", "size": 2}]})
    local = Runner(cfg, tmp_path / "a", log=lambda m: None, progress=False).run()
    pooled = Runner(cfg, tmp_path / "b", log=lambda m: None, progress=False, workers=2).run()
    assert _values(tmp_path / "a" / "results.sqlite", local.run) == _values(
        tmp_path / "b" / "results.sqlite", pooled.run
    )


@pytest.mark.slow
def test_ray_executor_gives_the_same_numbers(tmp_path):
    pytest.importorskip("ray")
    cfg = parse_config({**TINY, "seeds": [0], "attacks": [{"name": "badnets", "size": 2}]})
    local = Runner(cfg, tmp_path / "a", log=lambda m: None, progress=False).run()
    remote = Runner(cfg, tmp_path / "b", log=lambda m: None, progress=False, executor="ray", workers=2).run()
    assert _values(tmp_path / "a" / "results.sqlite", local.run) == _values(
        tmp_path / "b" / "results.sqlite", remote.run
    )


def test_unknown_executor(tmp_path, capsys):
    assert main(["run", "--executor", "spark", "-o", str(tmp_path / "r")]) == 2
    assert "unknown executor 'spark'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
