"""The leaderboard setting (issue 23): the configs keep BackdoorBench's protocol and run to completion on a tiny
3x32x32 slice on the CPU; the defender's share of the training set; the leaderboard's figures and the report's
comparison with them (also in a headless browser)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from backdoorlab.attacks import ATTACKS
from backdoorlab.cli import main
from backdoorlab.data import load_dataset
from backdoorlab.data.base import with_defender_fraction
from backdoorlab.defenses import DEFENSES
from backdoorlab.errors import ConfigError, DataError
from backdoorlab.experiments.config import DatasetConfig, load_config, parse_config
from backdoorlab.experiments.model_source import dataset_fingerprint
from backdoorlab.experiments.store import ResultRow, SettingInfo
from backdoorlab.models import MODELS
from backdoorlab.models.architectures import PreActResNet18
from backdoorlab.report.leaderboard import (
    CIFAR10_CLASSES,
    FIGURES,
    LEADERBOARD_TRAINING,
    leaderboard_der,
    leaderboard_figure,
)
from backdoorlab.report.leaderboard_comparison import comparison_table, leaderboard_section

from .browser import check_page, chromium_path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BOARDS = {"cifar10": CIFAR10_CLASSES, "gtsrb": tuple(f"sign {i}" for i in range(43))}
DOMAIN_ATTACKS = ("_audio", "_glasses")  # triggers of sound and faces, not of 3x32x32 images


def tiny_npz(path: Path, classes: tuple[str, ...], per_class: int, test_per_class: int) -> Path:
    """A balanced 3x32x32 uint8 dataset, one mean colour per class plus noise; ``per_class`` training images."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 215, size=(len(classes), 1, 1, 3))

    def part(n: int):
        y = np.repeat(np.arange(len(classes)), n)
        x = np.clip(colours[y] + rng.normal(0, 25, size=(len(y), 32, 32, 3)), 0, 255).astype(np.uint8)
        return x, y

    (x_tr, y_tr), (x_te, y_te) = part(per_class), part(test_per_class)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, classes=np.array(classes))
    return path


@pytest.mark.parametrize("board", ["cifar10", "gtsrb"])
def test_leaderboard_config_keeps_the_protocol(board):
    cfg = load_config(CONFIGS / f"leaderboard-{board}.yaml")
    assert cfg.model == "preact_resnet18" and cfg.device == "cuda"
    assert cfg.dataset.name == board and cfg.dataset.defender_fraction == 0.05
    training = cfg.training.model_dump()
    assert {k: training[k] for k in LEADERBOARD_TRAINING} == {
        **LEADERBOARD_TRAINING,
        "augment_flip": board == "cifar10",  # signs are not mirror-symmetric
    }
    attacks = [a for _, a in cfg.build_attacks()]
    images = {n for n in ATTACKS.names() if not n.endswith(DOMAIN_ATTACKS)}
    assert {a.name for a in attacks} == images
    assert all(getattr(a, "target", 0) == 0 and getattr(a, "targets", [0]) == [0] for a in attacks)
    rates = {a.name: getattr(a, "poison_rate", getattr(a, "flip_rate", None)) for a in attacks}
    clean_label = {"sig", "label_consistent"} if board == "gtsrb" else set()
    assert {n for n, r in rates.items() if r not in (0.1, None)} == clean_label  # GTSRB's class 0 is 0.5%
    repairs = {n for n in DEFENSES.names() if DEFENSES.get(n).kind == "repair"}
    assert {d.name for _, d in cfg.build_defenses()} == repairs


@pytest.mark.parametrize("board", ["cifar10", "gtsrb"])
def test_every_attack_of_the_leaderboard_config_fits_a_slice_of_its_geometry(tmp_path, board):
    cfg = load_config(CONFIGS / f"leaderboard-{board}.yaml")
    npz = tiny_npz(tmp_path / f"{board}_tiny.npz", BOARDS[board], 40, 2)
    ds = DatasetConfig(name=f"npz:{npz}", defender_fraction=cfg.dataset.defender_fraction).load()
    for _, attack in cfg.build_attacks():
        attack.check(ds)  # raises ConfigError on a rate the data cannot give


@pytest.fixture
def narrow_preact(monkeypatch):
    """preact_resnet18 with narrow stages (16, 16, 32, 32): the same network as the configs name, small enough to
    train on 2 cores in seconds; the configs keep the registered name, so the report sees the leaderboard's model."""
    narrow = lambda shape, k: PreActResNet18(shape[0], k, widths=(16, 16, 32, 32))  # noqa: E731
    monkeypatch.setitem(MODELS._items, "preact_resnet18", narrow)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: a second thread costs more than it gives on a busy machine
    yield
    torch.set_num_threads(threads)


