"""`backdoorlab scan --reference` and `scan-population --reference`: the decision under the reference null of
clean models the defender trained itself, on reference files written as third parties write them (traced
TorchScript, a state dict with --arch) and cheap stand-in inspectors."""

import csv
import json
import re
from typing import ClassVar

import numpy as np
import pytest
import torch

from backdoorlab.audit.scan import inspect_references
from backdoorlab.audit.scan_population import scan_population
from backdoorlab.cli import main
from backdoorlab.data.folders import load_clean_data
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.inspection.null import ReferenceNull, apply_reference
from backdoorlab.errors import ConfigError
from backdoorlab.models import build_model
from backdoorlab.models.loading import load_model_file

from .test_scan_files import GradientSize

SHAPE = (1, 8, 8)
ALPHA = 0.05


class CountingGradientSize(GradientSize):
    """GradientSize under a second name (two inspectors: each decides at alpha / 2), counting its inspections."""

    name: ClassVar[str] = "test_gradient_size_counted"
    calls: ClassVar[int] = 0

    def _reverse(self, model, clean, input_shape, num_classes, *, seed, device, progress):
        CountingGradientSize.calls += 1
        return super()._reverse(model, clean, input_shape, num_classes, seed=seed, device=device, progress=progress)


INSPECTORS = (GradientSize, CountingGradientSize)
NAMES = ",".join(cls.name for cls in INSPECTORS)


@pytest.fixture()
def inspectors(register_for_test):
    for cls in INSPECTORS:
        register_for_test(DEFENSES, cls.name, cls)
    CountingGradientSize.calls = 0


