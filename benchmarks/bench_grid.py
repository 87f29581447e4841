"""Grid runner targets (issue 8).

- `backdoorlab run` (the built-in default config: every attack x every defense, 1 seed) on 2 cores: < 10 min,
  reported per stage;
- a run killed (SIGKILL) at 3 random points and resumed ends with the same database as an uninterrupted run;
- the Ray executor with 2 workers gives the same numbers as local, and its overhead.

BENCH_SKIP_DEFAULT_RUN=1 skips the first (it trains every model of the default config from scratch).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from backdoorlab.experiments.config import load_config, parse_config
from backdoorlab.experiments.runner import Runner

from .common import print_table

SMALL = {
    "name": "bench-grid",
    "dataset": "digits",
    "training": {"epochs": 6, "lr": 0.003, "batch_size": 64, "augment_shift": 0},
    "attacks": [
        {"name": "badnets", "size": 2, "sweep": {"poison_rate": [0.05, 0.1]}},
        {"name": "badnets", "label": "all2all", "size": 2, "mode": "all_to_all"},
    ],
    "seeds": [0, 1],
}


def _values(db: Path) -> dict:
    rows = (
        sqlite3.connect(db)
        .execute(
            "SELECT run, dataset, model, attack, defense, seed, metric, value FROM results WHERE metric != 'seconds'"
        )
        .fetchall()
    )
    return {r[1:7]: r[7] for r in rows}


def _cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "backdoorlab.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def default_run() -> list[list[object]]:
    if os.environ.get("BENCH_SKIP_DEFAULT_RUN"):
        return [["default run", "skipped (BENCH_SKIP_DEFAULT_RUN)", "< 600 s", "ok"]]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config()
        result = Runner(cfg, tmp, log=lambda m: None, progress=False).run()
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items())
    print(f"default config: {len(result.rows)} rows from {result.computed} cells; stages: {stages}")
    ok = result.seconds < 600
    return [["default run, 1 seed (s)", f"{result.seconds:.0f}", "< 600", "ok" if ok else "MISSED"]]


def kill_and_resume() -> list[list[object]]:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "grid.yaml"
        cfg_path.write_text(yaml.safe_dump(SMALL))
        full = Path(tmp) / "full"
        start = time.perf_counter()
        _cli(["run", str(cfg_path), "-o", str(full), "--run-name", "r", "-q"]).wait()
        uninterrupted = time.perf_counter() - start
        killed = Path(tmp) / "killed"
        kills = 0
        for _ in range(3):
            proc = _cli(["run", str(cfg_path), "-o", str(killed), "--run-name", "r", "-q"])
            time.sleep(rng.uniform(2.0, max(2.5, uninterrupted * 0.6)))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        final = _cli(["run", str(cfg_path), "-o", str(killed), "--run-name", "r", "-q"]).wait()
        same = final == 0 and _values(full / "results.sqlite") == _values(killed / "results.sqlite")
    print(f"small grid: {uninterrupted:.0f} s uninterrupted; killed {kills} times, then resumed")
    return [["killed 3x + resumed == uninterrupted", str(same), "True", "ok" if same and kills == 3 else "MISSED"]]


def ray_vs_local() -> list[list[object]]:
    try:
        import ray  # noqa: F401
    except ImportError:
        return [["ray executor", "ray not installed", "same numbers", "skipped"]]
    cfg = parse_config(SMALL)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        Runner(cfg, Path(tmp) / "local", log=lambda m: None, progress=False).run()
        t1 = time.perf_counter()
        Runner(cfg, Path(tmp) / "ray", log=lambda m: None, progress=False, executor="ray", workers=2).run()
        t2 = time.perf_counter()
        same = _values(Path(tmp) / "local" / "results.sqlite") == _values(Path(tmp) / "ray" / "results.sqlite")
    print(
        f"small grid: local sequential {t1 - t0:.0f} s, ray with 2 workers {t2 - t1:.0f} s "
        f"(ratio {(t2 - t1) / (t1 - t0):.2f}; includes starting Ray)"
    )
    return [
        ["ray (2 workers) numbers == local", str(same), "True", "ok" if same else "MISSED"],
        ["ray wall time / local", f"{(t2 - t1) / (t1 - t0):.2f}", "reported", "ok"],
    ]


def main() -> bool:
    rows = kill_and_resume() + ray_vs_local() + default_run()
    print()
    print_table(["target", "measured", "required", "status"], rows)
    return all(r[-1] in ("ok", "skipped") for r in rows)
