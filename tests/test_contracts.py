"""Contract tests over every registered attack and defense, in the manner of scikit-learn's estimator checks.

Each registered method is checked on tiny data (scikit-learn's 8x8 digits, or a synthetic set that fits its
trigger) with one epoch of training: an unknown parameter is a ConfigError naming it, the same seed gives the same
result, a repair leaves its input model untouched, ``score`` before ``fit`` raises, an inspector returns one
statistic per class, and nothing is written outside the output folder (here: nothing at all in the working
directory). A method registered without an entry in the tables below is checked with its defaults.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.data import Dataset, build_dataset, load_dataset
from backdoorlab.data.audio import waveform_dataset
from backdoorlab.defenses import DEFENSES, InputDetector, Repair
from backdoorlab.defenses.data_detectors import DataDetector, TrainingDefense
from backdoorlab.defenses.inspection.base import Inspector
from backdoorlab.errors import ConfigError
from backdoorlab.models import TrainingConfig, train_new_model

from .test_audio import synthetic_clips
from .test_faces import synthetic_faces

ONE_EPOCH = TrainingConfig(epochs=1, batch_size=64, lr=3e-3, augment_shift=0)

# per attack: (data, architecture, parameters that keep it fast)
FAST_ATTACKS: dict[str, tuple[str, str, dict]] = {
    "badnets_glasses": ("faces", "face_cnn", {}),
    "pruning_aware_glasses": ("faces", "face_cnn", {"retrain_epochs": 1}),
    "badnets_audio": ("audio", "speech_cnn", {}),
    "pruning_aware_audio": ("audio", "speech_cnn", {"retrain_epochs": 1}),
    "pruning_aware": ("digits", "badnet_cnn", {"retrain_epochs": 1}),
    "trojannet": ("digits", "badnet_cnn", {"mlp_steps": 20, "mlp_batch": 64}),
    "label_consistent": ("digits", "badnet_cnn", {"adv_epochs": 1, "adv_steps": 2, "pgd_steps": 5}),
    "trojannn": ("digits", "badnet_cnn", {"steps": 10, "batch": 16}),
    "input_aware": ("digits", "badnet_cnn", {"mask_epochs": 1}),
    "adaptive_blend": ("digits", "badnet_cnn", {"poison_rate": 0.01, "cover_rate": 0.01}),
    "adaptive_patch": ("digits", "badnet_cnn", {"poison_rate": 0.01, "size_fraction": 0.25}),
    "refool": (
        "digits",
        "badnet_cnn",
        {"offset": [1, 3], "sigma": [1, 2], "candidates": 20, "selected": 5, "selection_rounds": 1},
    ),
}
NC_FAST = {"patience": 1, "early_stop_patience": 2, "max_epochs": 2, "batches_per_epoch": 1}
DI_FAST = {"inversion_per_class": 2, "inversion_steps": 5, "steps": 5, "eval_samples": 5, "examples": 1}
FAST_DEFENSES: dict[str, dict] = {
    "strip": {"n_overlays": 5},
    "sequential_strip": {"n_overlays": 10, "round_size": 5},
    "teco": {"max_severity": 2},
    "badexpert": {"epochs": 1},
    "fine_tuning": {"epochs": 1},
    "fine_pruning": {"epochs": 1},
    "neural_cleanse": NC_FAST,
    "tabor": NC_FAST,
    "k_arm": {"patience": 1, "early_stop_patience": 2, "batches_per_epoch": 1, "max_pulls": 12, "examples": 1},
    "nc_unlearning": {"inspection": NC_FAST, "when": "always"},
    "deepinspect": DI_FAST,
    "deepinspect_patching": {"inspection": DI_FAST, "when": "always"},
    "anp": {"iterations": 3, "batch_size": 32},
    "i_bau": {"rounds": 1, "k": 2, "batch_size": 64},
    "nad": {"epochs": 1, "student_epochs": 1},
    "sau": {"rounds": 1, "batch_size": 64, "pgd_steps": 2},
    "fst": {"epochs": 1},
    "spectre": {"dims": 8},
    "dpa": {"partitions": 3},
    "abl": {"isolation_epochs": 1, "finetune_epochs": 1, "unlearning_epochs": 1},
}


def _faces() -> Dataset:
    x, y = synthetic_faces(people=4, per_person=6)
    imgs, labels = torch.from_numpy(x).float()[:, None] / 255, torch.from_numpy(y)
    test = np.arange(len(y)) % 4 == 0
    return build_dataset("faces", imgs[~test], labels[~test], imgs[test], labels[test], val_size=4)


def _audio() -> Dataset:
    clips, labels, is_test = synthetic_clips(per_class=20, length=8000)
    return waveform_dataset("audio", clips, labels, is_test, ["low", "high"], length=8000, val_size=0.2)


_DATA = {"digits": lambda: load_dataset("digits"), "faces": _faces, "audio": _audio}


@pytest.fixture(scope="module")
def datasets() -> dict[str, Dataset]:
    return {}


def dataset_of(datasets: dict[str, Dataset], name: str) -> Dataset:
    if name not in datasets:
        datasets[name] = _DATA[name]()
    return datasets[name]


def attack_setting(name: str) -> tuple[str, str, dict]:
    return FAST_ATTACKS.get(name, ("digits", "badnet_cnn", {}))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("registry", [ATTACKS, DEFENSES], ids=["attacks", "defenses"])
def test_an_unknown_parameter_is_a_config_error_naming_it(registry):
    for name in registry.names():
        with pytest.raises(ConfigError, match="no_such_parameter"):
            registry.build(name, {"no_such_parameter": 1})


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_contract(name, datasets, tmp_path, monkeypatch):
    data, architecture, params = attack_setting(name)
    ds = dataset_of(datasets, data)
    attack = ATTACKS.build(name, params)
    monkeypatch.chdir(tmp_path)
    clean = train_new_model(architecture, ds, ONE_EPOCH, seed=0, progress=False) if attack.uses_clean_model else None
    kept = copy.deepcopy(clean)
    runs = [
        attack.run(ds, architecture, ONE_EPOCH, seed=0, device="cpu", progress=False, clean_model=clean)
        for _ in range(2)
    ]
    assert same_weights(runs[0].model, runs[1].model), "the same seed must give the same backdoored model"
    assert runs[0].attack == name and runs[0].model(ds.test.x[:2]).shape == (2, ds.num_classes)
    if runs[0].trigger is not None:
        x = ds.test.x[:3]
        assert torch.equal(runs[0].trigger(x), runs[1].trigger(x))
        assert runs[0].trigger(x).shape == x.shape and 0 <= float(runs[0].trigger(x).min())
    if clean is not None:
        assert same_weights(clean, kept), "an attack must not change the clean model it is given"
    assert list(tmp_path.iterdir()) == [], "nothing may be written outside the output folder"


@pytest.fixture(scope="module")
def trained(datasets) -> torch.nn.Module:
    return train_new_model("badnet_cnn", dataset_of(datasets, "digits"), ONE_EPOCH, seed=0, progress=False)


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_contract(name, datasets, trained, tmp_path, monkeypatch):
    ds = dataset_of(datasets, "digits")
    monkeypatch.chdir(tmp_path)
    make = lambda: DEFENSES.build(name, FAST_DEFENSES.get(name, {}))  # noqa: E731
    defense = make()
    kept = copy.deepcopy(trained)
    if isinstance(defense, InputDetector):
        with pytest.raises(Exception, match="fit"):
            defense.score(ds.test.x[:2])
        scores = [make().fit(trained, ds.val, seed=0, device="cpu").score(ds.test.x[:20]) for _ in range(2)]
        assert scores[0].shape == (20,) and torch.equal(scores[0], scores[1])
    elif isinstance(defense, Repair):
        repaired = [make().repair(trained, ds.val, seed=0, device="cpu", progress=False) for _ in range(2)]
        assert same_weights(repaired[0], repaired[1]), "the same seed must give the same repaired model"
        assert repaired[0] is not trained
    elif isinstance(defense, DataDetector):
        with pytest.raises(Exception, match="fit"):
            _ = defense.scores_
        poisoned = ds.train.head(300)
        runs = [make().fit(trained, poisoned, ds.val, seed=0, device="cpu").detection_ for _ in range(2)]
        assert runs[0].scores.shape == (300,) and runs[0].flagged.dtype == torch.bool
        assert torch.equal(runs[0].scores, runs[1].scores) and torch.equal(runs[0].flagged, runs[1].flagged)
    elif isinstance(defense, TrainingDefense):
        models = [
            make().train(ds.train.head(300), ds, "badnet_cnn", ONE_EPOCH, seed=0, device="cpu", progress=False)
            for _ in range(2)
        ]
        x = ds.test.x[:8]
        assert torch.equal(models[0](x), models[1](x)), "the same seed must give the same model"
        assert models[0](x).shape == (8, ds.num_classes)
    else:
        assert isinstance(defense, Inspector)
        verdicts = [make().inspect(trained, ds.val, seed=0, device="cpu", progress=False) for _ in range(2)]
        assert verdicts[0].statistic.shape == (ds.num_classes,), "one statistic per class"
        assert torch.equal(verdicts[0].statistic, verdicts[1].statistic)
    assert same_weights(trained, kept), "a defense must not change the model it is given"
    assert list(tmp_path.iterdir()) == [], "nothing may be written outside the output folder"


def test_test_only_methods_are_removed_after_their_test(register_for_test):
    class Dummy(Repair):
        name = "test_dummy_repair"

    register_for_test(DEFENSES, "test_dummy_repair", Dummy)
    assert "test_dummy_repair" in DEFENSES
    assert not [n for n in ATTACKS.names() + DEFENSES.names() if n.startswith("test_") and n != "test_dummy_repair"]
