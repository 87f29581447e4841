"""`backdoorlab scan-data` from the command line, on an .npz written the way a user writes one (uint8 NHWC ``x``
and ``y``) with a patch-trigger poison planted in it, and a model checkpoint trained on it (``--model``).

Whether SCAn finds this poison is a quality figure (benchmarks/bench_data_detectors.py, on MNIST-5k); on these 8x8
digits with a 2x2 patch it did not in a probe (class-0 anomaly index 0.22 at 40 poisoned samples), so the test
checks what the command promises: its exit code is its verdict, and its files agree with each other."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from backdoorlab.cli import main
from backdoorlab.data import Dataset, Split
from backdoorlab.models import TrainingConfig, save_checkpoint, train_new_model

POISONED = 120  # of 1,257 training digits, relabelled to 0 with a bright 2x2 corner patch


@pytest.fixture(scope="module")
def poisoned_npz(digits, tmp_path_factory):
    x = (digits.train.x[:, 0].numpy() * 255).round().astype(np.uint8)  # (N, 8, 8): grey, no channel axis
    y = digits.train.y.numpy().copy()
    rng = np.random.default_rng(0)
    chosen = rng.choice(np.flatnonzero(y != 0), POISONED, replace=False)
    x[chosen, -2:, -2:] = 255
    y[chosen] = 0
    folder = tmp_path_factory.mktemp("user")
    np.savez(folder / "train.npz", x=x, y=y)
    poisoned = Split(torch.from_numpy(x[:, None]).float() / 255, torch.from_numpy(y))
    ds = Dataset("user", poisoned, poisoned.head(0), poisoned.head(0), digits.classes, digits.mean, digits.std)
    model = train_new_model("badnet_cnn", ds, TrainingConfig(epochs=2), seed=0, device="cpu", progress=False)
    save_checkpoint(folder / "model.pt", model, architecture="badnet_cnn", input_shape=(1, 8, 8), num_classes=10)
    return folder


def test_scan_data_exit_code_is_its_verdict_and_its_files_agree(poisoned_npz, tmp_path, capsys):
    out = tmp_path / "scan"
    args = ["scan-data", str(poisoned_npz / "train.npz"), "--model", str(poisoned_npz / "model.pt"), "-o", str(out)]
    code = main(args)
    summary = json.loads((out / "summary.json").read_text())
    assert code == (1 if summary["poison_found"] else 0), capsys.readouterr().err
    assert summary["samples"] == len(np.load(poisoned_npz / "train.npz")["y"]) and summary["detector"] == "scan"
    assert summary["model"].endswith("model.pt")
    with open(out / "suspected.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["flagged"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)  # most suspicious first
    y = np.load(poisoned_npz / "train.npz")["y"]
    assert all(int(r["label"]) == y[int(r["index"])] for r in rows)  # each row names its sample's label
    page = (out / "page.html").read_text()
    assert ("no poison found" in page) == (not summary["poison_found"])


def test_scan_data_refuses_an_npz_without_labels_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 8, 8), dtype=np.uint8))
    out = tmp_path / "scan"
    assert main(["scan-data", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expected arrays x and y" in err
    assert not out.exists()
