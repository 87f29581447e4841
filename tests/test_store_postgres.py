"""The results store on PostgreSQL (a server the tests start: see conftest's ``postgres_server``) and chosen by URL:
the same reads as SQLite, two writers at once, a run killed mid-cell and resumed, ``backdoorlab runs`` and
``backdoorlab report --store``."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backdoorlab.cli import main
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.store import CellFailure, ResultRow, ResultsStore, RunCode, SettingInfo, open_store
from backdoorlab.experiments.store_url import describe, store_url

INFO = SettingInfo(0, "digits", "badnet_cnn", "digits: 10 classes, 1x8x8", ("0", "1"), (1, 8, 8))


def _exercise(store: ResultsStore) -> dict:
    """Every write the runner makes, then every read: what a backend must give back identically."""
    store.start_or_resume("r", {"name": "x"}, RunCode("0.1.0", "ab" * 32, None), [INFO])
    row = ResultRow("r", "digits", "badnet_cnn", "badnets", "none", 0, "asr", 0.5)
    store.commit_cell("r", "c1", [row, ResultRow("r", "digits", "badnet_cnn", "none", "none", 0, "ca", 0.9)], 1.5)
    store.record_failure("r", CellFailure("c3", "failed", "ValueError: x", "failures/a.txt", 0.1))
    store.record_failure("r", CellFailure("c2", "skipped", "depends on c3"))
    store.add([ResultRow("r", "digits", "badnet_cnn", "badnets", "none", 0, "asr", 0.75)])  # replaces, moves last
    store.commit_cell("r", "c2", [ResultRow("r", "digits", "badnet_cnn", "blend", "none", 0, "asr", 0.25)], 2.0)
    store.start_or_resume("r", {"name": "x"}, RunCode("0.1.0", "ab" * 32, None), [INFO])  # a resume
    store.finish_run("r", "incomplete", seconds=3.5, stage_seconds={"clean": 1.5})
    return {
        "rows": store.rows("r"),
        "failures": store.failures("r"),
        "cells": store.finished_cells("r"),
        "settings": store.settings("r"),
        "code": store.run_code("r"),
        "times": store.run_times("r"),
        "config": store.run_config("r"),
        "runs": [(run, status) for run, _, status in store.runs()],
        "summary": [(s.run, s.status, s.cells_done, s.cells_failed, s.seconds) for s in store.run_summaries()],
    }


def test_postgres_gives_back_what_sqlite_gives_back(postgres_url, tmp_path):
    with ResultsStore(postgres_url) as pg, ResultsStore(tmp_path / "r.sqlite") as lite:
        got, expected = _exercise(pg), _exercise(lite)
    assert got == expected
    assert [(r.attack, r.metric, r.value) for r in got["rows"]] == [
        ("none", "ca", 0.9),
        ("badnets", "asr", 0.75),
        ("blend", "asr", 0.25),
    ]
    assert got["failures"] == [CellFailure("c3", "failed", "ValueError: x", "failures/a.txt", 0.1)]
    assert got["summary"] == [("r", "incomplete", 2, 1, 3.5)] and got["settings"] == [INFO]
    with ResultsStore(postgres_url) as pg:  # a second opening finds the tables and keeps the rows
        assert len(pg.rows("r")) == 3 and str(pg).startswith("postgresql://postgres@127.0.0.1:")


WRITER = """
import sys, time
from pathlib import Path
from backdoorlab.experiments.store import ResultRow, ResultsStore
url, run, parity, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.01)
with ResultsStore(url) as store:  # both writers create the tables at once on the empty database
    for name in (run, "shared"):
        store.start_or_resume(name, {"name": name})
    for i in range(40):
        cell = f"{run}-{i}" if i % 2 else f"shared-{2 * i + parity}"
        name = run if i % 2 else "shared"
        rows = [ResultRow(name, "digits", "m", cell, "none", 0, f"metric{k}", i + k / 10) for k in range(10)]
        store.commit_cell(name, cell, rows, 0.1)
"""


def test_two_concurrent_writers_lose_no_row(postgres_url, tmp_path):
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, postgres_url, run, str(parity), str(go)], stderr=subprocess.PIPE
        )
        for parity, run in enumerate(("a", "b"))
    ]
    go.touch()
    for w in writers:
        assert w.wait(timeout=120) == 0, w.stderr.read().decode()[-2000:]
    with ResultsStore(postgres_url) as store:
        for run in ("a", "b"):
            assert len(store.finished_cells(run)) == 20 and len(store.rows(run)) == 200
        assert len(store.finished_cells("shared")) == 40 and len(store.rows("shared")) == 400
        assert {s.run: s.cells_done for s in store.run_summaries()} == {"a": 20, "b": 20, "shared": 40}


TINY = {
    "name": "pgkill",
    "dataset": "digits",
    "training": {"epochs": 1, "lr": 0.003, "batch_size": 128, "augment_shift": 0},
    "attacks": [{"name": "badnets", "size": 2}],
    "seeds": [0],
}
RUN = """
import json, os, signal, sys
import torch
from backdoorlab.experiments import store
from backdoorlab.experiments.config import parse_config
from backdoorlab.experiments.runner import Runner
cfg, url, out, kill_at = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
real, marked = store.upsert, []
def upsert(conn, table, rows, keep=None):
    real(conn, table, rows, keep)
    if table.name == "cells":  # the cell's rows and marker are sent, its transaction not committed
        marked.append(rows)
        if len(marked) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
