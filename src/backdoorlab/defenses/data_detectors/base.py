"""The contracts of the data family: data detectors and training-time defenses.

A :class:`DataDetector` receives the model trained on the (possibly poisoned) training set, that training set
(without its poison indices or rate) and, where the method needs clean data (SCAn), the defender's clean ``val``
split. ``fit`` computes a suspicion score per training sample (higher = more suspicious) and a decision (the
samples to remove). An assumed poison rate (``epsilon`` of Spectral Signatures and SPECTRE) is the user's fixed
assumption, never the true rate.

A :class:`TrainingDefense` receives the training set and trains a model through the poison (ABL, DPA).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ...data import Dataset, Split
from ...errors import ConfigError
from ...models import TrainingConfig
from ..base import Defense, DefenseKind
from .features import penultimate_features


@dataclass(frozen=True)
class Detection:
    """What a data detector found on N training samples of K classes.

    ``scores`` (N,) float64, higher = more suspicious (comparable across classes, for ROC/PR curves);
    ``flagged`` (N,) bool, the samples the method removes; ``class_statistics`` name -> (K,) array of the
    method's per-class figures (NaN for a class it could not analyse); ``suspicious_classes`` the classes its
    class-level test flags (empty for a method without one).
    """

    scores: torch.Tensor
    flagged: torch.Tensor
    class_statistics: dict[str, np.ndarray] = field(default_factory=dict)
    suspicious_classes: tuple[int, ...] = ()


class DataDetector(Defense):
    """Finds the poisoned samples of a training set from the representations of a model trained on it."""

    kind: ClassVar[DefenseKind] = "data_detector"
    needs_clean_data: ClassVar[bool] = False
    has_dataset_test: ClassVar[bool] = False  # True: ``suspicious_classes`` comes from a test at a stated rate

    def fit(
        self,
        model: nn.Module,
        train: Split,
        clean: Split | None = None,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
    ) -> DataDetector:
        """Score every sample of ``train`` (images (N, C, H, W) in [0, 1], labels as given, poisoned or not) from
        ``model``'s penultimate activations; ``clean`` is the defender's clean split (required when
        ``needs_clean_data``). Returns self; the result is :attr:`detection_`."""
        if self.needs_clean_data and (clean is None or len(clean) == 0):
            raise ConfigError(f"{self.name} needs the defender's clean data (a clean split with every class)")
        if len(train) == 0:
            raise ConfigError(f"{self.name}: the training set is empty")
        feats = penultimate_features(model, train.x, device=device)
        clean_feats = penultimate_features(model, clean.x, device=device) if clean is not None else None
        num_classes = int(max(int(train.y.max()), int(clean.y.max()) if clean is not None else 0)) + 1
        self._detection = self.detect(feats, train.y, clean_feats, clean.y if clean is not None else None, seed=seed)
        self._num_classes = num_classes
        return self

    def detect(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        clean_features: torch.Tensor | None,
        clean_labels: torch.Tensor | None,
        *,
        seed: int = 0,
    ) -> Detection:
        """The method itself, on features (N, D) float64 and labels (N,); clean ones when given."""
        raise NotImplementedError

    @property
    def detection_(self) -> Detection:
        if not hasattr(self, "_detection"):
            raise ConfigError(f"{self.name} is not fitted: call fit(model, train, clean) first")
        return self._detection

    @property
    def scores_(self) -> torch.Tensor:
        """Suspicion score per training sample (N,), higher = more suspicious."""
        return self.detection_.scores

    @property
    def flagged_(self) -> torch.Tensor:
        """The samples the method removes (N,) bool."""
        return self.detection_.flagged


class TrainingDefense(Defense):
    """Trains a model on a (possibly poisoned) training set so that the poison does not take."""

    kind: ClassVar[DefenseKind] = "training_defense"

    def train(
        self,
        train: Split,
        dataset: Dataset,
        architecture: str,
        training: TrainingConfig,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool | None = None,
    ) -> nn.Module:
        """A new ``architecture`` network trained on ``train`` with the recipe ``training``. ``dataset`` gives
        the shape, classes and normalization (its ``test`` split is not read)."""
        raise NotImplementedError

    def figures(self, model: nn.Module, probes: dict[str, Split], *, device: str | torch.device = "cpu"):
        """Rows and artifacts beyond CA / ASR of the model :meth:`train` returned (none by default), measured on
        labelled ``probes`` (``test``, and ``triggered`` for a backdoor)."""
        return {}, {}


def numerical_rank(singular_values: np.ndarray, rtol: float = 1e-5) -> int:
    """How many of ``singular_values`` (descending) exceed ``rtol`` times the largest; 0 when all are 0."""
    if not singular_values.size or float(singular_values[0]) <= 0:
        return 0
    return int((singular_values > rtol * singular_values[0]).sum())


def feature_rank(centred: np.ndarray, rtol: float = 1e-5) -> int:
    """Numerical rank of a class's centred features (n, d): singular values above ``rtol`` times the largest; 0 when
    every feature is constant within the class (a collapsed network's dead ReLUs). Methods that whiten or
    decompose cap their dimension at it: directions without variance would be divided by zero."""
    if not centred.size:
        return 0
    return numerical_rank(np.linalg.svd(centred, compute_uv=False), rtol)


def class_indices(labels: torch.Tensor) -> dict[int, np.ndarray]:
    """Row indices of each class present in ``labels`` (N,)."""
    y = labels.numpy()
    return {int(k): np.flatnonzero(y == k) for k in np.unique(y)}


def relative_to_class(scores: np.ndarray, labels: torch.Tensor) -> np.ndarray:
    """Per-class scores divided by the class's median score, so that scores of different classes compare."""
    out = np.zeros_like(scores)
    for _, idx in class_indices(labels).items():
        median = float(np.median(scores[idx])) if len(idx) else 0.0
        out[idx] = scores[idx] / median if median > 0 else scores[idx]
    return out


def top_fraction_per_class(scores: np.ndarray, labels: torch.Tensor, fraction: float) -> np.ndarray:
    """Bool (N,): in each class the ``round(fraction * n_class)`` highest ``scores`` (ties by index)."""
    flagged = np.zeros(len(scores), dtype=bool)
    for _, idx in class_indices(labels).items():
        count = min(len(idx), int(round(fraction * len(idx))))
        if count:
            order = np.argsort(-scores[idx], kind="stable")
            flagged[idx[order[:count]]] = True
    return flagged
