"""Self-describing parameters: every method's schema describes its fields; one `Registry.build`; `describe`."""

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from backdoorlab.adversarial import ADVERSARIAL_ATTACKS
from backdoorlab.attacks import ATTACKS, BadNets
from backdoorlab.cli import main
from backdoorlab.defenses import DEFENSES
from backdoorlab.errors import ConfigError
from backdoorlab.models import TrainingConfig
from backdoorlab.registry import Registry, describe
from backdoorlab.studies import STUDIES
from backdoorlab.triggers import TRIGGERS

REGISTRIES = (ATTACKS, DEFENSES, TRIGGERS, ADVERSARIAL_ATTACKS, STUDIES)
METHODS = [pytest.param(cls, id=f"{r.kind}:{name}") for r in REGISTRIES for name, cls in r.items()]


@pytest.mark.parametrize("cls", [*METHODS, pytest.param(TrainingConfig, id="training")])
def test_every_parameter_is_described_in_its_schema(cls):
    params = describe(cls)
    missing = [p.name for p in params if len(p.description) < 3]
    assert not missing, f"{cls.__name__}: no description for {missing}"


def test_every_family_has_methods():
    assert all(len(r.names()) >= 2 for r in REGISTRIES)


def test_describe_reads_type_default_range_and_choices():
    params = {p.name: p for p in describe(BadNets)}
    rate = params["poison_rate"]
    assert (rate.type, rate.default, rate.range, rate.required) == ("float", 0.1, "(0, 1]", False)
    assert "fraction of the training set" in rate.description
    assert params["trigger"].choices == ("square", "pixel", "pattern") and params["trigger"].type == "str"
    assert params["size"].range == ">= 1" and params["size"].choices is None
    inspection = {p.name: p for p in describe(DEFENSES.get("nc_unlearning"))}["inspection"]
    assert inspection.default == {} and inspection.type == "NeuralCleanse"  # a nested method: the fields it changes


def test_describe_on_a_schema_with_every_kind_of_field():
    class Toy(BaseModel):
        """A toy.

        More prose."""

        needed: int = Field(description="no default")
        ratio: float = Field(0.5, ge=0, lt=1, description="half-open")
        below: float = Field(2.0, le=3, description="upper bound only")
        mode: Literal["a", "b"] | None = Field(None, description="a choice or nothing")
        sizes: list[int] = Field(default_factory=lambda: [1, 2], description="a list")
        pair: tuple[float, float] | None = Field(None, description="two numbers")

    p = {i.name: i for i in describe(Toy)}
    assert list(p) == ["needed", "ratio", "below", "mode", "sizes", "pair"]
    assert p["needed"].required and p["needed"].default is None and p["needed"].range is None
    assert p["ratio"].range == "[0, 1)" and p["below"].range == "<= 3"
    assert p["mode"].choices == ("a", "b", None) and p["mode"].type == "str | None"
    assert p["sizes"].default == [1, 2] and p["sizes"].type == "list[int]"
    assert p["pair"].type == "tuple[float, float] | None" and p["pair"].choices is None


def test_build_validates_and_names_the_field():
    attack = ATTACKS.build("badnets", {"poison_rate": 0.2, "trigger": "pixel"})
    assert isinstance(attack, BadNets) and attack.poison_rate == 0.2 and attack.trigger == "pixel"
    with pytest.raises(ConfigError, match=r"^attack badnets\.poison_rat: unknown field \(got 0\.2\)$"):
        ATTACKS.build("badnets", {"poison_rat": 0.2})
    with pytest.raises(ConfigError, match=r"^attacks\[1\] \(badnets\)\.poison_rate: Input should be less than or"):
        ATTACKS.build("badnets", {"poison_rate": 2}, where="attacks[1] (badnets)")
    with pytest.raises(ConfigError, match=r"^unknown defense 'strp'; valid names: .*strip"):
        DEFENSES.build("strp")
    assert DEFENSES.build("strip", {"n_overlays": 7}).n_overlays == 7


def test_build_refuses_what_is_not_a_schema():
    functions = Registry("model")
    functions.register("f")(lambda: None)
    with pytest.raises(TypeError, match="not built from parameters"):
        functions.build("f")


def test_cli_describe_badnets(capsys):
    assert main(["describe", "badnets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "badnets (attack): BadNets data poisoning."
    assert "  poison_rate: float, default 0.1; range (0, 1]" in lines
    assert "  trigger: str, default square; one of square, pixel, pattern" in lines
    described = lines[lines.index("  poison_rate: float, default 0.1; range (0, 1]") + 1]
    assert described.startswith("      ") and "fraction of the training set" in described
    assert main(["list", "badnets"]) == 0 and capsys.readouterr().out == out


def test_cli_describe_other_families(capsys):
    assert main(["describe", "square"]) == 0 and capsys.readouterr().out.startswith("square (trigger): ")
    assert main(["describe", "fine-pruning"]) == 0 and capsys.readouterr().out.startswith("fine_pruning (defense): ")
    assert main(["describe", "training"]) == 0
    assert "  epochs: int, default 40; range [1, 10000]" in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    "name, message",
    [
        ("badnet", "error: unknown method 'badnet'; close matches: badnets, badnets_audio, badnets_glasses"),
        ("nerual_cleanse", "error: unknown method 'nerual_cleanse'; close matches: neural_cleanse"),
        ("qqqq", "error: unknown method 'qqqq'; see `backdoorlab list` for every name"),
    ],
)
def test_cli_unknown_name_one_line_exit_2(capsys, name, message):
    assert main(["describe", name]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message and captured.out == ""
    assert main(["list", name]) == 2


def test_cli_list_names_every_family(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "triggers: pattern, pixel, square, tdc" in lines
    assert any(line.startswith("adversarial attacks: bim, ") for line in lines)
    assert any(line.startswith("defenses: ") and "neural_cleanse" in line for line in lines)
