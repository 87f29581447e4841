"""`backdoorlab scan` on files written the way third parties write them: a ``torch.export.save`` program exported
with one example input, a traced TorchScript module (no shape recorded), an ``.npz`` of clean samples with only
``x`` and ``y``, and a pickle that needs code."""

import json
import re
from typing import ClassVar

import numpy as np
import pytest
import torch

from backdoorlab.cli import main
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.inspection.base import Inspector, Reversal
from backdoorlab.models import build_model
from backdoorlab.models.loading import load_model_file

SHAPE = (1, 8, 8)


class GradientSize(Inspector):
    """A stand-in inspector, cheap on the CPU: per label, the mean input-gradient norm of that label's logit (it
    runs the model forward and backward on the clean samples, as the real inspectors do)."""

    name: ClassVar[str] = "test_gradient_size"

    def _reverse(self, model, clean, input_shape, num_classes, *, seed, device, progress) -> Reversal:
        sizes = []
        for label in range(num_classes):
            x = clean.x.clone().requires_grad_()
            model(x)[:, label].sum().backward()
            sizes.append(x.grad.flatten(1).norm(dim=1).mean())
        return Reversal(torch.stack(sizes))


@pytest.fixture()
def inspector(register_for_test):
    register_for_test(DEFENSES, GradientSize.name, GradientSize)
    return GradientSize.name


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("third_party")
    model = build_model("badnet_cnn", SHAPE, 10, (0.3,), (0.3,), seed=0).eval()
    example = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(0))
    torch.export.save(torch.export.export(model, (example,)), folder / "model.pt2")  # batch size fixed at 1
    torch.jit.save(torch.jit.trace(model, example), folder / "model.ts")
    rng = np.random.default_rng(0)
    np.savez(folder / "clean.npz", x=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y=np.arange(60) % 10)
    return folder, model


def test_exported_program_with_a_fixed_batch_loads_with_its_own_shape(files):
    folder, model = files
    loaded = load_model_file(folder / "model.pt2")  # no --input-shape: the program records it
    assert loaded.format == "export" and loaded.input_shape == SHAPE and loaded.num_classes == 10
    x = torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loaded.model.train().eval()  # an exported graph refuses .train(); every defense calls it
    out = loaded.model(x)
    assert torch.allclose(out, model(x), atol=1e-5)
    out.sum().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["model.pt2", "model.ts"])
def test_scan_takes_the_shape_from_the_clean_samples_and_uses_the_whole_npz(files, tmp_path, capsys, inspector, name):
    folder, _ = files
    out = tmp_path / "scan"
    args = ["scan", str(folder / name), "--data", str(folder / "clean.npz"), "--inspectors", inspector, "--json"]
    code = main([*args, "-o", str(out)])
    assert code in (0, 1), capsys.readouterr().err
    report = json.loads((out / "scan.json").read_text())
    assert report["input_shape"] == list(SHAPE)
    assert report["clean_samples"] == 60 and "all 60 samples" in report["clean_source"]
    assert report["format"] == ("export" if name.endswith("pt2") else "torchscript")


def test_pickle_that_needs_code_gets_one_clean_line(tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(build_model("badnet_cnn", SHAPE, 10, (0.3,), (0.3,), seed=0), path)
    np.savez(tmp_path / "clean.npz", x=np.zeros((30, 8, 8), dtype=np.uint8), y=np.arange(30) % 10)
    assert main(["scan", str(path), "--data", str(tmp_path / "clean.npz"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "\x1b" not in err and "weights_only" not in err
    assert re.search(r"refusing to unpickle it.*pass --trust-pickle$", err), err
    assert not (tmp_path / "o").exists()