def run_tiny(tmp_path: Path, board: str, per_class: int) -> Path:
    """The leaderboard config of ``board`` on a tiny slice: 1 epoch, BadNets, fine-tuning and CLP, CPU."""
    cfg = yaml.safe_load((CONFIGS / f"leaderboard-{board}.yaml").read_text())
    npz = tiny_npz(tmp_path / f"{board}_tiny.npz", BOARDS[board], per_class, 2)
    cfg["dataset"] = {**cfg["dataset"], "name": f"npz:{npz}", "data_dir": None}
    cfg["training"]["epochs"] = 1
    cfg["attacks"] = [a for a in cfg["attacks"] if a["name"] == "badnets"]
    cfg["defenses"] = [{"name": "fine_tuning", "epochs": 1}, "clp"]
    cfg["device"] = "cpu"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "runs"), "--run-name", board, "-q"]) == 0
    return tmp_path / "runs" / board


@pytest.mark.parametrize(("board", "per_class", "train"), [("cifar10", 20, 190), ("gtsrb", 6, 215)])
def test_leaderboard_config_runs_on_a_tiny_slice_on_the_cpu(tmp_path, narrow_preact, board, per_class, train):
    run = run_tiny(tmp_path, board, per_class)
    md = (run / "report.md").read_text()
    assert f"train {train} / val {per_class * len(BOARDS[board]) - train}" in md  # 5% to the defender
    section = md.split("## Comparison with the BackdoorBench leaderboard")[1].split("\n## ")[0]
    assert "the defender's share 0.05 of the training set" in section and "epochs 1 (leaderboard 100)" in section
    lines = [line for line in section.splitlines() if line.startswith(f"| npz:{board}_tiny.npz")]
    cells = {tuple(line.split(" | ")[1:3]) for line in lines}
    # GTSRB's leaderboard has only undefended rows; CIFAR-10's has BadNets x fine-tuning and x CLP as well
    assert cells == (
        {("badnets", "none"), ("badnets", "fine_tuning"), ("badnets", "clp")}
        if board == "cifar10"
        else {("badnets", "none")}
    )
    assert all(line.split(" | ")[3] == "10" for line in lines)


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (make test installs it with apt)")
def test_leaderboard_comparison_renders_in_chromium(tmp_path, narrow_preact):
    pytest.importorskip("websocket")
    page = check_page(run_tiny(tmp_path, "cifar10", 20) / "report.html")
    assert page.errors == [] and page.requests == []
    assert "Comparison with the BackdoorBench leaderboard" in page.headings
    assert page.headings.index("Comparison with the BackdoorBench leaderboard") < page.headings.index(
        "Clean accuracy and attack success rate"
    )


def _rows(dataset: str, model: str, cells: dict) -> list[ResultRow]:
    return [
        ResultRow("r", dataset, model, attack, defense, 0, metric, value)
        for (attack, defense), metrics in cells.items()
        for metric, value in metrics.items()
    ]


COMPARED = {
    ("badnets", "none"): {"clean_accuracy": 0.90, "asr": 0.95},
    ("badnets", "anp"): {"clean_accuracy": 0.88, "asr": 0.05},
    ("none", "none"): {"clean_accuracy": 0.92},
}
CFG = {"model": "preact_resnet18", "attacks": [{"name": "badnets", "poison_rate": 0.1}], "defenses": ["anp"]}


def test_comparison_sets_each_cell_beside_the_leaderboard_with_the_difference():
    cfg = parse_config(CFG)
    info = SettingInfo(0, "npz:c.npz", "preact_resnet18", "s", CIFAR10_CLASSES, (3, 32, 32))
    table = comparison_table(cfg, [info], _rows("npz:c.npz", "preact_resnet18", COMPARED))
    by_cell = {tuple(r[1:3]): dict(zip(table.headers, r, strict=True)) for r in table.rows}
    assert set(by_cell) == {("badnets", "none"), ("badnets", "anp")}  # the clean model has no leaderboard row
    anp = by_cell[("badnets", "anp")]
    assert (anp["CA"], anp["CA (LB)"], anp["ΔCA"]) == ("88.0", "84.2", "+3.8")
    assert (anp["ASR"], anp["ASR (LB)"], anp["ΔASR"]) == ("5.0", "0.7", "+4.3")
    # ours: (0.90 / 0.95 -> 0.88 / 0.05) = (0.90 - 0.02 + 1) / 2 = 94.0; the leaderboard's 93.6
    assert (anp["DER"], anp["DER (LB)"], anp["ΔDER"]) == ("94.0", "93.6", "+0.4")
    assert "#35" in anp["leaderboard note"]
    assert by_cell[("badnets", "none")]["DER"] == "–"