store.upsert = upsert
result = Runner(parse_config(cfg), out, run_name="k", store=url, log=lambda m: None, progress=False).run()
print(json.dumps([result.computed, result.skipped]))
"""


def _start(url: str, out: Path, kill_at: int = 0) -> subprocess.Popen:
    """Run TINY as run ``k`` in a new process (the same torch thread count as this one) into ``url``; its output in
    files under ``out`` (no pipe to fill while another process is awaited)."""
    out.mkdir(parents=True, exist_ok=True)
    args = [json.dumps(TINY), url, str(out), str(kill_at), str(torch.get_num_threads())]
    with open(out / "stdout.txt", "w") as stdout, open(out / "stderr.txt", "w") as stderr:
        return subprocess.Popen([sys.executable, "-c", RUN, *args], stdout=stdout, stderr=stderr)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    """(exit code, stdout, the end of stderr) once ``proc`` ends."""
    proc.wait(timeout=300)
    out = Path(proc.args[-3])
    return proc.returncode, (out / "stdout.txt").read_text(), (out / "stderr.txt").read_text()[-2000:]


def _values(store: ResultsStore, run: str) -> dict:
    return {
        (r.dataset, r.attack, r.defense, r.seed, r.metric): r.value for r in store.rows(run) if r.metric != "seconds"
    }


@pytest.mark.slow
def test_a_run_killed_mid_cell_resumes_with_identical_rows(postgres_url, tmp_path, capsys):
    ref = str(tmp_path / "ref.sqlite")  # the same run, uninterrupted, on SQLite, in parallel
    killed, reference = _start(postgres_url, tmp_path / "machine1", kill_at=2), _start(ref, tmp_path / "machine2")
    code, _, err = _finish(killed)
    assert code == -signal.SIGKILL, err
    with ResultsStore(postgres_url) as store:  # the second cell's transaction died with the process
        assert len(store.finished_cells("k")) == 1 and {r.attack for r in store.rows("k")} == {"none"}
        assert store.run_summaries()[0].status == "running"
    code, out, err = _finish(_start(postgres_url, tmp_path / "machine1"))
    assert code == 0 and json.loads(out) == [1, 1], err  # (computed, reused)
    code, out, err = _finish(reference)
    assert code == 0 and json.loads(out) == [2, 0], err
    with ResultsStore(postgres_url) as pg, ResultsStore(tmp_path / "ref.sqlite") as lite:
        got, expected = _values(pg, "k"), _values(lite, "k")
    assert len(got) >= 9 and got == expected

    # any machine lists the run and builds its report from the database (tables, without the cells' figures)
    capsys.readouterr()
    assert main(["runs", "--store", postgres_url]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split()[:3] == ["run", "config", "status"]
    assert listed[1].split()[:4] == ["k", "pgkill", "finished", "2/2"]
    assert main(["report", "k", "--store", postgres_url, "-o", str(tmp_path / "machine3")]) == 0
    assert "badnets" in (tmp_path / "machine3" / "k" / "report.html").read_text()


def test_runs_lists_a_sqlite_store_and_reads_the_environment(tmp_path, capsys, monkeypatch):
    with ResultsStore(tmp_path / "db.sqlite") as store:
        store.start_or_resume("old", {"name": "gone", "attacks": [{"name": "no_such_attack"}]})
        store.commit_cell("old", "c", [], 1.0)
        store.record_failure("old", CellFailure("d", "failed", "E: x"))
        store.finish_run("old", "incomplete", seconds=61.4)
    monkeypatch.setenv("BACKDOORLAB_STORE", f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].split()[:5] == ["old", "gone", "incomplete", "1/?", "(1"]
    assert lines[1].endswith("61 s")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported store 'mysql'"),
        ("sqlite://", "names no file"),
        (
            "postgresql://postgres@127.0.0.1:1/none",
            "cannot open the results store postgresql://postgres@127.0.0.1:1/none",
        ),
    ],
)
def test_a_bad_store_is_one_line_and_exit_2(url, message, tmp_path, capsys):
    assert main(["runs", "--store", url]) == 2
    assert message in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({**TINY, "attacks": []}))
    assert main(["run", str(config), "--store", url, "-o", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_store_urls():
    assert describe(store_url(None, "out")) == os.path.join("out", "results.sqlite")
    assert describe(store_url("x/y.sqlite")) == "x/y.sqlite" == describe(store_url("sqlite:///x/y.sqlite"))
    url = store_url("postgres://me:secret@db.lab:5433/results")
    assert url.drivername == "postgresql+psycopg" and url.password == "secret"
    assert describe(url) == "postgresql://me:***@db.lab:5433/results"
    with pytest.raises(ConfigError, match="use a path, sqlite:///PATH or postgresql://"):
        store_url("oracle://x/y")
    with pytest.raises(ConfigError, match="no results database"):  # reading never creates a database
        open_store(None, "nowhere")
