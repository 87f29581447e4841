"""Activation Clustering (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy, Srivastava; SafeAI 2019).

Per class: the penultimate activations of the class's training samples, reduced to ``nb_dims`` (10) dimensions by
ICA (the paper's choice; PCA offered), split into ``nb_clusters`` (2) by k-means. Poisoned samples of a target
class form their own cluster. Which cluster is poison (``cluster_analysis``):

- ``smaller`` (ART's default): the smaller cluster of every class;
- ``relative_size``: every cluster holding less than ``size_threshold`` (0.35) of its class;
- ``silhouette``: the clusters other than the largest, in classes whose silhouette score exceeds
  ``silhouette_threshold`` (a well-separated split).

The paper's exclusionary re-classification needs retraining per class and is not implemented. Score per sample
(ours, for ROC curves): 1 - the relative size of its cluster, so members of small clusters rank first.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA
from sklearn.metrics import silhouette_score

from ..base import DEFENSES
from .base import DataDetector, Detection, class_indices, feature_rank


@DEFENSES.register("activation_clustering")
class ActivationClustering(DataDetector):
    """Activation Clustering: ICA to 10 dimensions, 2-means per class, small clusters are poison."""

    name: ClassVar[str] = "activation_clustering"
    nb_dims: int = Field(10, ge=1, le=256, description="dimensions the activations are reduced to (paper: 10)")
    reduce: Literal["ica", "pca"] = Field("ica", description="reduction: ica (FastICA, the paper's) or pca")
    nb_clusters: int = Field(2, ge=2, le=10, description="k-means clusters per class (paper: 2)")
    cluster_analysis: Literal["smaller", "relative_size", "silhouette"] = Field(
        "smaller",
        description="which clusters are poison: smaller (the smaller cluster of every class, ART's default), "
        "relative_size (clusters below size_threshold of their class) or silhouette (clusters other than the "
        "largest, in classes whose silhouette score exceeds silhouette_threshold)",
    )
    size_threshold: float = Field(
        0.35, gt=0, lt=1, description="relative_size: a cluster below this fraction of its class is poison (0.35)"
    )
    silhouette_threshold: float = Field(
        0.15, gt=-1, lt=1, description="silhouette: a class whose 2-means split scores above this is poisoned"
    )

    def detect(self, features, labels, clean_features, clean_labels, *, seed=0) -> Detection:
        n = len(labels)
        scores, flagged = np.zeros(n), np.zeros(n, dtype=bool)
        classes = int(labels.max()) + 1
        smallest, silhouettes = np.full(classes, np.nan), np.full(classes, np.nan)
        ica_failed = np.zeros(classes)
        x = features.numpy()
        for k, idx in class_indices(labels).items():
            if len(idx) <= max(self.nb_dims, self.nb_clusters):
                continue
            reduced, ica_failed[k] = self._reduce(x[idx], seed)
            assign = KMeans(self.nb_clusters, n_init=10, random_state=seed).fit_predict(reduced)
            sizes = np.bincount(assign, minlength=self.nb_clusters) / len(idx)
            scores[idx] = 1.0 - sizes[assign]
            smallest[k] = sizes.min()
            silhouettes[k] = silhouette_score(reduced, assign) if len(set(assign)) > 1 else 0.0
            flagged[idx] = self._poison_clusters(sizes, silhouettes[k])[assign]
        suspicious = tuple(int(k) for k in np.unique(labels.numpy()[flagged]))
        stats = {"smallest_cluster": smallest, "silhouette": silhouettes, "ica_fell_back_to_pca": ica_failed}
        return Detection(torch.from_numpy(scores), torch.from_numpy(flagged), stats, suspicious)

    def _reduce(self, x: np.ndarray, seed: int) -> tuple[np.ndarray, bool]:
        """(n, d) features of one class -> ((n, nb_dims) or fewer, whether ICA failed).

        The dimension is at most the numerical rank of the centred features (whitening divides by each
        direction's variance); a class without variation gives one zero column. FastICA runs on the PCA
        projection to that dimension, which is the whitening FastICA does itself: on the raw penultimate features,
        whose dead ReLUs make many columns constant, scikit-learn's FastICA returned NaN for 8 of 10 classes of a
        colour-set model. Should it still return non-finite sources, the class falls back to the PCA projection,
        the method's other reduction (ours; ART would raise)."""
        centred = x - x.mean(axis=0)
        dims = min(self.nb_dims, feature_rank(centred))
        if dims == 0:
            return np.zeros((len(x), 1)), False
        pca = PCA(dims, random_state=seed).fit_transform(centred)
        if self.reduce == "pca":
            return pca, False
        ica = FastICA(dims, random_state=seed, max_iter=1000, tol=5e-3, whiten="unit-variance")
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                sources = ica.fit_transform(pca)
        except ValueError:  # scipy's SVD of a NaN mixing matrix
            return pca, True
        return (sources, False) if np.isfinite(sources).all() else (pca, True)

    def _poison_clusters(self, sizes: np.ndarray, silhouette: float) -> np.ndarray:
        """Bool per cluster: poison under the chosen analysis."""
        if self.cluster_analysis == "smaller":
            return sizes == sizes.min() if sizes.min() < sizes.max() else np.zeros_like(sizes, dtype=bool)
        if self.cluster_analysis == "relative_size":
            return sizes < self.size_threshold
        not_largest = np.arange(len(sizes)) != int(np.argmax(sizes))
        return not_largest if silhouette > self.silhouette_threshold else np.zeros_like(sizes, dtype=bool)
