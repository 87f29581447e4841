"""Every config shipped in configs/ (and the built-in default) validates: names, parameters, types."""

from pathlib import Path

import pytest

from backdoorlab.experiments.config import load_config
from backdoorlab.experiments.grid import expand_cells

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ready_config_validates(path):
    cfg = load_config(path)
    attacks, defenses, studies = cfg.build_attacks(), cfg.build_defenses(), cfg.build_studies()
    assert attacks or defenses or studies, f"{path.name} names no attack, no defense and no study"
    cells = expand_cells(cfg)
    study_cells = sum(("clean" in s.runs_on) + ("backdoored" in s.runs_on) * len(attacks) for _, s in studies)
    per_model = 1 + len(attacks) + (1 + len(attacks)) * len(defenses) + study_cells
    per_seed = len(cfg.datasets) * len(cfg.models) * per_model
    assert len(cells) == per_seed * len(cfg.seeds)


def test_builtin_default_validates():
    cfg = load_config()
    assert cfg.dataset.name == "mnist5k" and len(cfg.seeds) == 1


def test_every_registered_method_runs_in_some_ready_config():
    from backdoorlab.attacks import ATTACKS
    from backdoorlab.defenses import DEFENSES

    named_attacks, named_defenses = set(), set()
    for cfg in [load_config(), *(load_config(p) for p in CONFIGS)]:
        named_attacks |= {a.name for _, a in cfg.build_attacks()}
        named_defenses |= {d.name for _, d in cfg.build_defenses()}
    registered = lambda names: {n for n in names if not n.startswith("test_")}  # noqa: E731
    assert registered(ATTACKS.names()) - named_attacks == set()
    assert registered(DEFENSES.names()) - named_defenses == set()
