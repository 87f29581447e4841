"""Metrics shared by every experiment: CA, ASR, RA, DER, RIR, CIs, and detection rates, ROC/PR-AUC, TPR@FPR.

ASR follows docs/methods.md section 1: inputs whose true label already equals their target are excluded, and
all-to-all targets are per sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


def _check_fractions(**values: float) -> None:
    for name, value in values.items():
        check_range(name, value, 0.0, 1.0)  # NaN passes and propagates


def defense_effectiveness_rate(ca_before: float, ca_after: float, asr_before: float, asr_after: float) -> float:
    """BackdoorBench's DER of a repair: ``[max(0, ΔASR) - max(0, ΔCA) + 1] / 2``, in [0, 1].

    ``ΔASR = asr_before - asr_after`` and ``ΔCA = ca_before - ca_after``, all four as fractions in [0, 1]
    (before = the backdoored model, after = the repaired one). 0.5 means no change; 1 means the ASR fell from 1 to
    0 at no cost in clean accuracy. A rising ASR or a rising CA counts as zero change (the clamps). NaN in, NaN out.

    This is the formula of the BackdoorBench paper (Wu et al., NeurIPS 2022 Datasets and Benchmarks) and of its
    ``defense_effectiveness_rate_simplied``; its non-simplified ``defense_effectiveness_rate`` *adds* max(0, ΔCA),
    rewarding a defense for destroying clean accuracy, so we do not follow that function.
    """
    _check_fractions(ca_before=ca_before, ca_after=ca_after, asr_before=asr_before, asr_after=asr_after)
    if math.isnan(ca_before + ca_after + asr_before + asr_after):
        return math.nan
    return (max(0.0, asr_before - asr_after) - max(0.0, ca_before - ca_after) + 1.0) / 2.0


def robust_improvement_rate(ca_before: float, ca_after: float, ra_before: float, ra_after: float) -> float:
    """BackdoorBench's RIR of a repair: ``[max(0, RA_after - RA_before) - max(0, ΔCA) + 1] / 2``, in [0, 1].

    RA (robust accuracy) = triggered eligible inputs given their true label; ``ΔCA = ca_before - ca_after``; all
    four as fractions in [0, 1]. 0.5 means no change; 1 means the RA rose from 0 to 1 at no cost in clean accuracy.
    As for :func:`defense_effectiveness_rate`, this is the paper's formula, not the sign-flipped non-simplified
    function of BackdoorBench's code. NaN in, NaN out.
    """
    _check_fractions(ca_before=ca_before, ca_after=ca_after, ra_before=ra_before, ra_after=ra_after)
    if math.isnan(ca_before + ca_after + ra_before + ra_after):
        return math.nan
    return (max(0.0, ra_after - ra_before) - max(0.0, ca_before - ca_after) + 1.0) / 2.0


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
    """Rates of a detector that flags ``score > threshold``; scores are (N,) tensors.

    Returns ``fpr`` (clean inputs flagged; STRIP's FRR), ``threshold``, and with attacked scores ``tpr``
    (attacked inputs flagged: the detection rate; 1 - STRIP's FAR), ``roc_auc`` and ``pr_auc`` (attacked = positive
    class) and ``tpr_at_1pct_fpr`` / ``tpr_at_5pct_fpr`` (:func:`tpr_at_fpr`: thresholds set on these clean
    scores, so they are points of the ROC curve, not rates at the calibrated ``threshold``). All in [0, 1].
    """
    out = {"fpr": float((clean_scores > threshold).float().mean()), "threshold": float(threshold)}
    if attacked_scores is not None and len(attacked_scores):
        out["tpr"] = float((attacked_scores > threshold).float().mean())
        out["roc_auc"] = roc_auc(clean_scores, attacked_scores)
        out["pr_auc"] = pr_auc(clean_scores, attacked_scores)
        out["tpr_at_1pct_fpr"] = tpr_at_fpr(clean_scores, attacked_scores, 0.01)
        out["tpr_at_5pct_fpr"] = tpr_at_fpr(clean_scores, attacked_scores, 0.05)
    return out


def roc_auc(negative_scores: torch.Tensor, positive_scores: torch.Tensor) -> float:
    """Area under the ROC curve, positives scoring higher being good; 0.5 is chance. NaN scores are not allowed."""
    from sklearn.metrics import roc_auc_score

    scores = torch.cat([negative_scores.flatten(), positive_scores.flatten()]).double().numpy()
    labels = np.r_[np.zeros(negative_scores.numel()), np.ones(positive_scores.numel())]
    return float(roc_auc_score(labels, scores))


def _ranked(negative_scores, positive_scores) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, ranks) of the pooled scores, positives labelled 1; None when either side is empty.

    Ranks (ties averaged) keep every ordering, so ROC and PR areas are unchanged, and make infinite scores usable;
    NaN scores are refused.
    """
    neg = torch.as_tensor(negative_scores, dtype=torch.float64).flatten()
    pos = torch.as_tensor(positive_scores, dtype=torch.float64).flatten()
    if bool(torch.isnan(neg).any() or torch.isnan(pos).any()):
        raise ConfigError("cannot rank detection scores: some are NaN")
    if neg.numel() == 0 or pos.numel() == 0:
        return None
    labels = np.r_[np.zeros(neg.numel()), np.ones(pos.numel())]
    return labels, stats.rankdata(torch.cat([neg, pos]).numpy())


def pr_auc(negative_scores: torch.Tensor, positive_scores: torch.Tensor) -> float:
    """Area under the precision-recall curve as average precision (scikit-learn's ``average_precision_score``),
    positives (attacked inputs or backdoored models) scoring higher being good, in [0, 1].

    Chance level is the share of positives, ``P / (N + P)``, not 0.5. NaN when either side is empty;
    :class:`ConfigError` for NaN scores.
    """
    from sklearn.metrics import average_precision_score

    pooled = _ranked(negative_scores, positive_scores)
    return float("nan") if pooled is None else float(average_precision_score(*pooled))


def tpr_at_fpr(negative_scores: torch.Tensor, positive_scores: torch.Tensor, fpr: float) -> float:
    """Fraction of ``positive_scores`` (P,) flagged (``score > t``) when ``t`` is set on ``negative_scores`` (N,)
    so that at most a fraction ``fpr`` (in [0, 1)) of them is flagged, with :func:`threshold_for_rate`'s empirical
    rule (exactly ``floor(N * fpr)`` negatives above ``t``, fewer with ties). In [0, 1]; NaN without positives.

    With N = 100 clean scores, ``fpr = 0.01`` lets the single highest clean score through; with N < 100 it lets
    none, so ``t`` is the highest clean score.
    """
    threshold = threshold_for_rate(torch.as_tensor(negative_scores).flatten(), fpr, "empirical")
    return flag_rate(torch.as_tensor(positive_scores).flatten(), threshold)


def model_detection_metrics(
    clean_model_scores: torch.Tensor | Sequence[float], backdoored_model_scores: torch.Tensor | Sequence[float]
) -> dict[str, float]:
    """Model-level detection over a population: one score per model, higher = more suspicious (TDC 2022's metrics).

    Returns ``roc_auc``, ``pr_auc`` (backdoored = positive class) and ``fpr_at_95pct_tpr``: the fraction of
    clean models flagged (``score >= t``) at the highest threshold ``t`` that still flags at least 95% of the
    backdoored models (``t`` = the ``ceil(0.95 * B)``-th highest backdoored score; clean models tied with it count
    as flagged). All in [0, 1]; NaN for every figure when either population is empty.
    """
    clean = torch.as_tensor(clean_model_scores, dtype=torch.float64).flatten()
    bad = torch.as_tensor(backdoored_model_scores, dtype=torch.float64).flatten()
    pooled = _ranked(clean, bad)
    if pooled is None:
        return {"roc_auc": math.nan, "pr_auc": math.nan, "fpr_at_95pct_tpr": math.nan}
    from sklearn.metrics import average_precision_score, roc_auc_score

    needed = math.ceil(0.95 * bad.numel() - 1e-9)
    threshold = bad.sort(descending=True).values[needed - 1]
    return {
        "roc_auc": float(roc_auc_score(*pooled)),
        "pr_auc": float(average_precision_score(*pooled)),
        "fpr_at_95pct_tpr": float((clean >= threshold).double().mean()),
    }


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
