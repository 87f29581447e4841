"""One source of trained models: each clean model is trained once, and attacks that start from a clean network are
handed the grid's."""

from __future__ import annotations

import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.experiments.config import parse_config
from backdoorlab.experiments.model_source import ModelSource, Setting
from backdoorlab.experiments.runner import Runner
from backdoorlab.models import TrainingConfig

ONE_EPOCH = TrainingConfig(epochs=1, batch_size=64, lr=3e-3, augment_shift=0)


def counting_trainings(monkeypatch) -> list[str]:
    """Patch the one training recipe so that each call records its description."""
    import backdoorlab.models.recipe as recipe

    calls: list[str] = []
    real = recipe.train_model

    def train(model, x, y, cfg=None, **kwargs):
        calls.append(kwargs.get("description", ""))
        return real(model, x, y, cfg, **kwargs)

    monkeypatch.setattr(recipe, "train_model", train)
    return calls


def test_a_grid_with_model_level_attacks_trains_each_clean_model_once(tmp_path, monkeypatch):
    calls = counting_trainings(monkeypatch)
    cfg = parse_config(
        {
            "name": "one-source",
            "dataset": "digits",
            "training": {"epochs": 1, "lr": 0.003, "batch_size": 64, "augment_shift": 0},
            "attacks": [
                {"name": "badnets", "size": 2},
                {"name": "trojannet", "mlp_steps": 20, "mlp_batch": 64},
                {"name": "pruning_aware", "size": 2, "retrain_epochs": 1},
                {"name": "refool", "offset": [1, 3], "candidates": 20, "selected": 5, "selection_rounds": 1},
            ],
            "defenses": ["pruning"],
            "seeds": [0, 1],
        }
    )
    result = Runner(cfg, tmp_path, log=lambda m: None, progress=False).run()
    assert result.computed == 2 * (1 + 4 + 5)
    clean = [c for c in calls if c.startswith("clean")]
    assert sorted(clean) == ["clean badnet_cnn, seed 0", "clean badnet_cnn, seed 1"]
    # the poisoned trainings: BadNets and Refool, once per seed; TrojanNet and pruning-aware train no new network
    assert sorted(c for c in calls if not c.startswith("clean")) == ["training badnets"] * 2 + ["training refool"] * 2

    # a second run of the same config trains nothing: every model comes from the cache
    calls.clear()
    Runner(cfg, tmp_path, run_name="again", log=lambda m: None, progress=False).run()
    assert calls == []


def test_model_source_hands_the_clean_model_to_an_attack_that_starts_from_one(digits):
    source = ModelSource(None, device="cpu", progress=False)
    setting = Setting(digits, "badnet_cnn", ONE_EPOCH)
    clean = source.clean(setting, 0)
    assert source.clean(setting, 0) is clean and len(source.trained) == 1
    before = {k: v.clone() for k, v in clean.state_dict().items()}
    bd = source.backdoor(setting, ATTACKS.build("trojannet", {"mlp_steps": 20, "mlp_batch": 64}), 0)
    assert len(source.trained) == 2  # the clean model and the backdoor; no second clean model
    host = bd.model.net.host
    assert all(torch.equal(host.state_dict()[k], v) for k, v in before.items())  # the host is the grid's clean model
    assert all(torch.equal(clean.state_dict()[k], v) for k, v in before.items())  # and it was not changed
    assert source.backdoor(setting, ATTACKS.build("trojannet", {"mlp_steps": 20, "mlp_batch": 64}), 0) is bd


def test_the_undefended_figures_are_measured_once_per_model(digits, monkeypatch):
    from backdoorlab.defenses import DEFENSES
    from backdoorlab.experiments import evaluation

    bd = ATTACKS.build("badnets", {"size": 2}).run(digits, "badnet_cnn", ONE_EPOCH, seed=0, progress=False)
    calls = []
    real = evaluation.measure_model
    monkeypatch.setattr(evaluation, "measure_model", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    ctx = evaluation.EvaluationContext(digits, device="cpu", undefended={})
    outcomes = [evaluation.evaluate_defense(DEFENSES.build("pruning"), bd.model, bd, ctx) for _ in range(2)]
    assert sum(model is bd.model for model in calls) == 1  # the input model: once for both cells
    assert outcomes[0].metrics["der"] == outcomes[1].metrics["der"]
    assert ctx.undefended == real(bd.model, bd, digits.test)
