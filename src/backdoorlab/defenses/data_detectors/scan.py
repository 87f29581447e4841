"""SCAn, Statistical Contamination Analyzer (Tang, Wang, Tang, Zhang; USENIX Security 2021).

A representation is modelled as ``r = mu_k + e``: an identity part per class ``mu_k ~ N(0, S_mu)`` and a variation
``e ~ N(0, S_e)`` shared by every class. The global model (S_mu, S_e) is fitted by EM on the defender's clean
data. Then, per class of the training set, a local model tests "one group" against "two groups with the same
variation S_e": the two groups are found by the paper's iteration (assign each sample to the nearer group mean in
the S_e^-1 metric, recompute the means, until stable), and the test statistic is twice the log-likelihood ratio,

    J_k = sum_i |r_i - m_k|^2 - sum_i |r_i - m_{k, g(i)}|^2      (norms in the S_e^-1 metric).

The statistics of the K classes are normalized by their median and MAD (1.4826 MAD), and a class whose normalized
statistic exceeds ``threshold`` (e, the paper's) is contaminated: its smaller group is removed. This is the
dataset-level test ``scan-data`` decides on: under a normal null, one class exceeds e with probability 0.33%, so a
clean 10-class set raises a false alarm about 3% of the time (measured rates in docs/data-detectors.md).

Departures: the EM keeps the posterior means of the identities (the Joint-Bayesian simplification), and S_e gets a
ridge of ``ridge`` times its mean eigenvalue so that it is invertible when the clean split holds fewer samples than
the representation has dimensions; the one-group mean is the sample mean (the paper's uses the prior S_mu). Score
per sample (ours, for ROC curves): the class's normalized statistic plus tanh of the sample's margin towards the
smaller group, so samples of contaminated classes rank first and, in a class, the smaller group first.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from ..base import DEFENSES
from .base import DataDetector, Detection, class_indices


def global_model(
    x: np.ndarray, y: np.ndarray, *, iterations: int, tol: float, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """(S_mu, S_e) of the features ``x`` (n, d) with labels ``y`` (n,) by EM, features centred on their mean;
    S_e carries a ridge of ``ridge`` times its mean eigenvalue."""
    x = x - x.mean(axis=0)
    groups = [x[y == k] for k in np.unique(y)]
    means = np.stack([g.mean(axis=0) for g in groups])
    s_mu = np.cov(means.T, bias=True)
    s_e = with_ridge(sum((g - m).T @ (g - m) for g, m in zip(groups, means, strict=True)) / len(x), ridge)
    for _ in range(iterations):
        post = np.stack([s_mu @ np.linalg.solve(len(g) * s_mu + s_e, g.sum(axis=0)) for g in groups])
        new_mu = post.T @ post / len(groups)
        new_e = with_ridge(sum((g - m).T @ (g - m) for g, m in zip(groups, post, strict=True)) / len(x), ridge)
        change = np.abs(new_e - s_e).max() + np.abs(new_mu - s_mu).max()
        s_mu, s_e = new_mu, new_e
        if change < tol:
            break
    return s_mu, s_e


def with_ridge(cov: np.ndarray, ridge: float) -> np.ndarray:
    """``cov + ridge * mean eigenvalue * I`` (and at least a tiny ridge, so it is invertible)."""
    scale = max(float(np.trace(cov)) / len(cov), 1e-12)
    return cov + max(ridge, 1e-9) * scale * np.eye(len(cov))


def two_groups(z: np.ndarray, *, iterations: int) -> np.ndarray:
    """Bool (n,) split of whitened samples ``z`` (n, d) into two groups by the paper's iteration, started from
    the sign of the projection on their top principal direction (deterministic)."""
    centred = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    group = centred @ vt[0] > 0
    for _ in range(iterations):
        if group.all() or not group.any():
            break
        u1, u2 = z[group].mean(axis=0), z[~group].mean(axis=0)
        new = ((z - u1) ** 2).sum(axis=1) < ((z - u2) ** 2).sum(axis=1)
        if np.array_equal(new, group):
            break
        group = new
    return group


def anomaly_index(stats: np.ndarray) -> np.ndarray:
    """(J - median) / (1.4826 MAD) over the finite entries; NaN stays NaN."""
    finite = stats[np.isfinite(stats)]
    median = float(np.median(finite))
    mad = 1.4826 * float(np.median(np.abs(finite - median)))
    return (stats - median) / max(mad, 1e-12 * max(abs(median), 1.0))


@DEFENSES.register("scan")
class SCAn(DataDetector):
    """SCAn: per class, a likelihood-ratio test of one group against two; contaminated classes lose their
    smaller group."""

    name: ClassVar[str] = "scan"
    needs_clean_data: ClassVar[bool] = True
    has_dataset_test: ClassVar[bool] = True
    threshold: float = Field(
        math.e, gt=0, description="a class whose normalized statistic exceeds this is contaminated (paper: e)"
    )
    em_iterations: int = Field(100, ge=0, le=1000, description="EM iterations of the global model at most (100)")
    tol: float = Field(1e-5, gt=0, description="the EM stops when no covariance entry moves by more than this")
    split_iterations: int = Field(100, ge=1, le=1000, description="iterations of the two-group split at most")
    ridge: float = Field(
        1e-3, ge=0, description="ridge added to S_e, times its mean eigenvalue, so it can be inverted (ours)"
    )

    def detect(self, features, labels, clean_features, clean_labels, *, seed=0) -> Detection:
        clean = clean_features.numpy()
        _, s_e = global_model(
            clean, clean_labels.numpy(), iterations=self.em_iterations, tol=self.tol, ridge=self.ridge
        )
        chol = np.linalg.cholesky(s_e)
        z = np.linalg.solve(chol, features.numpy().T).T  # |z_i - z_j|^2 is the S_e^-1 distance
        classes = int(labels.max()) + 1
        stats, minority_share = np.full(classes, np.nan), np.full(classes, np.nan)
        margin, minority = np.zeros(len(z)), np.zeros(len(z), dtype=bool)
        for k, idx in class_indices(labels).items():
            if len(idx) < 4:
                continue
            group = two_groups(z[idx], iterations=self.split_iterations)
            if group.all() or not group.any():
                stats[k] = 0.0
                continue
            small = group if group.sum() <= (~group).sum() else ~group
            u_small, u_big = z[idx][small].mean(axis=0), z[idx][~small].mean(axis=0)
            gap = float(((u_small - u_big) ** 2).sum())
            stats[k] = small.sum() * (~small).sum() / len(idx) * gap
            d_small = ((z[idx] - u_small) ** 2).sum(axis=1)
            d_big = ((z[idx] - u_big) ** 2).sum(axis=1)
            margin[idx] = (d_big - d_small) / max(gap, 1e-12)
            minority[idx] = small
            minority_share[k] = small.mean()
        index = anomaly_index(stats)
        suspicious = tuple(int(k) for k in np.flatnonzero(np.nan_to_num(index, nan=-np.inf) > self.threshold))
        in_suspicious = np.isin(labels.numpy(), suspicious)
        scores = np.nan_to_num(index, nan=0.0)[labels.numpy()] + np.tanh(margin)
        stats_out = {"statistic": stats, "anomaly_index": index, "smaller_group": minority_share}
        return Detection(torch.from_numpy(scores), torch.from_numpy(minority & in_suspicious), stats_out, suspicious)
