"""Adversarial examples: thin adapters over the Adversarial Robustness Toolbox's evasion attacks.

- :mod:`.classifier`: our models as ART ``PyTorchClassifier`` objects (pixels in [0, 1], ``clip_values=(0, 1)``);
- :mod:`.attacks`: FGSM, BIM, CW-infinity, CW2, CW0, DeepFool, JSMA (and the CW-infinity stand-in
  ``min_eps_bim``), registered by name in :data:`ADVERSARIAL_ATTACKS`, with Next / LL targets where the method has
  them; results are rounded to 256 levels;
- :mod:`.carlini`: Carlini and Wagner's own L2 and L0 algorithms (tanh space, Adam), batched in torch, behind
  ``cw2`` and ``cw0``'s default ``solver: carlini``;
- :mod:`.study`: the Feature Squeezing study's attacks and squeezers per dataset (``mnist``, ``cifar10``).

ART is optional: ``pip install 'backdoorlab[adversarial]'``. Importing this package does not import ART.
"""

from .attacks import (
    ADVERSARIAL_ATTACKS,
    BIM,
    FGSM,
    JSMA,
    AdversarialExamples,
    CarliniWagnerL0,
    CarliniWagnerL2,
    CarliniWagnerLinf,
    DeepFool,
    EvasionAttack,
    MinimalEpsilonBIM,
    round_to_levels,
    target_labels,
)
from .carlini import carlini_l0, carlini_l2
from .classifier import art_classifier, require_art
from .study import COLUMN_ORDER, COLUMNS, SQUEEZERS, StudyAttack, preset_for_channels, study_attacks, study_keys

__all__ = [
    "ADVERSARIAL_ATTACKS",
    "BIM",
    "COLUMN_ORDER",
    "COLUMNS",
    "FGSM",
    "JSMA",
    "SQUEEZERS",
    "AdversarialExamples",
    "CarliniWagnerL0",
    "CarliniWagnerL2",
    "CarliniWagnerLinf",
    "DeepFool",
    "EvasionAttack",
    "MinimalEpsilonBIM",
    "StudyAttack",
    "art_classifier",
    "carlini_l0",
    "carlini_l2",
    "preset_for_channels",
    "require_art",
    "round_to_levels",
    "study_attacks",
    "study_keys",
    "target_labels",
]
