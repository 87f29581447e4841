"""`backdoorlab scan` end to end on a tiny setting: exported backdoored and clean models, exit codes, outputs."""

import json

import pytest
import torch

from backdoorlab.attacks import BadNets
from backdoorlab.cli import main
from backdoorlab.data import load_dataset
from backdoorlab.models import TrainingConfig, build_model, train_model

FAST = TrainingConfig(epochs=10, lr=3e-3, batch_size=64, augment_shift=0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ds = load_dataset("digits")
    bd = BadNets(size=2, target=4).run(ds, "badnet_cnn", FAST, seed=0, progress=False)
    clean = build_model("badnet_cnn", ds.input_shape, 10, ds.mean, ds.std, seed=1)
    train_model(clean, ds.train.x, ds.train.y, FAST, seed=1, progress=False)
    folder = tmp_path_factory.mktemp("models")
    x = ds.test.x[:1]
    for name, model in (("backdoored", bd.model.eval()), ("clean", clean.eval())):
        torch.jit.save(torch.jit.trace(model, x), folder / f"{name}.ts")
        torch.onnx.export(
            model, x, folder / f"{name}.onnx", input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False
        )
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("suffix, extra", [(".ts", ["--input-shape", "1,8,8"]), (".onnx", [])])
def test_scan_verdicts_and_exit_codes(models, tmp_path, capsys, suffix, extra):
    base = ["--data", "digits", "--inspectors", "neural_cleanse", "--num-classes", "10", *extra]
    out = tmp_path / "bd"
    # A 2x2 patch covers 1/16 of an 8x8 digit: Neural Cleanse's anomaly index for it lies near the alpha = 0.05
    # cutoff for 10 labels (3.9; p 0.03 at the defaults of issue 22, 0.06 with --preset verdicts), so this model is
    # scanned at alpha 0.25
    code = main(["scan", str(models / f"backdoored{suffix}"), *base, "--alpha", "0.25", "-o", str(out), "--json"])
    verdict = json.loads(capsys.readouterr().out)
    assert code == 1, verdict["evidence"]
    assert verdict["infected"] is True and verdict["suspected_targets"][0] == 4
    assert verdict["strip"]["threshold_entropy_bits"] is not None
    # one inspector: it decides at the scan's alpha, and the scan's p-value is its own
    assert verdict["alpha"] == 0.25 and verdict["evidence"]["neural_cleanse"]["alpha"] == 0.25
    assert 0 < verdict["p_value"] == verdict["evidence"]["neural_cleanse"]["p_value"] <= 0.25
    html = (out / "scan.html").read_text()
    assert "Backdoor suspected" in html and "data:image/png;base64," in html
    assert json.loads((out / "scan.json").read_text())["suspected_targets"][0] == 4
    assert main(["scan", str(models / f"clean{suffix}"), *base, "-o", str(tmp_path / "clean")]) == 0
    assert "No backdoor found" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-classes", "7", "--input-shape", "1,8,8"], "has 10 outputs but --num-classes is 7"),
        (["--input-shape", "1,9"], "--input-shape needs 3 values"),
        (["--input-shape", "1,8,8", "--inspectors", "nope"], "unknown defense 'nope'"),
        (["--input-shape", "1,8,8", "--alpha", "1.5"], "--alpha must lie between 0 and 1, got 1.5"),
        (["--input-shape", "1,8,8", "--preset", "nope"], "unknown --preset 'nope'; valid: default, verdicts"),
    ],
)
def test_scan_bad_input(models, tmp_path, capsys, args, message):
    assert main(["scan", str(models / "clean.ts"), "--data", "digits", *args, "-o", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_scan_too_few_clean_samples(models, tmp_path, capsys):
    import numpy as np

    path = tmp_path / "few.npz"
    np.savez(path, x=np.zeros((15, 8, 8), dtype=np.uint8), y=np.arange(15) % 10)  # x and y only: all 15 are used
    assert main(["scan", str(models / "clean.ts"), "--data", str(path), "--input-shape", "1,8,8"]) == 2
    assert "15 clean samples; the scan needs at least 20" in capsys.readouterr().err


def test_scan_corrupt_file(tmp_path, capsys):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"junk")
    assert main(["scan", str(bad), "--data", "digits"]) == 2
    assert "not a valid ONNX model" in capsys.readouterr().err
