"""Defenses, registered by name in :data:`DEFENSES`:

- ``input_detectors/``: per input, at run time (STRIP, Feature Squeezing);
- ``repair/``: model sanitization (pruning, fine-tuning, fine-pruning, unlearning);
- ``inspection/``: per model, offline (Neural Cleanse, DeepInspect);
- ``data_detectors/``: per training sample (Activation Clustering, Spectral Signatures, SPECTRE, SCAn), and the
  training-time defenses (ABL, DPA).

Every module of those subpackages is imported here, so a new defense is one new file.
"""

from ..utils.discovery import import_submodules
from .base import DEFENSES, Defense, Figures, InputDetector, Repair

for _sub in ("input_detectors", "repair", "inspection", "data_detectors"):
    import_submodules(f"{__name__}.{_sub}", [__path__[0] + "/" + _sub])

__all__ = ["DEFENSES", "Defense", "Figures", "InputDetector", "Repair"]
