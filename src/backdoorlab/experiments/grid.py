"""The grid: expand a config into cells, the unit of work that is computed, committed and resumed as one.

Three kinds of cells, run in this order (each phase depends on the previous one only through the model cache):

- ``clean``: train (or load) the clean model of a (dataset, model, seed) and measure its clean accuracy;
- ``attack``: train (or load) one attacked model and measure clean accuracy, ASR, robust accuracy;
- ``defense``: run one defense on the clean or on one attacked model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import ExperimentConfig

CellKind = Literal["clean", "attack", "defense"]
PHASES: tuple[CellKind, ...] = ("clean", "attack", "defense")


@dataclass(frozen=True)
class Cell:
    """One unit of work. ``setting`` indexes ``settings(cfg)``; ``attack``/``defense`` are labels or ``none``."""

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
    """Every cell of the grid, ordered by phase (clean, attack, defense), then setting, seed, attack, defense."""
    attacks = [label for spec in cfg.attacks for label, _ in spec.expand()]
    defenses = [label for spec in cfg.defenses for label, _ in spec.expand()]
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
                else:
                    targets = ["none", *attacks]
                    cells += [Cell("defense", **base, attack=a, defense=x) for a in targets for x in defenses]
    return cells
