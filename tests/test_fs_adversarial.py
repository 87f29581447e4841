"""fs_adversarial: the study's protocol (thresholds from the legitimate first half only, failed attacks left out),
the study on a tiny digits model, its cells in the grid (clean models only), the runner with no backdoor attack,
and the report table."""

import math

import pytest
import torch
import yaml

from backdoorlab.data import Split
from backdoorlab.defenses import DEFENSES
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.config import parse_config
from backdoorlab.experiments.grid import expand_cells
from backdoorlab.metrics import threshold_for_rate
from backdoorlab.report.section_fs_adversarial import attack_summary_table, detection_rate_table
from backdoorlab.studies import STUDIES, StudyContext
from backdoorlab.studies.fs_adversarial import (
    DetectionSet,
    configuration_results,
    select_correct,
    split_halves,
)

from .adversarial_support import tiny_digits_model

pytest.importorskip("art")


def _set(attack, success, first_half):
    return DetectionSet(torch.tensor(attack), torch.tensor(success), torch.tensor(first_half))


# 6 legitimate inputs (3 per half), then attack 0: 4 examples, attack 1: 2 examples.
ATTACK = [-1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 1, 1]
SUCCESS = [False] * 6 + [True, True, False, True, True, False]
FIRST = [True, True, True, False, False, False, True, False, False, False, True, False]
SCORES = torch.tensor([0.1, 0.2, 0.3, 0.05, 0.25, 0.5, 0.9, 0.8, 0.9, 0.1, 0.7, 0.9])


def test_threshold_comes_from_the_legitimate_first_half_only():
    dset = _set(ATTACK, SUCCESS, FIRST)
    base = configuration_results(SCORES, dset, 2, fpr=0.34)
    assert base["threshold"] == threshold_for_rate(torch.tensor([0.1, 0.2, 0.3]), 0.34) == pytest.approx(0.2)
    # anything outside the legitimate first half moves no threshold ...
    others = SCORES.clone()
    others[[3, 4, 5, 6, 10]] = torch.tensor([9.0, 9.0, 9.0, 0.0, 0.0])
    assert configuration_results(others, dset, 2, fpr=0.34)["threshold"] == base["threshold"]
    # ... while the legitimate first half does
    legit = SCORES.clone()
    legit[2] = 0.15
    assert configuration_results(legit, dset, 2, fpr=0.34)["threshold"] == pytest.approx(0.15)


def test_rates_on_the_second_half_with_failed_attacks_left_out():
    r = configuration_results(SCORES, _set(ATTACK, SUCCESS, FIRST), 2, fpr=0.34)
    # second half: legitimate 0.05 0.25 0.5 -> 2 of 3 above 0.2; attack 0 successes 0.8 and 0.1 (0.9 failed);
    # attack 1: its only second-half example failed
    assert r["fpr"] == pytest.approx(2 / 3)
    assert r["detection"][0] == 0.5 and math.isnan(r["detection"][1])
    assert r["overall"] == 0.5
    assert r["roc_auc"] == pytest.approx(4 / 6)  # 0.8 beats all 3 legitimate scores, 0.1 beats one


def test_failed_examples_change_nothing():
    dset = _set(ATTACK, SUCCESS, FIRST)
    base = configuration_results(SCORES, dset, 2, fpr=0.34)
    changed = SCORES.clone()
    changed[[8, 11]] = torch.tensor([0.0, 0.0])  # the failed examples of the second half
    again = configuration_results(changed, dset, 2, fpr=0.34)
    assert again.keys() == base.keys()
    for key, value in base.items():
        assert str(again[key]) == str(value)  # nan-aware: NaN prints alike


def test_split_halves_is_half_and_seeded():
    a = split_halves(11, torch.Generator().manual_seed(3))
    assert a.dtype == torch.bool and int(a.sum()) == 5
    assert torch.equal(a, split_halves(11, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, split_halves(11, torch.Generator().manual_seed(4)))


def test_select_correct_takes_the_first_correct_in_order():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model[1].bias.zero_()
    x = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7]).view(5, 1, 1, 1)  # predicts 1 where x > 0
    split = Split(x - 0.5, torch.tensor([1, 1, 1, 0, 0]))  # correct: 0, 2, 3
    assert select_correct(model, split, 2, torch.tensor([4, 3, 2, 1, 0])).tolist() == [3, 2]
    assert select_correct(model, split, 9, torch.arange(5)).tolist() == [0, 2, 3]


@pytest.fixture(scope="module")
def outcome(digits):
    model = tiny_digits_model(digits)
    fs = STUDIES.get("fs_adversarial")(
        n=20, attacks=["fgsm", "bim", "jsma_next"], attack_params={"bim": {"max_iter": 5}}
    )
    return fs.run(model, None, StudyContext(digits, seed=0)), model


def test_run_on_a_clean_model(outcome, digits):
    out, _ = outcome
    m = out.metrics
    assert m["attacked"] == 20 and m["legitimate"] == 60  # as many legitimate inputs as adversarial examples
    configs = ["bit_depth_1", "bit_depth_2", "median_2x2", "median_3x3", "bit_depth_1+median_2x2"]
    assert out.artifacts["table"]["configurations"] == configs
    for config in configs:
        for key in ("fgsm", "bim", "jsma_next"):
            rate = m[f"detection_rate[{config}][{key}]"]
            assert math.isnan(rate) or 0 <= rate <= 1
        assert 0 <= m[f"fpr[{config}]"] <= 1 and 0 <= m[f"overall_detection_rate[{config}]"] <= 1
    assert m["tpr"] == m["overall_detection_rate[bit_depth_1+median_2x2]"]
    assert m["success_rate[bim]"] >= 0.8
    total = sum(m[f"successful_test[{k}]"] for k in ("fgsm", "bim", "jsma_next"))
    assert 0 < total <= 30
    # the joint threshold is the legitimate first half's 95% point
    art = out.artifacts
    joint = art["squeezer_scores"][:, [art["squeezers"].index("bit_depth_1"), art["squeezers"].index("median_2x2")]]
    assert torch.bincount(art["attack"] + 1).tolist() == [60, 20, 20, 20]  # legitimate, then each attack
    assert not art["success"][art["attack"] < 0].any() and int(art["first_half"].sum()) == 120 // 2
    first_legit = (art["attack"] < 0) & art["first_half"]
    assert m["threshold"] == threshold_for_rate(joint.max(1).values[first_legit], 0.05)


