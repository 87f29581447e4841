"""The scan's presets (issue 22): the ``verdicts`` settings reach the inspectors, the defaults are the faster ones."""

import pytest

from backdoorlab.audit.presets import SCAN_PRESETS, preset_params
from backdoorlab.defenses import DEFENSES
from backdoorlab.errors import ConfigError


@pytest.mark.parametrize("inspector", sorted(SCAN_PRESETS["verdicts"]))
def test_verdicts_preset_builds_and_differs_from_the_defaults(inspector):
    params = preset_params("verdicts", inspector)
    slow, fast = DEFENSES.build(inspector, params), DEFENSES.build(inspector)
    for key, value in params.items():
        assert getattr(slow, key) == value
        assert getattr(fast, key) != value, f"{inspector}.{key}: the default equals the verdicts preset"


def test_faster_defaults_spend_fewer_images():
    nc_slow = DEFENSES.build("neural_cleanse", preset_params("verdicts", "neural_cleanse"))
    nc = DEFENSES.build("neural_cleanse")
    assert nc.batch_size * nc.batches_per_epoch * 4 == nc_slow.batch_size * nc_slow.batches_per_epoch
    di_slow = DEFENSES.build("deepinspect", preset_params("verdicts", "deepinspect"))
    di = DEFENSES.build("deepinspect")
    inversion = di.inversion_steps * di.inversion_per_class
    assert inversion * 6 == di_slow.inversion_steps * di_slow.inversion_per_class
    assert di.steps * 2 == di_slow.steps


def test_default_preset_sets_nothing_and_unknown_preset_is_one_line():
    assert preset_params("default", "neural_cleanse") == {}
    with pytest.raises(ConfigError, match=r"^unknown --preset 'fast'; valid: default, verdicts$"):
        preset_params("fast", "neural_cleanse")
