"""Named settings of the scan's inspectors (``scan --preset``, ``scan-population --preset``).

- ``default``: each inspector's own defaults (the fast settings of issue 22).
- ``verdicts``: the settings the scan ran with while the verdicts issue (17) was worked on: Neural Cleanse (and
  TABOR) with 32 clean images per label and step and 4 steps per epoch, DeepInspect with 300 inversion steps of 20
  images per class and 800 generator steps at a rate of 1e-3. Kept so that the speed-up of the defaults can be
  measured against it on the same models (``python -m benchmarks population``), and for a user who prefers the
  slower settings.

A preset names parameters per inspector; an inspector the preset does not name runs at its defaults.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

SCAN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "verdicts": {
        "neural_cleanse": {"batch_size": 32, "batches_per_epoch": 4},
        "tabor": {"batch_size": 32, "batches_per_epoch": 4},
        "deepinspect": {"inversion_per_class": 20, "inversion_steps": 300, "steps": 800, "lr": 1e-3},
    },
}
DEFAULT_PRESET = "default"


def check_preset(preset: str) -> None:
    """ConfigError (one line) unless ``preset`` is a known preset."""
    if preset not in SCAN_PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}; valid: {', '.join(SCAN_PRESETS)}")


def preset_params(preset: str, inspector: str) -> dict[str, Any]:
    """The parameters ``preset`` sets on ``inspector`` (a copy; empty when it names none); ConfigError for an
    unknown preset."""
    check_preset(preset)
    return dict(SCAN_PRESETS[preset].get(inspector, {}))
