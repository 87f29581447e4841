"""Data detectors and training-time defenses: the defender holds a (possibly poisoned) training set.

- data detectors (``kind = "data_detector"``): ``fit(model, train, clean)`` gives a suspicion score and a decision
  per training sample (Activation Clustering, Spectral Signatures, SPECTRE, SCAn);
- training-time defenses (``kind = "training_defense"``): ``train(train, ...)`` returns a model trained through
  the poison (ABL, DPA with its certificate).

Both are registered in :data:`~backdoorlab.defenses.DEFENSES`; :mod:`backdoorlab.experiments.data_evaluation`
measures them against the attack.
"""

from .base import DataDetector, Detection, TrainingDefense
from .features import penultimate_features

__all__ = ["DataDetector", "Detection", "TrainingDefense", "penultimate_features"]
