"""Metrics shared by every experiment: clean accuracy, attack success rate, robust accuracy, CIs.

ASR follows methods.md section 1: inputs whose true label already equals their target are excluded, and
all-to-all targets are per sample.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from torch import nn

from .data import Split
from .models import predict
from .triggers import Trigger


def clean_accuracy(model: nn.Module, split: Split, **kwargs) -> float:
    """Fraction of ``split`` classified correctly, in [0, 1]."""
    return float((predict(model, split.x, **kwargs) == split.y).float().mean())


def _triggered_eligible(split: Split, trigger: Trigger, target_rule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    keep = target_rule.eligible(split.y)
    y = split.y[keep]
    return trigger(split.x[keep]), y, target_rule.targets(y)


def attack_success_rate(model: nn.Module, split: Split, trigger: Trigger, target_rule, **kwargs) -> float:
    """Fraction of triggered eligible inputs classified as their target label, in [0, 1]."""
    x, _, targets = _triggered_eligible(split, trigger, target_rule)
    return float((predict(model, x, **kwargs) == targets).float().mean()) if len(x) else float("nan")


def robust_accuracy(model: nn.Module, split: Split, trigger: Trigger, target_rule, **kwargs) -> float:
    """Fraction of triggered eligible inputs still given their true label, in [0, 1]."""
    x, y, _ = _triggered_eligible(split, trigger, target_rule)
    return float((predict(model, x, **kwargs) == y).float().mean()) if len(x) else float("nan")


def backdoor_metrics(model: nn.Module, split: Split, trigger: Trigger, target_rule, **kwargs) -> dict[str, float]:
    """``clean_accuracy``, ``asr`` and ``robust_accuracy`` of ``model`` on ``split``, in one pass each."""
    x, y, targets = _triggered_eligible(split, trigger, target_rule)
    pred = predict(model, x, **kwargs)
    return {
        "clean_accuracy": clean_accuracy(model, split, **kwargs),
        "asr": float((pred == targets).float().mean()),
        "robust_accuracy": float((pred == y).float().mean()),
    }


def mean_ci(values: list[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t confidence interval); half-width is 0 for a single value."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    if arr.size == 1:
        return float(arr[0]), 0.0
    sem = arr.std(ddof=1) / math.sqrt(arr.size)
    return float(arr.mean()), float(sem * stats.t.ppf((1 + confidence) / 2, arr.size - 1))


def detection_metrics(
    clean_scores: torch.Tensor, attacked_scores: torch.Tensor | None, threshold: float
) -> dict[str, float]:
    """Rates of a detector that flags ``score > threshold``.

    Returns ``fpr`` (clean inputs flagged; STRIP's FRR), ``threshold``, and with attacked scores ``tpr``
    (attacked inputs flagged: the detection rate; 1 - STRIP's FAR) and ``roc_auc`` (attacked = positive class).
    """
    out = {"fpr": float((clean_scores > threshold).float().mean()), "threshold": float(threshold)}
    if attacked_scores is not None and len(attacked_scores):
        out["tpr"] = float((attacked_scores > threshold).float().mean())
        out["roc_auc"] = roc_auc(clean_scores, attacked_scores)
    return out


def roc_auc(negative_scores: torch.Tensor, positive_scores: torch.Tensor) -> float:
    """Area under the ROC curve, positives scoring higher being good; 0.5 is chance. NaN scores are not allowed."""
    from sklearn.metrics import roc_auc_score

    scores = torch.cat([negative_scores.flatten(), positive_scores.flatten()]).double().numpy()
    labels = np.r_[np.zeros(negative_scores.numel()), np.ones(positive_scores.numel())]
    return float(roc_auc_score(labels, scores))


def threshold_at_rate(clean_scores: torch.Tensor, rate: float) -> float:
    """The threshold that flags (``score > t``) at most a fraction ``rate`` of ``clean_scores`` (empirical quantile)."""
    return float(torch.quantile(clean_scores.double(), 1.0 - rate, interpolation="higher"))
