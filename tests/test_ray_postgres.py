"""A grid on a local Ray cluster of two worker processes writing to the PostgreSQL store, killed after its first
cell and resumed, gives the same rows as the local executor on SQLite (issue 23; every metric but ``seconds``,
|difference| <= 1e-6, one torch thread on both sides)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from backdoorlab.experiments.config import parse_config
from backdoorlab.experiments.runner import Runner
from backdoorlab.experiments.store import ResultsStore

CONFIG = {
    "name": "raypg",
    "dataset": "digits",
    "training": {"epochs": 10, "lr": 0.003, "batch_size": 64, "augment_shift": 0},
    "attacks": [{"name": "badnets", "size": 2, "poison_rate": 0.1}],
    "defenses": [{"name": "strip", "n_overlays": 8}, {"name": "fine_tuning", "epochs": 1}],
    "seeds": [0, 1],
}
RUN = [sys.executable, "-m", "backdoorlab", "run", "--executor", "ray", "--workers", "2", "-q", "--run-name", "r"]


def _values(store: ResultsStore, run: str) -> dict[tuple, float]:
    rows = store.rows(run)
    return {(r.attack, r.defense, r.seed, r.metric): r.value for r in rows if r.metric != "seconds"}


def _ray_run(config_path, url, out) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*RUN, str(config_path), "--store", url, "-o", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_ray_grid_on_postgres_killed_and_resumed_gives_the_local_rows(tmp_path, postgres_url):
    pytest.importorskip("ray")
    import yaml

    config_path = tmp_path / "raypg.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray workers run one thread each (2 workers on 2 cores)
    try:
        local = Runner(parse_config(CONFIG), tmp_path / "local", log=lambda m: None, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    with ResultsStore(tmp_path / "local" / "results.sqlite") as store:
        expected = _values(store, local.run)

    first = _ray_run(config_path, postgres_url, tmp_path / "machine1")
    deadline = time.monotonic() + 300
    with ResultsStore(postgres_url) as store:
        while not store.finished_cells("r") and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its Ray workers, mid-run
        first.wait()
        done_before = len(store.finished_cells("r"))
    assert 1 <= done_before < 12, first.stdout.read().decode()[-2000:]  # 2 clean, 2 attack, 8 defense cells

    second = _ray_run(config_path, postgres_url, tmp_path / "machine2")
    output = second.communicate(timeout=600)[0].decode()
    assert second.returncode == 0, output[-2000:]
    with ResultsStore(postgres_url) as store:
        got = _values(store, "r")
        assert len(store.finished_cells("r")) == 12
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - expected[k]) <= 1e-6 for k in expected), json.dumps(
        {str(k): (got[k], expected[k]) for k in expected if abs(got[k] - expected[k]) > 1e-6}
    )
