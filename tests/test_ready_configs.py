"""Every config shipped in configs/ (and the built-in default) validates: names, parameters, types."""

from pathlib import Path

import pytest

from backdoorlab.experiments.config import load_config
from backdoorlab.experiments.grid import expand_cells

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ready_config_validates(path):
    cfg = load_config(path)
    attacks, defenses = cfg.build_attacks(), cfg.build_defenses()
    assert attacks or defenses, f"{path.name} names no attack and no defense"
    cells = expand_cells(cfg)
    per_seed = len(cfg.datasets) * len(cfg.models) * (1 + len(attacks) + (1 + len(attacks)) * len(defenses))
    assert len(cells) == per_seed * len(cfg.seeds)


def test_builtin_default_validates():
    cfg = load_config()
    assert cfg.dataset.name == "mnist5k" and len(cfg.seeds) == 1
