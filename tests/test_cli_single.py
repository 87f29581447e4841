"""`backdoorlab attack` and `backdoorlab defend`: one method outside a grid."""

import json

import pytest
import torch

from backdoorlab.attacks.storage import load_backdoor
from backdoorlab.cli import main
from backdoorlab.defenses.base import DEFENSES, Repair
from backdoorlab.experiments.single import parse_params


class ZeroLastBias(Repair):
    """A stand-in repair for these tests: sets the last layer's bias to ``value``."""

    name = "test_zero_last_bias"
    value: float = 0.0

    def repair(self, model, clean, *, seed=0, device="auto", progress=None):
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.bias.fill_(self.value)
        return model


@pytest.fixture(autouse=True)
def zero_last_bias(register_for_test):
    register_for_test(DEFENSES, "test_zero_last_bias", ZeroLastBias)


def test_parse_params():
    assert parse_params(["a=0.5", "pos=[1, 2]", "mode=all_to_all"]) == {"a": 0.5, "pos": [1, 2], "mode": "all_to_all"}


def test_attack_then_defend(tmp_path, capsys):
    ckpt = tmp_path / "bd.pt"
    args = ["attack", "badnets", "--data", "digits", "--epochs", "2", "-p", "size=2", "-p", "target=3", "-o", str(ckpt)]
    assert main(args) == 0
    assert "asr" in capsys.readouterr().out
    bd = load_backdoor(ckpt)
    assert bd.target_rule.target == 3 and bd.trigger.mask.sum() == 4 and bd.attack == "badnets"

    out = tmp_path / "defended"
    assert (
        main(
            [
                "defend",
                "test_zero_last_bias",
                "--model",
                str(ckpt),
                "--data",
                "digits",
                "-p",
                "value=0.25",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "defense.json").read_text())
    assert report["attack"] == "badnets" and report["params"] == {"value": 0.25}
    assert set(report["metrics"]) == {"clean_accuracy", "asr", "robust_accuracy", "der", "rir"}
    repaired = load_backdoor(out / "repaired.pt")
    last = [m for m in repaired.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert torch.all(last.bias == 0.25) and repaired.target_rule.target == 3
    original = [m for m in load_backdoor(ckpt).model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert not torch.all(original.bias == 0.25), "the input model is never changed"


def test_defend_rejects_a_model_that_does_not_fit_the_data(tmp_path, capsys):
    ckpt = tmp_path / "bd.pt"
    assert main(["attack", "badnets", "--data", "digits", "--epochs", "1", "-p", "size=2", "-o", str(ckpt)]) == 0
    capsys.readouterr()
    assert (
        main(["defend", "test_zero_last_bias", "--model", str(ckpt), "--data", "mnist5k", "-o", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert "inputs but mnist5k images are (1, 28, 28)" in err
    assert not (tmp_path / "o").exists()


def test_attack_bad_input(tmp_path, capsys):
    assert main(["attack", "badnets", "--data", "digits", "-p", "poison_rate=2", "-o", str(tmp_path / "m.pt")]) == 2
    assert "poison_rate: Input should be less than or equal to 1" in capsys.readouterr().err
    assert main(["attack", "badnets", "-p", "novalue"]) == 2
    assert "--param expects KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
