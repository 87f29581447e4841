"""The experiment config: YAML validated with pydantic; unknown keys and wrong types name their field."""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..attacks import ATTACKS, Attack
from ..data import Dataset, dataset_names, load_dataset
from ..data.base import with_defender_fraction
from ..defenses import DEFENSES, Defense
from ..errors import ConfigError
from ..models import MODELS, TrainingConfig
from ..studies import STUDIES, Study
from ..utils.validation import describe_validation_error
from .population import spread_targets


class DatasetConfig(BaseModel):
    """Which dataset: a registered name or ``npz:PATH``, the folder its files live in, and optionally the share of
    the training set that becomes the defender's clean ``val`` split (default: the dataset's own fixed split)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "mnist5k"
    data_dir: str | None = None
    defender_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="share of the whole training set (train + val) redrawn as the defender's val split, stratified "
        "(BackdoorBench: 0.05); default none keeps the dataset's fixed val split (CIFAR-10: 5,000 images)",
    )

    def load(self) -> Dataset:
        """The dataset; its val split redrawn when ``defender_fraction`` is set (:func:`with_defender_fraction`)."""
        ds = load_dataset(self.name, self.data_dir)
        return ds if self.defender_fraction is None else with_defender_fraction(ds, self.defender_fraction)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if not name.startswith("npz:") and name not in dataset_names():
            raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")
        return name


class MethodSpec(BaseModel):
    """One attack or defense of the grid: ``name``, an optional display ``label``, the method's parameters, and
    an optional ``sweep`` of parameters, each with a list of values (the grid takes every combination).

    In YAML the parameters sit beside the name: ``{name: badnets, poison_rate: 0.05}``;
    a sweep: ``{name: badnets, sweep: {poison_rate: [0.01, 0.05, 0.1]}}`` gives three attacks labelled
    ``badnets[poison_rate=0.01]`` and so on.
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split_params(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and "params" not in data:
            own = ("name", "label", "sweep")
            rest = {k: v for k, v in data.items() if k not in own}
            return {k: v for k, v in data.items() if k in own} | {"params": rest}
        return data

    @field_validator("sweep")
    @classmethod
    def _non_empty(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in sweep.items():
            if not values:
                raise ValueError(f"sweep of {key!r} has no values")
        return sweep

    @property
    def display(self) -> str:
        return self.label or self.name

    def expand(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, params) for each combination of the sweep (one entry when there is no sweep)."""
        if not self.sweep:
            return [(self.display, dict(self.params))]
        keys = list(self.sweep)
        out = []
        for combo in itertools.product(*(self.sweep[k] for k in keys)):
            tag = ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
            out.append((f"{self.display}[{tag}]", {**self.params, **dict(zip(keys, combo, strict=True))}))
        return out


class PopulationConfig(BaseModel):
    """Detection over a population of models (Neural Cleanse / DeepInspect papers): ``k`` clean and ``k``
    backdoored models of one setting, one per seed, each backdoored model aimed at its own target.

    ``k`` (2-100, default 5) sets the seeds to 0..k-1 unless ``seeds`` are given (then there must be k of
    them); ``targets`` (default: k labels spread over the classes, e.g. 0, 2, 4, 6, 8 of 10) gives the
    target of the backdoored model of each seed, for every attack with a ``target`` (or ``targets``)
    parameter.
    """

    model_config = ConfigDict(extra="forbid")
    k: int = Field(5, ge=2, le=100)
    targets: list[int] | None = None

    @field_validator("targets")
    @classmethod
    def _non_negative(cls, targets: list[int] | None) -> list[int] | None:
        if targets is not None and any(t < 0 for t in targets):
            raise ValueError(f"targets must be labels >= 0, got {targets}")
        return targets


class ExperimentConfig(BaseModel):
    """Everything `backdoorlab run` needs. Defaults: MNIST-5k, ``badnet_cnn``, one seed, CPU or GPU."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: DatasetConfig | list[DatasetConfig] = Field(default_factory=DatasetConfig)
    model: str | list[str] = "badnet_cnn"
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    attacks: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name="badnets")])
    defenses: list[MethodSpec] = Field(default_factory=list)
    studies: list[MethodSpec] = Field(
        default_factory=list, description="paper reproductions run on the grid's models (fs_adversarial, ...)"
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    device: str = "auto"
    examples: int = Field(6, ge=1, le=32, description="example images per attack in the report figure")
    population: PopulationConfig | None = None

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return {"name": value} if isinstance(value, str) else value

    @field_validator("model")
    @classmethod
    def _known_model(cls, names: str | list[str]) -> str | list[str]:
        for name in [names] if isinstance(names, str) else names:
            if name not in MODELS:
                raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS.names())}")
        return names

    @property
    def datasets(self) -> list[DatasetConfig]:
        return self.dataset if isinstance(self.dataset, list) else [self.dataset]

    @property
    def models(self) -> list[str]:
        return [self.model] if isinstance(self.model, str) else list(self.model)

    @model_validator(mode="after")
    def _population_seeds(self) -> ExperimentConfig:
        pop = self.population
        if pop is None:
            return self
        if "seeds" not in self.model_fields_set:
            self.seeds = list(range(pop.k))
        elif len(self.seeds) != pop.k:
            raise ValueError(f"population.k is {pop.k} but {len(self.seeds)} seeds are given; give {pop.k} or none")
        if pop.targets is not None and len(pop.targets) != pop.k:
            raise ValueError(f"population.targets has {len(pop.targets)} labels; population.k = {pop.k} needs {pop.k}")
        return self

    def population_target(self, seed: int, num_classes: int) -> int | None:
        """The target of the backdoored model of ``seed`` in a population run (None without ``population``)."""
        if self.population is None:
            return None
        targets = self.population.targets or spread_targets(len(self.seeds), num_classes)
        return int(targets[self.seeds.index(seed) % len(targets)])

    @model_validator(mode="after")
    def _check_methods(self) -> ExperimentConfig:
        for kind, specs in (("attacks", self.attacks), ("defenses", self.defenses), ("studies", self.studies)):
            labels = [label for s in specs for label, _ in s.expand()]
            if len(set(labels)) != len(labels):
                raise ValueError(f"two {kind} share a label; give each a distinct 'label'")
        for spec in self.defenses:
            if spec.name in STUDIES and spec.name not in DEFENSES:
                raise ValueError(
                    f"{spec.name!r} is a study, not a defense: move it from defenses to studies "
                    f"(studies: [{{name: {spec.name}, ...}}])"
                )
        families = (("attacks", self.attacks, ATTACKS), ("defenses", self.defenses, DEFENSES))
        for kind, specs, registry in (*families, ("studies", self.studies, STUDIES)):
            for spec in specs:
                if spec.name not in registry:
                    valid = ", ".join(registry.names()) or "(none registered yet)"
                    singular = "study" if kind == "studies" else kind[:-1]
                    raise ValueError(f"unknown {singular} {spec.name!r} in {kind}; valid names: {valid}")
        shared = {label for s in self.studies for label, _ in s.expand()} & {
            label for s in self.defenses for label, _ in s.expand()
        }
        if shared:  # a study's rows carry its label where a defense's carry theirs
            raise ValueError(f"a study and a defense share the label {sorted(shared)[0]!r}; give one a 'label'")
        return self

    def build_defenses(self) -> list[tuple[str, Defense]]:
        """(label, defense object) for each defense and sweep combination, parameters validated."""
        return _build(self.defenses, DEFENSES, "defenses")

    def build_attacks(self) -> list[tuple[str, Attack]]:
        """(label, attack object) for each attack and sweep combination, parameters validated."""
        return _build(self.attacks, ATTACKS, "attacks")

    def build_studies(self) -> list[tuple[str, Study]]:
        """(label, study object) for each study and sweep combination, parameters validated."""
        return _build(self.studies, STUDIES, "studies")

    def check_studies(self) -> None:
        """Raise ConfigError when a study needs an attack or a defense the config does not hold."""
        attacks = [(label, s.name) for s in self.attacks for label, _ in s.expand()]
        defenses = [(label, s.name) for s in self.defenses for label, _ in s.expand()]
        built = iter(self.build_studies())
        for i, spec in enumerate(self.studies):
            for _ in spec.expand():
                try:
                    next(built)[1].check_run(attacks, defenses)
                except ValueError as err:
                    raise ConfigError(f"studies[{i}] ({spec.name}): {err}") from None


def _build(specs: list[MethodSpec], registry, kind: str) -> list:
    return [
        (label, registry.build(spec.name, params, where=f"{kind}[{i}] ({spec.name})"))
        for i, spec in enumerate(specs)
        for label, params in spec.expand()
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
    cfg.check_studies()
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
