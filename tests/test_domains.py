"""The three application domains together: the Table 1 configs, the GTSRB loaders, the traffic-sign sticker, and
the combined Table 1 report (from made-up result rows, so every number it prints is known)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.data import load_dataset
from backdoorlab.data.domains import gtsrb_from_npz
from backdoorlab.defenses import DEFENSES
from backdoorlab.errors import ConfigError, DataError
from backdoorlab.experiments.config import load_config
from backdoorlab.experiments.store import ResultRow
from backdoorlab.models import predict
from backdoorlab.report import table1 as t1
from backdoorlab.studies import domains
from backdoorlab.studies.fine_pruning_table1 import table1_columns

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
CONFIGS = {
    "faces": ("orl_faces", "face_cnn"),
    "speech": ("fsdd", "speech_cnn"),
    "traffic-signs": ("gtsrb_npz_small", "cnn_small"),
}


@pytest.mark.parametrize("domain", sorted(CONFIGS))
def test_table1_configs_parse_with_the_labels_the_report_reads(domain):
    cfg = load_config(ROOT / "configs" / f"table1-{domain}.yaml")
    dataset, model = CONFIGS[domain]
    assert cfg.datasets[0].name == dataset and cfg.datasets[0].data_dir == "../shared/data"
    assert cfg.models == [model] and cfg.seeds == [0, 1, 2]
    attacks = dict(cfg.build_attacks())
    assert sorted(attacks) == ["badnets", "pruning_aware"]
    assert attacks["pruning_aware"].name.startswith("pruning_aware")
    # both attacks carry the same trigger, so the two columns of Table 1 differ only by the attack
    shared = type(attacks["pruning_aware"]).model_fields
    base = {k: v for k, v in attacks["badnets"].model_dump().items() if k in shared}
    assert all(getattr(attacks["pruning_aware"], k) == v for k, v in base.items())
    assert [label for label, _ in cfg.build_defenses()] == ["fine_tuning", "fine_pruning", "strip", "neural_cleanse"]
    for name in ("fine_tuning", "fine_pruning", "strip", "neural_cleanse"):
        assert name in DEFENSES
    # the run's own Table 1 (the study) reads both attacks, domain variants included, under both repairs
    assert [s.name for _, s in cfg.build_studies()] == ["fine_pruning_table1"]
    pairs = lambda built: [(label, m.name) for label, m in built]  # noqa: E731
    attack_columns, defense_columns = table1_columns(pairs(cfg.build_attacks()), pairs(cfg.build_defenses()))
    assert [label for _, label in attack_columns] == ["badnets", "pruning_aware"]
    assert [label for _, label in defense_columns] == ["none", "fine_tuning", "fine_pruning"]
    if domain == "speech":  # pixel shifts would pad waveforms with full-scale samples
        assert cfg.training.augment_shift == 0
        assert all(d.augment_shift == 0 for label, d in cfg.build_defenses() if label.startswith("fine"))


def _write_gtsrb(path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = np.tile(np.arange(0, 30, 3), 12)  # 12 tracks of 10 kept frames
    y_train = np.repeat(np.arange(3), 40)
    y_test = np.repeat(np.arange(3), 20)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8),
        y_train=y_train,
        train_frame=frames,
        x_test=rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8),
        y_test=y_test,
        classes=np.array(["a", "b", "c"]),
    )


def test_gtsrb_npz_loaders_keep_every_nth_frame_and_a_stratified_test_fraction(tmp_path):
    _write_gtsrb(tmp_path / "gtsrb.npz")
    full = load_dataset("gtsrb_npz", tmp_path)
    assert len(full.train) + len(full.val) == 120 and len(full.test) == 60 and full.input_shape == (3, 32, 32)
    small = gtsrb_from_npz(tmp_path / "gtsrb.npz", name="x", frame_step=6, test_fraction=0.5)
    assert len(small.train) + len(small.val) == 12 * 5  # frames 0, 6, 12, 18, 24 of each track
    assert torch.bincount(small.test.y).tolist() == [10, 10, 10]
    np.savez(
        tmp_path / "bad.npz",
        x_train=np.zeros((2, 32, 32, 3), np.uint8),
        y_train=np.zeros(2, np.int64),
        x_test=np.zeros((2, 32, 32, 3), np.uint8),
        y_test=np.zeros(2, np.int64),
    )
    with pytest.raises(DataError, match="lacks train_frame"):
        gtsrb_from_npz(tmp_path / "bad.npz", name="x", frame_step=6)
    with pytest.raises(ConfigError, match="multiple of 3"):
        gtsrb_from_npz(tmp_path / "gtsrb.npz", name="x", frame_step=4)


def test_the_yellow_sticker_sits_inside_the_sign():
    cfg = load_config(ROOT / "configs" / "table1-traffic-signs.yaml")
    attack = dict(cfg.build_attacks())["badnets"]
    dataset = type("D", (), {"input_shape": (3, 32, 32), "num_classes": 43, "name": "gtsrb"})()
    trig = attack.make_trigger(dataset)
    rows, cols = trig.mask[0].nonzero(as_tuple=True)
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (21, 24, 16, 19)
    assert trig.pattern[:, 0, 0].tolist() == [1.0, 1.0, 0.0]
    assert 5 <= int(rows.min()) and int(rows.max()) <= 27  # GTSRB's sign box: about rows/cols 4..28 of 32


@pytest.mark.skipif(
    not (SHARED / "gtsrb.npz").is_file(),
    reason="../shared/data/gtsrb.npz is absent (CI data only; users pass their own copy)",
)
def test_real_gtsrb_small_split():
    ds = load_dataset("gtsrb_npz_small", SHARED)
    assert len(ds.train) + len(ds.val) == 6535 and len(ds.test) == 2105 and ds.num_classes == 43
    assert ds.classes[14] == "Stop" and ds.classes[1].startswith("Speed limit")


def rows_for(domain: str, per_seed: dict[tuple[str, str], dict[str, list[float]]]) -> list[ResultRow]:
    """ResultRows of a made-up run: {(attack, defense): {metric: [value per seed]}}."""
    return [
        ResultRow("run", f"{domain}_data", f"{domain}_model", attack, defense, seed, metric, value)
        for (attack, defense), metrics in per_seed.items()
        for metric, values in metrics.items()
        for seed, value in enumerate(values)
    ]


@pytest.fixture()
def results() -> list[domains.DomainResults]:
    faces = {
        ("none", "none"): {"clean_accuracy": [0.98, 0.99, 0.97]},
        ("badnets", "none"): {"clean_accuracy": [0.97, 0.98, 0.96], "asr": [1.0, 1.0, 0.97]},
        ("badnets", "fine_tuning"): {"clean_accuracy": [0.96, 0.97, 0.95], "asr": [0.9, 0.95, 1.0]},
        ("badnets", "fine_pruning"): {"clean_accuracy": [0.90, 0.91, 0.92], "asr": [0.0, 0.02, 0.04]},
        ("pruning_aware", "none"): {"clean_accuracy": [0.97, 0.97, 0.97], "asr": [1.0, 1.0, 1.0]},
        ("none", "strip"): {"fpr": [0.01, 0.02, 0.0]},
        ("badnets", "strip"): {"tpr": [1.0, 0.98, 0.99], "fpr": [0.01, 0.0, 0.02], "roc_auc": [1.0, 0.99, 0.98]},
        ("pruning_aware", "strip"): {
            "tpr": [0.5, 0.6, 0.7],
            "fpr": [0.01, 0.0, 0.02],
            "entropy_boundary": [-0.1, 0.3, 0.2],
        },
        ("none", "neural_cleanse"): {"anomaly_index_max": [1.2, 1.5, 2.5], "flagged": [0, 0, 1]},
        ("badnets", "neural_cleanse"): {
            "anomaly_index_max": [3.0, 4.0, 5.0],
            "target_anomaly_index": [3.0, 4.0, 5.0],
            "target_flagged": [1, 1, 1],
            "flagged": [1, 1, 1],
            "target_ranked_first": [1, 0, 1],
        },
    }
    speech = {
        ("badnets", "none"): {"clean_accuracy": [0.99], "asr": [0.99]},
        ("badnets", "neural_cleanse"): {"anomaly_index_max": [1.0], "flagged": [0]},
    }
    return [
        domains.DomainResults("Face Recognition", rows_for("faces", faces)),
        domains.DomainResults("Speech Recognition", rows_for("speech", speech)),
    ]


def test_table1_lays_out_our_cells_and_the_papers_rows(results):
    table = t1.table1(results)
    assert table.headers[:4] == ["domain", "ours: dataset / model", "Baseline / None cl", "Baseline / None bd"]
    assert len(table.headers) == 2 + 2 * 3 * 2
    faces = table.rows[0]
    assert faces[:2] == ["Face Recognition", "faces_data / faces_model"]
    col = table.headers.index("Baseline / Fine-Pruning bd")
    assert faces[col].startswith("2.0 ± ")  # mean of 0, 2, 4 %
    assert faces[table.headers.index("Baseline / None cl")].startswith("97.0 ± 2.5")
    assert table.rows[1][table.headers.index("Pruning-aware / Fine-Tuning bd")] == "–"  # not run for speech
    paper = [r for r in table.rows if r[1] == "paper †"]
    assert [r[0] for r in paper] == list(domains.DOMAIN_TITLES)
    assert paper[2][col] == "28.8 †" and paper[0][table.headers.index("Baseline / None cl")] == "97.8 †"
    # the source's Table 1 (slides.txt): face / baseline / fine-tuning and speech / pruning-aware / fine-tuning
    assert paper[0][table.headers.index("Baseline / Fine-Tuning bd")] == "0.0 †"
    assert paper[1][table.headers.index("Pruning-aware / Fine-Tuning bd")] == "52.0 †"
    assert all(len(r) == len(table.headers) for r in table.rows)


def test_strip_and_neural_cleanse_tables(results):
    strip = t1.strip_table(results)
    face = strip.rows[0]
    assert face[strip.headers.index("Baseline FAR")].startswith("1.0 ± ")  # 1 - tpr: 0, 2, 1 %
    assert face[strip.headers.index("Pruning-aware FAR")].startswith("40.0 ± ")
    assert face[strip.headers.index("Baseline ROC-AUC")].startswith("99.0 ± ")
    assert strip.rows[-1][strip.headers.index("Baseline FAR")].startswith("0.0 †")  # GTSRB, the STRIP paper
    nc = t1.neural_cleanse_table(results)
    assert nc.rows[0][nc.headers.index("clean: flagged")] == "1/3"
    assert nc.rows[0][nc.headers.index("Baseline: target flagged")] == "3/3"
    assert nc.rows[0][nc.headers.index("Baseline: target ranked first")] == "2/3"
    assert nc.rows[0][nc.headers.index("Baseline: anomaly index")].startswith("4 ± ")
    assert nc.rows[-1][nc.headers.index("Baseline: anomaly index")] == "3.652 †"


def test_findings_say_where_defenses_fail(results):
    text = "\n".join(domains.findings(results))
    assert "Face Recognition, baseline attack: Fine-Tuning fails: the backdoor stays (ASR 99.0% -> 95.0%)" in text
    assert "Fine-Pruning removes the backdoor (ASR 99.0% -> 2.0%), at a cost of 6.0 points" in text
    assert "pruning-aware attack: STRIP fails (FAR 40.0%" in text
    assert "in 1/3 seeds the normal fit put its boundary at or below 0 bits" in text
    assert "baseline attack: STRIP works (FAR 1.0% at FRR 1.0% on test; entropy ROC-AUC 99.0%)" in text
    assert (
        "Neural Cleanse finds the target (flagged in 3/3 seeds; its reversed trigger was the smallest in 2/3)" in text
    )
    assert "flags the clean model in 1/3 seeds (false alarm)" in text
    assert "Speech Recognition, baseline attack: the backdoor has no single target" in text
    md = t1.markdown(results)
    assert md.count("| paper † |") == 9 and "Defenses that do not apply to audio" in md and "slides.txt Table 1" in md


def test_the_domain_attacks_are_registered():
    for name in ("badnets_glasses", "pruning_aware_glasses", "badnets_audio", "pruning_aware_audio"):
        assert name in ATTACKS


def _pick(split, n: int):
    """``n`` inputs of ``split`` drawn with a fixed seed."""
    return split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n])


DATA_FILES = {"faces": "orl_faces.npz", "speech": "fsdd.npz", "traffic-signs": "gtsrb.npz"}


@pytest.mark.parametrize("domain", sorted(CONFIGS))
def test_a_tiny_slice_of_each_real_set_goes_through_attack_strip_and_pruning(domain):
    """The config's own attack on ~200 real training inputs, 1 epoch: the trigger lands where it should on real
    data, and STRIP and pruning run on the result. (Quality is the benchmark's job.)"""
    if not (SHARED / DATA_FILES[domain]).is_file():
        pytest.skip(f"../shared/data/{DATA_FILES[domain]} is absent (CI data only; users pass their own copy)")
    cfg = load_config(ROOT / "configs" / f"table1-{domain}.yaml")
    full = load_dataset(cfg.datasets[0].name, SHARED)
    ds = dataclasses.replace(full, train=_pick(full.train, 200), val=_pick(full.val, 40), test=_pick(full.test, 60))
    attack = dict(cfg.build_attacks())["badnets"]
    training = cfg.training.model_copy(update={"epochs": 1, "batch_size": 32})
    bd = attack.run(ds, cfg.models[0], training, seed=0, progress=False)
    triggered = bd.trigger(ds.test.x)
    changed = (triggered != ds.test.x).flatten(2).any(dim=1)  # (N, H*W): positions the trigger touched
    assert torch.all(changed & ~(bd.trigger.mask.flatten(1) > 0) == 0)  # nothing outside the mask
    assert float(changed.float().mean()) > 0
    assert predict(bd.model, triggered).shape == (60,)
    strip = DEFENSES.get("strip")(n_overlays=5)
    strip.fit(bd.model, ds.val, seed=0)
    assert torch.isfinite(strip.score(triggered[:10])).all()
    pruned = DEFENSES.get("pruning")(prune_ratio=0.25).repair(bd.model, ds.val, seed=0)
    assert predict(pruned, ds.test.x).shape == (60,)