def _traced(classes: int, seed: int) -> torch.jit.ScriptModule:
    model = build_model("badnet_cnn", SHAPE, classes, (0.3,), (0.3,), seed=seed).eval()
    return torch.jit.trace(model, torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(0)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.ts (the scanned model), ref{0,1,2}.ts (clean references), ref7.ts (7 classes), clean.npz (60 samples);
    and as state dicts (loaded with --arch): model.pt, ref{0,1}.pt."""
    folder = tmp_path_factory.mktemp("reference")
    for name, classes, seed in [("model", 10, 0), ("ref0", 10, 1), ("ref1", 10, 2), ("ref2", 10, 3), ("ref7", 7, 4)]:
        torch.jit.save(_traced(classes, seed), folder / f"{name}.ts")
    for name, seed in [("model", 0), ("ref0", 1), ("ref1", 2)]:
        torch.save(build_model("badnet_cnn", SHAPE, 10, seed=seed).state_dict(), folder / f"{name}.pt")
    rng = np.random.default_rng(0)
    np.savez(folder / "clean.npz", x=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y=np.arange(60) % 10)
    return folder


def _scan(folder, tmp_path, capsys, references: list[str] = ()) -> tuple[int, dict, str]:
    """``backdoorlab scan model.ts --json`` with ``--reference`` per file name: exit code, report, stderr."""
    args = ["scan", str(folder / "model.ts"), "--data", str(folder / "clean.npz"), "--inspectors", NAMES]
    args += [a for r in references for a in ("--reference", str(folder / r))]
    code = main([*args, "-o", str(tmp_path / "o"), "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code in (0, 1) else {}, err.strip()


def _expected(model, references, clean_file) -> dict[str, object]:
    """Each inspector's verdict on the file ``model``, decided by apply_reference on the ``references``' statistics."""
    clean = load_clean_data(str(clean_file), SHAPE, None).split
    load = lambda path: load_model_file(path, data_shape=SHAPE).model  # noqa: E731
    expected = {}
    for cls in INSPECTORS:
        inspector = cls()
        null = ReferenceNull.from_statistics([inspector.inspect(load(r), clean).statistic for r in references])
        expected[cls.name] = apply_reference(inspector.inspect(load(model), clean), null, ALPHA / len(INSPECTORS))
    return expected


def test_scan_with_references_decides_under_the_reference_null(files, tmp_path, capsys, inspectors):
    refs = ["ref0.ts", "ref1.ts", "ref2.ts"]
    code, report, err = _scan(files, tmp_path, capsys, refs)
    assert code in (0, 1) and code == int(report["infected"]), err
    assert report["null"] == "reference" and report["references"] == [str(files / r) for r in refs]
    assert "reference null, 3 clean models" in report["verdict"]
    assert 0 < report["reference_seconds"] < report["seconds"]
    assert CountingGradientSize.calls == 1 + len(refs)  # R + 1 inspections per inspector
    expected = _expected(files / "model.ts", [files / r for r in refs], files / "clean.npz")
    for name, want in expected.items():
        got = report["evidence"][name]
        assert got["null"] == "reference" and got["alpha"] == ALPHA / 2
        assert got["p_values"] == pytest.approx([float(p) for p in want.p_values], abs=2e-6)
        assert got["cutoff"] == pytest.approx(want.cutoff, abs=1e-4) and got["suspected"] == want.suspected
    # the scan's p-value is Bonferroni's over the two reference-null p-values
    assert report["p_value"] == pytest.approx(min(1.0, 2 * min(v.p_value for v in expected.values())), abs=2e-6)


def test_scan_without_references_says_normal_null(files, tmp_path, capsys, inspectors):
    code, report, err = _scan(files, tmp_path, capsys)
    assert code in (0, 1), err
    assert report["null"] == "normal" and report["references"] == [] and report["reference_seconds"] is None
    assert "reference null" not in report["verdict"]
    assert {v["null"] for v in report["evidence"].values()} == {"normal"}


def test_state_dict_references_load_with_the_scanned_models_options(files, tmp_path, capsys, inspectors):
    args = ["scan", str(files / "model.pt"), "--data", str(files / "clean.npz"), "--inspectors", NAMES]
    args += ["--arch", "badnet_cnn", "--input-shape", "1,8,8", "--num-classes", "10"]
    refs = ["--reference", str(files / "ref0.pt"), "--reference", str(files / "ref1.pt")]
    assert main([*args, *refs, "-o", str(tmp_path / "o")]) in (0, 1), capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "scan.json").read_text())
    assert report["format"] == "pickle" and report["null"] == "reference" and len(report["references"]) == 2


@pytest.mark.parametrize(
    "refs, message",
    [
        (["ref0.ts"], r"error: --reference needs at least 2 clean reference models, got 1"),
        (["ref0.ts", "ref7.ts"], r"error: reference model \S+ref7\.ts: 7 classes, but the scanned model \S+ has 10"),
        (["ref0.ts", "missing.ts"], r"error: \S+missing\.ts: model file not found"),
        (["ref0.ts", "ref0.ts"], r"error: \S+ref0\.ts: given twice as --reference"),
    ],
)
def test_bad_references_exit_2_with_one_line(files, tmp_path, capsys, inspectors, refs, message):
    code, _, err = _scan(files, tmp_path, capsys, refs)
    assert code == 2 and "\n" not in err and re.fullmatch(message + ".*", err), err
    assert CountingGradientSize.calls == 0  # refused before any inspection
    assert not (tmp_path / "o").exists()


def test_scan_population_inspects_the_references_once(files, tmp_path, capsys, inspectors):
    root = tmp_path / "pop"
    for i in range(3):
        (root / f"m{i}").mkdir(parents=True)
        torch.jit.save(_traced(10, 20 + i), root / f"m{i}" / "model.torchscript.pt")
    out = tmp_path / "scan.csv"
    args = ["scan-population", str(root), "-o", str(out), "--data", str(files / "clean.npz"), "--inspectors", NAMES]
    refs = ["--reference", str(files / "ref0.ts"), "--reference", str(files / "ref1.ts")]
    assert main([*args, *refs, "-q"]) in (0, 1), capsys.readouterr().err
    assert CountingGradientSize.calls == 3 + 2  # 3 models, the 2 references once
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["m0", "m1", "m2"] and {r["null"] for r in rows} == {"reference"}
    # the second model's p-values: those of apply_reference on the references' statistics
    want = _expected(root / "m1" / "model.torchscript.pt", [files / "ref0.ts", files / "ref1.ts"], files / "clean.npz")
    for name, verdict in want.items():
        assert float(rows[1][f"{name}_p_value"]) == pytest.approx(verdict.p_value, rel=1e-5)
    # a rerun under the normal null refuses the reference-null CSV
    assert main([*args, "-q"]) == 2
    assert "holds a scan under the reference null, not the normal null" in capsys.readouterr().err


def test_scan_population_references_need_data(files, tmp_path):
    with pytest.raises(ConfigError, match="--reference needs --data"):
        scan_population(tmp_path, tmp_path / "o.csv", references=[files / "ref0.ts", files / "ref1.ts"])


def test_inspect_references_needs_two(files, inspectors):
    clean = load_clean_data(str(files / "clean.npz"), SHAPE, None).split
    one = {"ref0": load_model_file(files / "ref0.ts", data_shape=SHAPE)}
    with pytest.raises(ConfigError, match="at least 2 clean reference models, got 1"):
        inspect_references(one, {GradientSize.name: GradientSize()}, clean)
