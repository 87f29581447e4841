"""Issue 22: TDC's trigger distribution, the population generator (TDC layout), the TDC / TrojAI loaders and
`scan-population`, on fixtures written here in those layouts."""

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from backdoorlab.attacks import ATTACKS
from backdoorlab.audit.model_folders import find_models
from backdoorlab.cli import main
from backdoorlab.data import load_dataset
from backdoorlab.data.folders import load_image_folder
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.config import parse_config
from backdoorlab.experiments.model_files import plan_population, tdc_targets, write_population
from backdoorlab.models import build_model
from backdoorlab.triggers import TRIGGERS, tdc_trigger
from backdoorlab.utils.seeding import make_generator

from .test_scan_files import GradientSize

SHAPE = (1, 8, 8)


def _box(trigger):
    rows, cols = trigger.mask[0].nonzero(as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_tdc_patch_and_blended_triggers_follow_the_distribution():
    sides = set()
    for seed in range(40):
        t = tdc_trigger("patch", (1, 28, 28), seed)
        h, w = _box(t)
        assert 3 <= h <= 10 and 3 <= w <= 10
        assert int((t.mask > 0).sum()) == h * w and float(t.mask.max()) == 1.0  # a full rectangle at alpha 1
        assert set(t.pattern.unique().tolist()) <= {0.0, 1.0}
        sides |= {h, w}
        assert max(_box(tdc_trigger("patch", SHAPE, seed))) <= 7  # one free row and column on 8x8
    assert sides == set(range(3, 11))
    blended = tdc_trigger("blended", (3, 32, 32), 1)
    assert torch.all(blended.mask == 0.1) and blended.pattern.shape == (3, 32, 32)
    assert 0.4 < float(blended.pattern.mean()) < 0.6
    again = TRIGGERS.build("tdc", {"trigger_type": "patch", "seed": 7}).make((1, 28, 28))
    assert torch.equal(again.mask, tdc_trigger("patch", (1, 28, 28), 7).mask)
    assert not torch.equal(again.mask, tdc_trigger("patch", (1, 28, 28), 8).mask)
    with pytest.raises(ConfigError, match="does not fit"):
        tdc_trigger("patch", (1, 3, 3), 0)


def test_tdc_attack_draws_its_trigger_from_the_run_seed_unless_given():
    ds = load_dataset("digits")
    free = ATTACKS.build("tdc", {"trigger_type": "patch"})
    assert not torch.equal(free.draw_trigger(ds, 1).mask, free.draw_trigger(ds, 2).mask)
    fixed = ATTACKS.build("tdc", {"trigger_type": "patch", "trigger_seed": 5})
    assert torch.equal(fixed.draw_trigger(ds, 1).mask, fixed.draw_trigger(ds, 2).mask)


def _raw():
    return {
        "name": "pop",
        "dataset": "digits",
        "model": ["badnet_cnn", "tdc_cnn"],
        "training": {"epochs": 1, "batch_size": 128, "augment_shift": 0, "lr": 0.003},
        "attacks": [{"name": "tdc", "trigger_type": "patch"}, {"name": "tdc", "label": "b", "trigger_type": "blended"}],
    }


def _config():
    return parse_config(_raw(), "test config")


def test_plan_draws_targets_triggers_and_shuffled_ids_from_the_seed():
    assert sorted(tdc_targets(10, 10, make_generator(0))) == list(range(10))
    plan = plan_population(_config(), 8, 10, seed=3)
    assert plan == plan_population(_config(), 8, 10, seed=3)
    assert [p.id for p in plan] == [f"id-{i:04d}" for i in range(16)]
    assert sum(p.trojaned for p in plan) == 8 and [p.trojaned for p in plan] != [False] * 8 + [True] * 8
    bad = [p for p in plan if p.trojaned]
    combos = {(p.architecture, p.attack.trigger_type) for p in bad}
    assert len(combos) == 4  # every architecture with every attack
    assert len({p.attack.trigger_seed for p in bad}) == 8 and len({p.seed for p in plan}) == 16
    assert {p.architecture for p in plan if not p.trojaned} == {"badnet_cnn", "tdc_cnn"}
    assert plan_population(_config(), 8, 10, seed=4) != plan


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("pop")
    out, config = root / "digits", root / "pop.yaml"
    config.write_text(yaml.safe_dump(_raw()))
    formats = ["torchscript"] + (["onnx"] if _has_onnx() else [])
    args = ["population", str(config), "-o", str(out), "--n", "2", "--formats", ",".join(formats)]
    assert main([*args, "--min-asr", "0", "--device", "cpu", "-q"]) == 0
    infos = [json.loads((out / f"id-{i:04d}" / "info.json").read_text()) for i in range(4)]
    return out, infos, formats


def _has_onnx() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def test_generator_writes_the_tdc_layout_and_resumes(generated):
    out, infos, formats = generated
    assert sorted(p.name for p in out.iterdir()) == ["id-0000", "id-0001", "id-0002", "id-0003", "population.json"]
    assert sum(i["trojaned"] for i in infos) == 2
    for info in infos:
        folder = out / info["id"]
        assert json.loads((folder / "info.json").read_text()) == info
        assert (folder / "model.pt").is_file() and (folder / "model.torchscript.pt").is_file()
        assert (folder / "model.onnx").is_file() == ("onnx" in formats)
        assert 0 <= info["clean_accuracy"] <= 1
        if info["trojaned"]:
            assert info["trigger_type"] in ("patch", "blended") and 0 <= info["target_label"] < 10
            assert 0 <= info["asr"] <= 1 and info["attack"] == "tdc"
        else:
            assert info["target_label"] is None and info["trigger_type"] is None
    whole = torch.load(out / infos[0]["id"] / "model.pt", weights_only=False)
    script = torch.jit.load(str(out / infos[0]["id"] / "model.torchscript.pt"))
    x = torch.rand(4, *SHAPE)
    assert torch.allclose(whole(x), script(x), atol=1e-5)
    stamp = (out / "id-0000" / "model.pt").stat().st_mtime_ns
    again = write_population(_config(), out, n=2, seed=0, formats=formats, min_asr=0.0, device="cpu", progress=False)
    assert again == infos and (out / "id-0000" / "model.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="holds another population"):
        write_population(_config(), out, n=3, seed=0, formats=formats, min_asr=0.0, progress=False)


def test_population_command_refuses_a_folder_that_is_not_a_population(tmp_path, capsys):
    (tmp_path / "pop.yaml").write_text(yaml.safe_dump(_raw()))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["population", str(tmp_path / "pop.yaml"), "-o", str(tmp_path / "busy"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not a population folder" in err
    assert main(["population", str(tmp_path / "pop.yaml"), "-o", str(tmp_path / "p"), "--formats", "tflite"]) == 2
    assert "unknown model format 'tflite'" in capsys.readouterr().err and not (tmp_path / "p").exists()


def _png(path, value):
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


@pytest.fixture()
def layouts(tmp_path):
    """A TDC folder (train/{clean,trojan}/<id>, info.json with an attack specification) and a TrojAI folder
    (config.json, ground_truth.csv, clean-example-data/ PNGs named by class), whole pickled modules in both."""
    tdc = tmp_path / "tdc"
    for i, (role, spec) in enumerate([("clean", None), ("trojan", {"target_label": 4, "trigger": {"alpha": 1.0}})]):
        folder = tdc / "train" / role / f"id-{i:04d}"
        folder.mkdir(parents=True)
        torch.save(build_model("badnet_cnn", SHAPE, 10, seed=i).eval(), folder / "model.pt")
        (folder / "info.json").write_text(
            json.dumps({"dataset": "digits"} | ({"attack_specification": spec} if spec else {}))
        )
    trojai = tmp_path / "trojai"
    for i, poisoned in enumerate([False, True]):
        folder = trojai / f"id-{i:08d}"
        (folder / "clean-example-data").mkdir(parents=True)
        torch.save(build_model("badnet_cnn", SHAPE, 10, seed=10 + i).eval(), folder / "model.pt")
        config = {"poisoned": poisoned, "model_architecture": "badnet_cnn"}
        config |= {"triggers": [{"source_class": 1, "target_class": 7}]} if poisoned else {}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "ground_truth.csv").write_text(f"{int(poisoned)}\n")
        for k in range(24):
            _png(folder / "clean-example-data" / f"class_{k % 10}_example_{k // 10}.png", 10 * k)
    return tdc, trojai


def test_loaders_read_the_tdc_and_trojai_ground_truth(layouts):
    tdc, trojai = layouts
    entries = find_models(tdc)
    assert [(e.id, e.layout, e.trojaned, e.target) for e in entries] == [
        ("train/clean/id-0000", "tdc", False, None),  # from its parent folder
        ("train/trojan/id-0001", "tdc", True, 4),
    ]
    entries = find_models(trojai)
    assert [(e.layout, e.trojaned, e.target, e.architecture) for e in entries] == [
        ("trojai", False, None, "badnet_cnn"),
        ("trojai", True, 7, "badnet_cnn"),
    ]
    examples = load_image_folder(entries[0].examples, SHAPE)
    assert examples.labeled and torch.bincount(examples.split.y).tolist() == [3, 3, 3, 3, 2, 2, 2, 2, 2, 2]
    assert len(examples.split) == 24 and examples.classes is None


def test_scan_population_refuses_pickles_without_trust_and_writes_nothing(layouts, tmp_path, capsys):
    _, trojai = layouts
    out = tmp_path / "scan.csv"
    assert main(["scan-population", str(trojai), "-o", str(out), "--inspectors", "neural_cleanse"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith("pass --trust-pickle") and not out.exists()


def test_scan_population_writes_one_row_per_model_and_resumes(layouts, tmp_path, capsys, register_for_test):
    register_for_test(
        __import__("backdoorlab.defenses", fromlist=["DEFENSES"]).DEFENSES, GradientSize.name, GradientSize
    )
    _, trojai = layouts
    out = tmp_path / "scan.csv"
    args = ["scan-population", str(trojai), "-o", str(out), "--inspectors", GradientSize.name, "--trust-pickle", "-q"]
    assert main(args) in (0, 1)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("warning: --trust-pickle: 2 model file(s)"), err
    rows = list(csv.DictReader(out.open()))
    assert [(r["id"], r["trojaned"], r["target"], r["format"]) for r in rows] == [
        ("id-00000000", "0", "", "pickle"),
        ("id-00000001", "1", "7", "pickle"),
    ]
    for r in rows:
        assert r["verdict"] in ("backdoor", "clean") and 0 <= int(r["top_label"]) < 10
        assert float(r["seconds"]) > 0 and 0 <= float(r[f"{GradientSize.name}_p_value"]) <= 1
    stamp = out.read_text()
    assert main(args) in (0, 1) and out.read_text() == stamp  # resumed: nothing scanned again
    with pytest.raises(ConfigError, match="other columns"):
        from backdoorlab.audit.scan_population import scan_population

        scan_population(trojai, out, inspectors=["neural_cleanse", GradientSize.name], trust_pickle=True)
