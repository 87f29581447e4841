"""The experiment config: YAML validated with pydantic; unknown keys and wrong types name their field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..attacks import ATTACKS, Attack
from ..data import dataset_names
from ..defenses import DEFENSES, Defense
from ..errors import ConfigError
from ..models import MODELS, TrainingConfig
from ..utils.validation import build_validated, describe_validation_error


class DatasetConfig(BaseModel):
    """Which dataset: a registered name or ``npz:PATH``, and the folder its files live in."""

    model_config = ConfigDict(extra="forbid")
    name: str = "mnist5k"
    data_dir: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if not name.startswith("npz:") and name not in dataset_names():
            raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")
        return name


class MethodSpec(BaseModel):
    """One attack or defense of the grid: ``name``, an optional display ``label``, and the method's parameters.

    In YAML the parameters sit beside the name: ``{name: badnets, poison_rate: 0.05}``.
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split_params(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and "params" not in data:
            rest = {k: v for k, v in data.items() if k not in ("name", "label")}
            return {k: v for k, v in data.items() if k in ("name", "label")} | {"params": rest}
        return data

    @property
    def display(self) -> str:
        return self.label or self.name


class ExperimentConfig(BaseModel):
    """Everything `backdoorlab run` needs. Defaults: MNIST-5k, ``badnet_cnn``, one seed, CPU or GPU."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: str = "badnet_cnn"
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    attacks: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name="badnets")])
    defenses: list[MethodSpec] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    device: str = "auto"
    examples: int = Field(6, ge=1, le=32, description="example images per attack in the report figure")

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS.names())}")
        return name

    @model_validator(mode="after")
    def _check_methods(self) -> ExperimentConfig:
        for kind, specs in (("attacks", self.attacks), ("defenses", self.defenses)):
            labels = [s.display for s in specs]
            if len(set(labels)) != len(labels):
                raise ValueError(f"two {kind} share a label; give each a distinct 'label'")
        for spec, registry, kind in [(a, ATTACKS, "attacks") for a in self.attacks] + [
            (d, DEFENSES, "defenses") for d in self.defenses
        ]:
            if spec.name not in registry:
                valid = ", ".join(registry.names()) or "(none registered yet)"
                raise ValueError(f"unknown {kind[:-1]} {spec.name!r} in {kind}; valid names: {valid}")
        return self

    def build_defenses(self) -> list[tuple[str, Defense]]:
        """(label, defense object) for each defense, parameters validated."""
        return [
            (spec.display, build_validated(DEFENSES.get(spec.name), spec.params, where=f"defenses[{i}] ({spec.name})"))
            for i, spec in enumerate(self.defenses)
        ]

    def build_attacks(self) -> list[tuple[str, Attack]]:
        """(label, attack object) for each attack, parameters validated."""
        return [
            (spec.display, build_validated(ATTACKS.get(spec.name), spec.params, where=f"attacks[{i}] ({spec.name})"))
            for i, spec in enumerate(self.attacks)
        ]


def parse_config(data: Any, source: str = "config") -> ExperimentConfig:
    """Validate a dict as an :class:`ExperimentConfig`; errors become one :class:`ConfigError` line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err)}") from None
    cfg.build_attacks()  # validates each method's own parameters now, before any work
    cfg.build_defenses()
    return cfg


def load_config(path: str | Path | None = None) -> ExperimentConfig:
    """Read a YAML config; ``None`` gives the built-in default (``backdoorlab/configs/default.yaml``)."""
    if path is None:
        text = resources.files("backdoorlab").joinpath("configs/default.yaml").read_text()
        source = "built-in default config"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        text, source = p.read_text(encoding="utf-8"), str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_config(data if data is not None else {}, source)
