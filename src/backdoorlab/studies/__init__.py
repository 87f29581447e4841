"""Paper reproductions on top of the methods, registered by name in :data:`STUDIES` (config section ``studies:``).

- ``fs_adversarial``: Feature Squeezing's detection-rate table against adversarial examples (Xu et al., NDSS 2018);
- ``fine_pruning_table1``: Fine-Pruning's Table 1 (Liu et al., RAID 2018) of a run; :mod:`.domains` holds the
  three-domain version (faces, speech, traffic signs) with the papers' reference figures and the findings.

Studies sit above the methods (data, models, triggers, attacks, adversarial, defenses, metrics) and below
``experiments``, which runs their cells; every module of this package is imported here, so a new study is one file.
"""

from ..utils.discovery import import_submodules
from .base import STUDIES, Study, StudyContext, StudyOutcome

import_submodules(__name__, __path__)

__all__ = ["STUDIES", "Study", "StudyContext", "StudyOutcome"]
