"""Spectral Signatures (Tran, Li, Madry; NeurIPS 2018).

Per class: centre the class's penultimate representations, take their top right singular vector v, and score each
sample by its squared projection ((r - mean) . v)^2. Poisoned samples carry a signal along v. The samples with the
``1.5 * epsilon * n`` highest scores of each class are removed, ``epsilon`` being the defender's assumed upper bound
on the poison rate (a fixed assumption, never the true rate). Our default epsilon = 0.1 removes 15% of each class:
BackdoorBench's ``percentile: 85``; ART assumes 0.33.

Score per sample across classes (ours, for ROC curves): the squared projection divided by its class's median.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from ..base import DEFENSES
from .base import DataDetector, Detection, class_indices, relative_to_class, top_fraction_per_class


@DEFENSES.register("spectral_signatures")
class SpectralSignatures(DataDetector):
    """Spectral Signatures: outliers along the top singular vector of each class's representations."""

    name: ClassVar[str] = "spectral_signatures"
    epsilon: float = Field(
        0.1, gt=0, le=0.5, description="assumed upper bound on the poison rate; 1.5 * epsilon of each class is removed"
    )
    removal_factor: float = Field(1.5, gt=0, le=10, description="remove removal_factor * epsilon * n per class (1.5)")

    def detect(self, features, labels, clean_features, clean_labels, *, seed=0) -> Detection:
        x = features.numpy()
        raw = np.zeros(len(x))
        top = np.full(int(labels.max()) + 1, np.nan)
        for k, idx in class_indices(labels).items():
            if len(idx) < 2:
                continue
            centred = x[idx] - x[idx].mean(axis=0)
            _, s, vt = np.linalg.svd(centred, full_matrices=False)
            raw[idx] = (centred @ vt[0]) ** 2
            top[k] = s[0] ** 2 / len(idx)
        flagged = top_fraction_per_class(raw, labels, min(1.0, self.removal_factor * self.epsilon))
        scores = relative_to_class(raw, labels)
        return Detection(torch.from_numpy(scores), torch.from_numpy(flagged), {"top_singular_value_sq": top})