@pytest.mark.parametrize(
    ("info", "cfg"),
    [
        (SettingInfo(0, "digits", "preact_resnet18", "s", tuple("0123456789"), (1, 8, 8)), CFG),
        (SettingInfo(0, "npz:c.npz", "cnn_small", "s", CIFAR10_CLASSES, (3, 32, 32)), {**CFG, "model": "cnn_small"}),
        (
            SettingInfo(0, "npz:c.npz", "preact_resnet18", "s", CIFAR10_CLASSES, (3, 32, 32)),
            {**CFG, "attacks": [{"name": "badnets", "target": 3}]},
        ),
        (
            SettingInfo(0, "npz:c.npz", "preact_resnet18", "s", CIFAR10_CLASSES, (3, 32, 32)),
            {**CFG, "attacks": [{"name": "badnets", "poison_rate": 0.2}]},
        ),
    ],
    ids=["other-dataset", "other-model", "other-target", "rate-not-on-the-board"],
)
def test_comparison_is_absent_off_the_leaderboard_setting(info, cfg):
    rows = _rows(info.dataset, info.model, COMPARED)
    assert leaderboard_section(parse_config(cfg), [info], rows) is None


def test_leaderboard_der_matches_the_figures_the_reference_notes_state():
    assert round(leaderboard_der(leaderboard_figure("cifar10", "badnets", "anp", 0.1)), 1) == 93.6
    assert round(leaderboard_der(leaderboard_figure("cifar10", "badnets", "i_bau", 0.1)), 1) == 95.8
    assert leaderboard_der(leaderboard_figure("cifar10", "badnets", "none", 0.1)) is None
    assert leaderboard_figure("cifar10", "badnets", "anp", 0.05) is None


def test_leaderboard_figures_name_registered_methods_and_lie_in_range():
    for fig in FIGURES:
        assert fig.attack in ATTACKS and (fig.defense == "none" or fig.defense in DEFENSES), fig
        assert 0 < fig.poison_rate <= 0.1 and fig.dataset in BOARDS
        assert all(v is None or 0 <= v <= 100 for v in (fig.ca, fig.asr)), fig
    keys = [(f.dataset, f.attack, f.defense, f.poison_rate) for f in FIGURES]
    assert len(keys) == len(set(keys))


def test_defender_fraction_redraws_val_from_the_whole_training_set():
    ds = load_dataset("digits")
    pool = len(ds.train) + len(ds.val)
    out = with_defender_fraction(ds, 0.05)
    assert len(out.val) == round(0.05 * pool) and len(out.train) + len(out.val) == pool
    assert torch.equal(out.test.x, ds.test.x)
    assert torch.bincount(out.val.y).min() >= 1  # stratified: every class
    both = torch.cat([out.train.x, out.val.x]).flatten(1)
    assert torch.equal(both.sum(0), torch.cat([ds.train.x, ds.val.x]).flatten(1).sum(0))  # same images, disjoint
    assert torch.equal(with_defender_fraction(ds, 0.05).val.x, out.val.x)  # fixed by its seed
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        with_defender_fraction(ds, 1.0)


def test_defender_fraction_defaults_to_the_fixed_split_and_keys_the_cache():
    default = DatasetConfig(name="digits").load()
    assert torch.equal(default.val.x, load_dataset("digits").val.x)
    assert dataset_fingerprint("digits", None) == {"name": "digits", "data_dir": None}  # earlier cache keys hold
    assert dataset_fingerprint("digits", None, 0.05)["defender_fraction"] == 0.05
    with pytest.raises(ConfigError, match="defender_fraction"):
        parse_config({"dataset": {"name": "digits", "defender_fraction": 1.5}})


def test_cli_rejects_a_defender_fraction_out_of_range(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "dataset": {"name": "digits", "defender_fraction": 0}}))
    assert main(["run", str(cfg), "-o", str(tmp_path / "runs")]) == 2
    assert "defender_fraction" in capsys.readouterr().err and not (tmp_path / "runs").exists()
