"""Metrics shared by every experiment: clean accuracy, attack success rate, robust accuracy, CIs.

ASR follows methods.md section 1: inputs whose true label already equals their target are excluded, and
all-to-all targets are per sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from scipy import stats
from torch import nn

from .data import Split
from .errors import ConfigError, check_range
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


# --- Detection metrics shared by every input detector (flag = ``score > threshold``) ---------------------------

ThresholdRule = Literal["empirical", "normal"]


def flag_rate(scores: torch.Tensor, threshold: float) -> float:
    """Fraction of ``scores`` (N,) flagged (``score > threshold``), in [0, 1]; NaN for an empty tensor.

    On attacked inputs this is the TPR (detection rate; STRIP's 1 - FAR), on clean inputs the FPR (STRIP's FRR).
    """
    return float((scores > threshold).float().mean()) if scores.numel() else float("nan")


def rates_at_threshold(
    clean_scores: torch.Tensor, attacked_scores: torch.Tensor, threshold: float
) -> tuple[float, float]:
    """(TPR on ``attacked_scores``, FPR on ``clean_scores``) of a detector flagging ``score > threshold``."""
    return flag_rate(attacked_scores, threshold), flag_rate(clean_scores, threshold)


def threshold_for_rate(clean_scores: torch.Tensor, rate: float, rule: ThresholdRule = "empirical") -> float:
    """The threshold ``t`` at which flagging ``score > t`` flags a fraction ``rate`` of clean inputs.

    Chosen on clean scores (N,) only, never on attacked ones. ``rate`` is the target FPR (Feature Squeezing)
    or FRR (STRIP), in [0, 1) (``normal`` needs it in (0, 1)).

    - ``empirical``: Feature Squeezing's rule (EvadeML-Zoo ``detections/feature_squeezing.py``): sort the scores
      and take the value at index ``ceil(N * (1 - rate)) - 1``, so exactly ``floor(N * rate)`` clean scores lie
      above it (fewer with ties). It flags one input more than :func:`threshold_at_rate`, which takes the
      ``higher`` quantile at ``1 - rate`` over N - 1 gaps; both flag at most ``rate`` of the clean scores.
    - ``normal``: STRIP's boundary (Gao et al. 2019, section 4.3): fit a normal distribution to the clean
      scores (mean and maximum-likelihood std, as ``scipy.stats.norm.fit``) and take its ``1 - rate`` quantile.
      STRIP flags *low* entropy, so its detector scores are negated entropies: this is the paper's
      ``norm.ppf(FRR, mu, sigma)`` boundary, mirrored. With zero spread the threshold is the mean.
    """
    scores = clean_scores.detach().flatten().double()
    if scores.numel() == 0 or not bool(torch.isfinite(scores).all()):
        raise ConfigError("cannot choose a threshold: the clean scores are empty or not finite")
    if rule == "normal":
        check_range("rate", rate, 0.0, 1.0, low_open=True)
        if rate >= 1.0:
            raise ConfigError(f"rate must be below 1 for the normal rule, got {rate}")
        mean, std = float(scores.mean()), float(scores.std(unbiased=False))
        return mean if std == 0 else float(stats.norm.ppf(1.0 - rate, loc=mean, scale=std))
    if rule != "empirical":
        raise ConfigError(f"unknown threshold rule {rule!r}; use empirical or normal")
    check_range("rate", rate, 0.0, 1.0)
    if rate >= 1.0:
        raise ConfigError(f"rate must be below 1, got {rate}")
    n = scores.numel()
    flagged = math.floor(n * rate + 1e-9)  # floor(N * rate) == N - ceil(N * (1 - rate)), without rounding trouble
    return float(scores.sort().values[n - flagged - 1])


def detection_matrix(
    cells: Mapping[str, Mapping[str, Mapping[str, float]]],
) -> tuple[list[str], list[tuple[str, list[float], float, float]]]:
    """The detection table: rows are defense configurations, columns attacks, cells detection rates.

    ``cells`` maps configuration -> attack -> metrics as :func:`detection_metrics` returns them (``fpr`` always;
    ``tpr`` and ``roc_auc`` when the model was attacked; attack ``"none"`` is the clean model). Returns
    ``(attacks, rows)``: the attacks that have a ``tpr`` anywhere, in first-seen order, and one row per
    configuration ``(configuration, [tpr per attack], mean fpr over every model scored, mean roc_auc over
    attacks)``. Missing figures are NaN.
    """
    attacks = list(dict.fromkeys(a for per in cells.values() for a, m in per.items() if "tpr" in m))
    nan = float("nan")
    rows = []
    for config, per in cells.items():
        fprs = [m["fpr"] for m in per.values() if "fpr" in m]
        aucs = [m["roc_auc"] for m in per.values() if "roc_auc" in m]
        rows.append(
            (
                config,
                [per.get(a, {}).get("tpr", nan) for a in attacks],
                sum(fprs) / len(fprs) if fprs else nan,
                sum(aucs) / len(aucs) if aucs else nan,
            )
        )
    return attacks, rows
