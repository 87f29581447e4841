"""End-to-end tests of the `backdoorlab` command on a tiny config (8x8 digits, a few epochs)."""

import json
import sqlite3
import subprocess
import sys

import pytest
import yaml

from backdoorlab.cli import main

TINY = {
    "name": "tiny",
    "dataset": "digits",
    "model": "badnet_cnn",
    "training": {"epochs": 10, "lr": 0.003, "batch_size": 64, "augment_shift": 0},
    "attacks": [{"name": "badnets", "size": 2, "label": "bn"}],
    "seeds": [0],
    "examples": 3,
}


def _write(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_run_end_to_end_then_cache(tmp_path, capsys):
    cfg, out = _write(tmp_path, TINY), tmp_path / "runs"
    assert main(["run", str(cfg), "-o", str(out), "--run-name", "first", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "runs/first/report.html" in printed
    run_dir = out / "first"
    assert {p.name for p in run_dir.iterdir()} >= {
        "report.md",
        "report.html",
        "examples.png",
        "results.csv",
        "results.json",
    }
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html and "http" not in html.split("<body>")[1]
    rows = (
        sqlite3.connect(out / "results.sqlite")
        .execute("SELECT attack, metric, value FROM results WHERE run='first'")
        .fetchall()
    )
    values = {(a, m): v for a, m, v in rows}
    assert values[("none", "clean_accuracy")] > 0.85
    assert values[("bn", "asr")] > 0.9
    assert set(m for a, m in values if a == "bn") >= {"clean_accuracy", "asr", "robust_accuracy"}
    cached = len(list((out / "cache").glob("*.pt")))
    assert cached == 2
    # a second run under a new name reuses both models from the cache and measures the same figures
    assert main(["run", str(cfg), "-o", str(out), "--run-name", "second"]) == 0
    again = (
        sqlite3.connect(out / "results.sqlite")
        .execute("SELECT attack, metric, value FROM results WHERE run='second'")
        .fetchall()
    )
    assert {(a, m): v for a, m, v in again if m != "seconds"} == {k: v for k, v in values.items() if k[1] != "seconds"}
    assert len(list((out / "cache").glob("*.pt"))) == cached


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    datasets = next(line for line in out.splitlines() if line.startswith("datasets:"))
    assert all(name in datasets for name in ("cifar10", "digits", "gtsrb", "mnist5k", "npz:PATH"))
    attacks = next(line for line in out.splitlines() if line.startswith("attacks: "))
    assert "badnets" in attacks.split(": ", 1)[1].split(", ") and "badnet_cnn" in out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"model": "resnet9000"}, "unknown model 'resnet9000'; valid names"),
        ({"attacks": [{"name": "badnetz"}]}, "unknown attack 'badnetz' in attacks; valid names: adaptive_blend"),
        (
            {"attacks": [{"name": "badnets", "poison_rate": 1.5}]},
            "poison_rate: Input should be less than or equal to 1",
        ),
        ({"attacks": [{"name": "badnets", "target": 12}]}, "target 12 is outside the classes 0..9"),
        ({"attacks": [{"name": "badnets", "size": 20}]}, "larger than the 8x8 image"),
        ({"epochs": 3}, "epochs: unknown field"),
        ({"training": {"epochs": "three"}}, "training.epochs: Input should be a valid integer"),
        ({"dataset": {"name": "mnist", "data_dir": "/nonexistent/mnist"}}, "data directory not found"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, change, message):
    cfg, out = _write(tmp_path, {**TINY, **change}), tmp_path / "runs"
    assert main(["run", str(cfg), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("error:")
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "absent.yaml"), "-o", str(tmp_path / "runs")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_console_script_exit_code(tmp_path):
    cfg = _write(tmp_path, {**TINY, "dataset": "nope"})
    proc = subprocess.run(
        [sys.executable, "-m", "backdoorlab.cli", "run", str(cfg), "-o", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert json.dumps("nope")[1:-1] in proc.stderr


@pytest.mark.parametrize("argv", [["run", "--runs-dir", "x"], ["scan"], ["nosuchcommand"]])
def test_usage_errors_exit_2_without_a_traceback(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "No such" in err or "Missing" in err
