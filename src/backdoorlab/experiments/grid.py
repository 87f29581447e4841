"""The grid: expand a config into cells, the unit of work that is computed, committed and resumed as one.

Four kinds of cells, run in this order (each phase depends on the previous ones only through the model cache):

- ``clean``: train (or load) the clean model of a (dataset, model, seed) and measure its clean accuracy;
- ``attack``: train (or load) one attacked model and measure clean accuracy, ASR, robust accuracy;
- ``defense``: run one defense on the clean or on one attacked model;
- ``study``: run one study (:mod:`backdoorlab.studies`) on the models it asks for (``runs_on``): the clean model,
  each attacked model, or both. A study's rows carry its label in the ``defense`` column (labels never collide:
  the config checks it). A study with an empty ``runs_on`` (a view of the other rows) has no cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import ExperimentConfig

CellKind = Literal["clean", "attack", "defense", "study"]
PHASES: tuple[CellKind, ...] = ("clean", "attack", "defense", "study")


@dataclass(frozen=True)
class Cell:
    """One unit of work. ``setting`` indexes ``settings(cfg)``; ``attack``/``defense`` are labels or ``none`` (for a
    ``study`` cell, ``defense`` is the study's label)."""

    kind: CellKind
    setting: int
    dataset: str
    model: str
    seed: int
    attack: str = "none"
    defense: str = "none"

    @property
    def id(self) -> str:
        return "|".join((self.kind, self.dataset, self.model, str(self.seed), self.attack, self.defense))


def settings(cfg: ExperimentConfig) -> list[tuple[int, str]]:
    """(dataset index, model name) pairs: every dataset with every model."""
    return [(d, m) for d in range(len(cfg.datasets)) for m in cfg.models]


def expand_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell of the grid, ordered by phase (clean, attack, defense, study), then setting, seed, attack, defense
    or study."""
    attacks = [label for spec in cfg.attacks for label, _ in spec.expand()]
    defenses = [label for spec in cfg.defenses for label, _ in spec.expand()]
    studies = [(label, study_targets(study.runs_on, attacks)) for label, study in cfg.build_studies()]
    cells: list[Cell] = []
    for kind in PHASES:
        for index, (d, model) in enumerate(settings(cfg)):
            name = cfg.datasets[d].name
            for seed in cfg.seeds:
                base = dict(setting=index, dataset=name, model=model, seed=seed)
                if kind == "clean":
                    cells.append(Cell("clean", **base))
                elif kind == "attack":
                    cells += [Cell("attack", **base, attack=a) for a in attacks]
                elif kind == "defense":
                    targets = ["none", *attacks]
                    cells += [Cell("defense", **base, attack=a, defense=x) for a in targets for x in defenses]
                else:
                    cells += [Cell("study", **base, attack=a, defense=label) for label, on in studies for a in on]
    return cells


def study_targets(runs_on: tuple[str, ...], attacks: list[str]) -> list[str]:
    """The attack labels (``none``: the clean model) a study's cells run on, from its ``runs_on``."""
    return (["none"] if "clean" in runs_on else []) + (attacks if "backdoored" in runs_on else [])
