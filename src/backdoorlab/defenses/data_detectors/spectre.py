"""SPECTRE (Hayase, Kong, Somani, Oh; ICML 2021).

Per class: project the class's penultimate representations on their top ``dims`` principal directions; estimate
their mean and covariance robustly (the poison must not set them); whiten with that covariance, so that clean
samples look isotropic and the poison stands out along few directions; score each sample with the QUantum Entropy
(QUE) score, alpha = 4:

    Q = exp(alpha (S - I) / (||S||_2 - 1)),   tau_i = z_i' Q z_i / tr(Q)

where z_i are the whitened samples and S their covariance. The ``1.5 * epsilon * n`` highest of each class are
removed, ``epsilon`` being the defender's assumed bound on the poison rate (ours: 0.1, as Spectral Signatures).

Departures: the robust mean and covariance come from scikit-learn's Minimum Covariance Determinant (support
fraction ``1 - 1.5 epsilon``, at least 0.5) instead of the paper's filter-based robust estimator; ``dims`` is fixed
(32) instead of searched. Score across classes (ours, for ROC curves): tau divided by its class's median.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from sklearn.covariance import MinCovDet

from ..base import DEFENSES
from .base import DataDetector, Detection, class_indices, numerical_rank, relative_to_class, top_fraction_per_class


def que_scores(z: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """QUE scores (n,) of whitened samples ``z`` (n, d), and the top eigenvalue of their covariance."""
    cov = z.T @ z / len(z)
    eig, vec = np.linalg.eigh(cov)
    top = float(eig[-1])
    scale = alpha / (top - 1.0) if top > 1.0 + 1e-12 else 0.0
    weights = np.exp(scale * (eig - 1.0) - scale * (top - 1.0))  # Q up to a factor that tr(Q) cancels
    proj = z @ vec
    return (proj**2 @ weights) / weights.sum(), top


def whiten(x: np.ndarray, support: float, seed: int) -> tuple[np.ndarray, bool]:
    """``x`` (n, d) centred and whitened by a robust (MCD) estimate of its mean and covariance, and whether the
    estimate fell back to the sample mean and covariance: MCD raises when the samples of its best support are
    all equal (a network that maps most of a class to one point), where no robust covariance exists (ours)."""
    try:
        mcd = MinCovDet(support_fraction=support, random_state=seed).fit(x)
        location, covariance, fell_back = mcd.location_, mcd.covariance_, False
    except ValueError:
        location, covariance, fell_back = x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], -1), True
    eig, vec = np.linalg.eigh(covariance)
    eig = np.maximum(eig, 1e-12 * max(float(eig.max()), 1e-30))
    return (x - location) @ vec / np.sqrt(eig), fell_back


@DEFENSES.register("spectre")
class Spectre(DataDetector):
    """SPECTRE: robust whitening of each class's representations, then QUantum Entropy outlier scores."""

    name: ClassVar[str] = "spectre"
    epsilon: float = Field(
        0.1, gt=0, le=0.3, description="assumed upper bound on the poison rate; 1.5 * epsilon of each class is removed"
    )
    removal_factor: float = Field(1.5, gt=0, le=10, description="remove removal_factor * epsilon * n per class (1.5)")
    dims: int = Field(32, ge=1, le=512, description="principal directions kept before the robust estimate (ours: 32)")
    alpha: float = Field(4.0, ge=0, description="QUE's alpha: 0 scores by the norm, large alpha by the top direction")

    def detect(self, features, labels, clean_features, clean_labels, *, seed=0) -> Detection:
        x = features.numpy()
        raw = np.zeros(len(x))
        top = np.full(int(labels.max()) + 1, np.nan)
        mcd_failed = np.zeros(len(top))
        support = max(0.5, 1.0 - self.removal_factor * self.epsilon)
        for k, idx in class_indices(labels).items():
            centred = x[idx] - x[idx].mean(axis=0)
            _, singular, vt = np.linalg.svd(centred, full_matrices=False)
            dims = min(self.dims, x.shape[1], len(idx) // 4, numerical_rank(singular))
            if dims < 1:  # too few samples, or no variation (a collapsed network): every score stays 0
                continue
            reduced = centred @ vt[:dims].T
            whitened, mcd_failed[k] = whiten(reduced, support, seed)
            raw[idx], top[k] = que_scores(whitened, self.alpha)
        flagged = top_fraction_per_class(raw, labels, min(1.0, self.removal_factor * self.epsilon))
        scores = relative_to_class(raw, labels)
        stats = {"whitened_top_eigenvalue": top, "mcd_fell_back_to_sample_covariance": mcd_failed}
        return Detection(torch.from_numpy(scores), torch.from_numpy(flagged), stats)
