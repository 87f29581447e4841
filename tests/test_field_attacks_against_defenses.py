"""Issue 18: every field attack runs through the evaluator against a defense of every family (input detector,
repair with the retuning check, inspector, data detector, training-time defense), on 8x8 digits with one epoch.

What differs between the attacks is what a defense reads from the backdoor: a trigger function (a generator for
Input-aware, a warp for WaNet, a partial pattern at training time for the adaptive attacks), a target rule with
clean-label eligibility (SIG, LC), and a poisoned training set (absent for the per-batch attacks: a data defense
must then refuse with one clear error, not fail inside).
"""

from __future__ import annotations

import math

import pytest

from backdoorlab.attacks import ATTACKS
from backdoorlab.data import load_dataset
from backdoorlab.defenses import DEFENSES
from backdoorlab.errors import ConfigError
from backdoorlab.experiments.evaluation import EvaluationContext, evaluate_defense
from backdoorlab.models import TrainingConfig

from .test_contracts import FAST_ATTACKS, FAST_DEFENSES

FIELD_ATTACKS = (
    "wanet",
    "bpp",
    "sig",
    "label_consistent",
    "adaptive_blend",
    "adaptive_patch",
    "trojannn",
    "input_aware",
)
PER_BATCH = {"wanet", "bpp", "input_aware"}
ONE_PER_FAMILY = ("strip", "fine_tuning", "neural_cleanse", "activation_clustering", "abl")
ONE_EPOCH = TrainingConfig(epochs=1, batch_size=64, lr=3e-3, augment_shift=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def backdoors(digits):
    out = {}
    for name in FIELD_ATTACKS:
        params = FAST_ATTACKS.get(name, ("digits", "badnet_cnn", {}))[2]
        out[name] = ATTACKS.build(name, params).run(
            digits, "badnet_cnn", ONE_EPOCH, seed=0, device="cpu", progress=False
        )
    return out


@pytest.mark.parametrize("attack", FIELD_ATTACKS)
def test_every_field_attack_meets_a_defense_of_every_family(attack, digits, backdoors):
    bd = backdoors[attack]
    ctx = EvaluationContext(digits, seed=0, retune=True, architecture="badnet_cnn", training=ONE_EPOCH)
    for name in ONE_PER_FAMILY:
        defense = DEFENSES.build(name, FAST_DEFENSES.get(name, {}))
        if defense.kind in ("data_detector", "training_defense") and attack in PER_BATCH:
            with pytest.raises(ConfigError, match=f"attack {attack} leaves no poisoned training set"):
                evaluate_defense(defense, bd.model, bd, ctx)
            continue
        metrics = evaluate_defense(defense, bd.model, bd, ctx).metrics
        numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
        assert numbers and not any(math.isnan(v) for k, v in numbers.items() if k in ("asr", "clean_accuracy"))
        if defense.kind == "repair":
            assert 0 <= metrics["asr"] <= 1 and 0 <= metrics["retuned_asr"] <= 1
        if defense.kind == "input_detector":
            assert 0 <= metrics["roc_auc"] <= 1
        if defense.kind == "data_detector":
            assert metrics["poison_count"] > 0 and 0 <= metrics["tpr"] <= 1
