"""A failed cell does not abort the grid: it is recorded, its dependants are skipped, the rest runs, the CLI exits 1."""

from __future__ import annotations

import sqlite3
from typing import ClassVar

import pytest
import torch

from backdoorlab.attacks import ATTACKS, Attack
from backdoorlab.cli import main
from backdoorlab.defenses.base import DEFENSES, InputDetector
from backdoorlab.experiments.config import parse_config
from backdoorlab.experiments.runner import Runner
from backdoorlab.experiments.store import ResultsStore


class BrokenAttack(Attack):
    """An attack that always raises: its cell fails and the defense cells on its model are skipped."""

    name: ClassVar[str] = "test_broken_attack"

    def run(self, dataset, architecture, training, **kwargs):
        raise RuntimeError("the attack broke on purpose")


class BrokenDetector(InputDetector):
    """A detector that raises in fit: its cells fail, and nothing depends on them."""

    name = "test_broken_detector"

    def fit(self, model, clean, *, seed=0, device="auto", num_classes=None):
        raise ValueError("the detector broke on purpose")

    def score(self, x):
        return torch.zeros(len(x))


class MeanDetector(InputDetector):
    """A working stand-in detector: scores the mean pixel."""

    name = "test_mean_detector"

    def fit(self, model, clean, *, seed=0, device="auto", num_classes=None):
        self._t = float(torch.quantile(self.score(clean.x), 0.95))
        return self

    def score(self, x):
        return x.mean(dim=(1, 2, 3))

    @property
    def threshold_(self):
        return self._t


CONFIG = {
    "name": "failing",
    "dataset": "digits",
    "training": {"epochs": 1, "lr": 0.003, "batch_size": 64, "augment_shift": 0},
    "attacks": [{"name": "badnets", "size": 2}, {"name": "test_broken_attack"}],
    "defenses": ["test_mean_detector", "test_broken_detector"],
    "seeds": [0],
}


@pytest.fixture(autouse=True)
def stand_ins(register_for_test):
    register_for_test(ATTACKS, "test_broken_attack", BrokenAttack)
    register_for_test(DEFENSES, "test_broken_detector", BrokenDetector)
    register_for_test(DEFENSES, "test_mean_detector", MeanDetector)


def _statuses(db, run):
    with ResultsStore(db) as store:
        return {f.cell: f for f in store.failures(run)}


def test_failed_cells_are_recorded_and_the_grid_goes_on(tmp_path):
    result = Runner(parse_config(CONFIG), tmp_path, run_name="r", progress=False, log=lambda _m: None).run()
    failures = _statuses(tmp_path / "results.sqlite", "r")
    broken_attack = "attack|digits|badnet_cnn|0|test_broken_attack|none"
    assert failures[broken_attack].status == "failed"
    assert failures[broken_attack].error == "RuntimeError: the attack broke on purpose"
    traceback = (tmp_path / "r" / failures[broken_attack].traceback_file).read_text()
    assert "the attack broke on purpose" in traceback and "Traceback" in traceback
    for defense in ("test_mean_detector", "test_broken_detector"):
        skipped = failures[f"defense|digits|badnet_cnn|0|test_broken_attack|{defense}"]
        assert skipped.status == "skipped" and broken_attack in skipped.error and skipped.traceback_file is None
    for attack in ("none", "badnets"):
        assert failures[f"defense|digits|badnet_cnn|0|{attack}|test_broken_detector"].status == "failed"
    assert len(failures) == 5 and result.failed_count == 3
    # every cell that does not depend on a failure ran: clean, badnets, the mean detector on clean and badnets
    done = {r.defense for r in result.rows if r.attack == "badnets"}
    assert done == {"none", "test_mean_detector"}
    assert {r.attack for r in result.rows} == {"none", "badnets"}
    status = sqlite3.connect(tmp_path / "results.sqlite").execute("SELECT status FROM runs").fetchone()[0]
    assert status == "incomplete"
    assert result.failure_summary().startswith("3 cell(s) failed, 2 skipped")


def test_a_resumed_run_retries_only_the_failed_cells(tmp_path, monkeypatch):
    cfg = parse_config({**CONFIG, "defenses": ["test_mean_detector"], "attacks": [{"name": "test_broken_attack"}]})
    first = Runner(cfg, tmp_path, run_name="r", progress=False, log=lambda _m: None).run()
    assert first.failed_count == 1 and len(first.failed) == 2
    monkeypatch.setattr(BrokenAttack, "run", lambda self, *a, **k: ATTACKS.build("badnets", {}).run(*a, **k))
    second = Runner(cfg, tmp_path, run_name="r", progress=False, log=lambda _m: None).run()
    assert second.computed == 2 and second.failed == [] and not _statuses(tmp_path / "results.sqlite", "r")


def test_fail_fast_raises_the_cells_error(tmp_path):
    runner = Runner(parse_config(CONFIG), tmp_path, run_name="r", progress=False, log=lambda _m: None, fail_fast=True)
    with pytest.raises(RuntimeError, match="the attack broke on purpose"):
        runner.run()


def test_cli_lists_failed_cells_in_the_report_and_exits_1(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    cfg = {**CONFIG, "defenses": ["test_mean_detector"]}
    import yaml

    config.write_text(yaml.safe_dump(cfg))
    code = main(["run", str(config), "-o", str(tmp_path), "--run-name", "r", "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 cell(s) failed, 1 skipped" in err and "the attack broke on purpose" in err
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Failed cells" in report and "test_broken_attack" in report