def test_a_study_not_a_defense_with_cells_on_the_clean_models_only():
    assert "fs_adversarial" in STUDIES and "fs_adversarial" not in DEFENSES
    cfg = parse_config(
        {
            "attacks": ["badnets"],
            "defenses": ["strip"],
            "studies": [{"name": "fs_adversarial", "n": 10}],
            "seeds": [0, 1],
        }
    )
    study_cells = [c for c in expand_cells(cfg) if c.kind == "study"]
    assert [(c.seed, c.attack, c.defense) for c in study_cells] == [
        (0, "none", "fs_adversarial"),
        (1, "none", "fs_adversarial"),
    ]
    assert expand_cells(cfg)[-2:] == study_cells  # the last phase


def test_an_old_config_naming_it_a_defense_says_where_it_moved():
    with pytest.raises(
        ConfigError, match=r"'fs_adversarial' is a study, not a defense: move it from defenses to studies"
    ):
        parse_config({"attacks": [], "defenses": [{"name": "fs_adversarial", "n": 10}]})
    with pytest.raises(ConfigError, match="unknown study 'fs_adversary' in studies; valid names: .*fs_adversarial"):
        parse_config({"attacks": [], "studies": ["fs_adversary"]})


def test_parameters_are_checked_up_front():
    with pytest.raises(ConfigError, match="no column 'deepfool' in the mnist study"):
        STUDIES.build("fs_adversarial", {"preset": "mnist", "attacks": ["deepfool"]})
    with pytest.raises(ConfigError, match="unknown squeezer"):
        STUDIES.build("fs_adversarial", {"squeezers": ["blur_3"]})
    with pytest.raises(ConfigError, match="unknown field"):
        STUDIES.build("fs_adversarial", {"attack_params": {"cw2": {"iterations": 3}}})
    assert STUDIES.build("fs_adversarial", {"attacks": ["deepfool"]}).preset == "auto"  # valid for the colour preset


def test_report_table_in_the_source_layout(outcome):
    out, _ = outcome
    table = detection_rate_table(out.metrics)
    assert table.headers == [
        "squeezer",
        "parameters",
        "threshold",
        "FGSM",
        "BIM",
        "JSMA Next",
        "overall detection rate",
        "FPR",
        "ROC-AUC",
    ]
    names = [r[0] for r in table.rows]
    assert names[:2] == ["Bit Depth", "Bit Depth"] and names[-2] == "Best Attack-Specific Single Squeezer"
    assert names[-1] == "Best Joint Detection (1-bit, 2x2)" and table.rows[0][1] == "1-bit"
    best, singles = table.rows[-2], table.rows[:-2]
    for col in range(3, 6):
        shown = [float(r[col]) for r in singles if r[col] != "–"]
        assert best[col] == (f"{max(shown):.3f}" if shown else "–")
    summary = attack_summary_table(out.metrics)
    assert [r[0] for r in summary.rows] == ["FGSM", "BIM", "JSMA Next"] and summary.rows[2][1] == "jsma"


def test_runner_with_no_backdoor_attack(tmp_path):
    from backdoorlab.experiments.config import load_config
    from backdoorlab.experiments.runner import run_experiment
    from backdoorlab.report import write_run_report

    cfg = {
        "name": "fs-tiny",
        "dataset": "digits",
        "model": "badnet_cnn",
        "training": {"epochs": 2, "batch_size": 128, "augment_shift": 0},
        "attacks": [],
        "studies": [{"name": "fs_adversarial", "n": 10, "attacks": ["fgsm", "bim"]}],
        "seeds": [0],
    }
    path = tmp_path / "fs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = run_experiment(load_config(path), tmp_path / "runs", progress=False, log=lambda _m: None)
    metrics = {r.metric for r in result.rows if r.defense == "fs_adversarial"}
    assert {"tpr", "fpr", "roc_auc", "detection_rate[bit_depth_1+median_2x2][bim]"} <= metrics
    assert {(r.attack, r.seed) for r in result.rows if r.defense == "fs_adversarial"} == {("none", 0)}
    # the store holds what the report needs, and the code that computed the run
    from backdoorlab.experiments.runner import run_code
    from backdoorlab.experiments.store import ResultsStore

    with ResultsStore(tmp_path / "runs" / "results.sqlite") as store:
        (setting,) = store.settings(result.run)
        assert store.run_code(result.run) == run_code()
    assert setting.summary.startswith("digits: 10 classes, 1x8x8") and setting.classes[3] == "3"
    assert setting.input_shape == (1, 8, 8) and setting.model == "badnet_cnn"
    md, _ = write_run_report(result.run, tmp_path / "runs")
    report = md.read_text()
    assert "## Feature Squeezing against adversarial examples" in report
    assert "Best Joint Detection (1-bit, 2x2)" in report
    assert f"Code: backdoorlab {run_code().version}, model sources sha256 {run_code().source_hash[:12]}" in report
