"""The verdict of a model inspection, and the robust outlier statistics both inspectors use.

Neural Cleanse (Wang et al., S&P 2019) and DeepInspect (Chen et al., IJCAI 2019) both measure, per candidate
target label, how small a trigger flips inputs to that label; a backdoor target needs an abnormally *small*
trigger. Both then test the per-label sizes for a low outlier with a median-absolute-deviation (MAD) statistic
(docs/methods.md sections 1, 8 and 9):

- :func:`anomaly_index`, Neural Cleanse: ``|x - median| / (1.4826 * MAD)``; only labels *below* the median
  can be flagged (``mad_outlier_detection.py`` in bolunwang/backdoor).
- :func:`left_tail_deviation`, DeepInspect's double-MAD variant: ``(median - x) / (1.4826 * MAD_left)`` where
  ``MAD_left`` is the median of ``|x - median|`` over the values at or below the median only.
- :func:`leave_one_out_deviation`, ours (issue 17): ``(mean of the others - x) / sd of the others``, the
  externally studentized deviation of Grubbs' outlier test. The scale comes from all K - 1 other labels instead of
  a median of deviations, whose estimate from K = 10 values is noisy: a low outlier needs an index near 4.7
  (MAD) to be flagged at alpha 0.025 but near 4.1 (this one), and real targets get larger values of this one.

The papers flag a label when it lies below the median and its index exceeds 2, a per-label test. The verdict's
decision is for the whole model instead, at a stated false-alarm rate ``alpha``: the cutoff and the p-values come
from the null law of the model score (:mod:`.null`); the fixed cutoff 2 stays available as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import ConfigError

MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimate of a normal distribution's standard deviation
DEFAULT_CUTOFF = 2.0  # the papers' per-label cutoff
DEFAULT_ALPHA = 0.05


def _as_vector(values: torch.Tensor | list[float]) -> torch.Tensor:
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() < 3:
        raise ConfigError(f"the MAD outlier test needs at least 3 labels, got {v.numel()}")
    if not torch.isfinite(v).all():
        raise ConfigError("the MAD outlier test got a NaN or infinite per-label statistic")
    return v


def _scaled(mad: torch.Tensor, median: torch.Tensor) -> torch.Tensor:
    """``1.4826 * mad``, floored so that identical values give large but finite indices instead of a division by 0."""
    floor = 1e-12 * max(1.0, float(median.abs()))
    return (MAD_CONSISTENCY * mad).clamp_min(floor)


def anomaly_index(values: torch.Tensor | list[float]) -> torch.Tensor:
    """Neural Cleanse's anomaly index per label: ``|x - median| / (1.4826 * median(|x - median|))``.

    Args:
        values: (K,) per-label statistic (e.g. mask L1 norms), K >= 3.

    Returns:
        (K,) float64, >= 0. The median of an even count is the mean of the two middle values (numpy's
        convention, as in the reference code).
    """
    v = _as_vector(values)
    median = _median(v)
    dev = (v - median).abs()
    mad = _median(dev)
    return dev / _scaled(mad, median)


def left_tail_deviation(values: torch.Tensor | list[float]) -> torch.Tensor:
    """DeepInspect's deviation factor with the double-MAD left tail: ``(median - x) / (1.4826 * MAD_left)``.

    ``MAD_left`` is the median absolute deviation of the values at or below the median. Positive for labels
    below the median (the suspicious side), negative above it.

    Args:
        values: (K,) per-label statistic (e.g. perturbation magnitudes), K >= 3.

    Returns:
        (K,) float64.
    """
    v = _as_vector(values)
    median = _median(v)
    left = v[v <= median]
    mad_left = _median((left - median).abs())
    return (median - v) / _scaled(mad_left, median)


def studentized_deviations(x: torch.Tensor) -> torch.Tensor:
    """``(mean of the others - x_k) / sd of the others`` for each entry k along the last dim of ``x`` (..., K),
    K >= 3 (sd with K - 2 degrees of freedom, floored so that identical values give large finite values)."""
    k = x.shape[-1]
    centred = x - x.mean(dim=-1, keepdim=True)  # keeps the sums of squares well conditioned
    others_mean = -centred / (k - 1)  # the others sum to -centred_k
    others_sq = (centred**2).sum(dim=-1, keepdim=True) - centred**2
    var = (others_sq - (k - 1) * others_mean**2) / (k - 2)
    floor = 1e-12 * x.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    return (others_mean - centred) / var.clamp_min(0).sqrt().clamp_min(floor)


def leave_one_out_deviation(values: torch.Tensor | list[float]) -> torch.Tensor:
    """Each label's distance below the other labels in their own standard deviations (Grubbs' studentized
    deviation): ``(mean_{j != k} x_j - x_k) / sd_{j != k} x_j``.

    Args:
        values: (K,) per-label statistic, K >= 3.

    Returns:
        (K,) float64, positive for labels below the others (the suspicious side).
    """
    return studentized_deviations(_as_vector(values))


def _median(v: torch.Tensor) -> torch.Tensor:
    """numpy's median (mean of the two middle values for an even count); torch.median takes the lower one."""
    s = v.sort().values
    n = s.numel()
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def below_median(statistic: torch.Tensor, reached: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) bool: labels whose statistic is below the median of the ``reached`` labels' (all when None)."""
    s = statistic.double()
    counted = torch.ones_like(s, dtype=torch.bool) if reached is None else reached.bool()
    if int(counted.sum()) == 0:
        return torch.zeros_like(counted)
    return counted & (s < _median(s[counted]))


def flagged_labels(
    statistic: torch.Tensor, index: torch.Tensor, cutoff: float, reached: torch.Tensor | None = None
) -> list[int]:
    """Labels below the median of ``statistic`` (over ``reached`` labels) whose ``index`` exceeds ``cutoff``, most
    anomalous first."""
    hits = (below_median(statistic, reached) & (index > cutoff)).nonzero().flatten()
    return [int(i) for i in hits[index[hits].argsort(descending=True)]]


@dataclass(repr=False)
class Verdict:
    """What an inspection concludes about one model.

    Attributes:
        method: ``neural_cleanse``, ``deepinspect`` or ``deepinspect-lite`` (clean data instead of inversion).
        statistic_name: what ``statistic`` measures (``mask L1``, ``perturbation L1``).
        statistic: (K,) per-label trigger size; smaller = easier to reach = more suspicious.
        anomaly_index: (K,) per-label outlier index (>= 0 for NC; DeepInspect's signed deviation factor).
        cutoff: labels below the median with ``anomaly_index > cutoff`` are flagged: the model-level cutoff at
            ``alpha`` under the normal null, or a fixed one (the papers' 2) when the inspector was given one.
        suspected: the flagged labels, most anomalous first; ``infected`` is ``bool(suspected)``.
        alpha: the stated false-alarm rate of the decision for the whole model (None: a fixed per-label cutoff).
        p_values: (K,) per-label p-values, adjusted for the K labels (1 for labels that cannot be flagged).
        p_value: the model's p-value (the smallest label p-value): the chance of a score this high without backdoor.
        null: the law the p-values come from: ``normal`` (i.i.d. normal statistics) or ``reference`` (clean
            reference models, :class:`.null.ReferenceNull`).
        reached: (K,) bool, labels whose reversed trigger reached the label (the only ones the test counts), or
            None when every label counts. Unreached labels have index 0 and p-value 1.
        masks: (K, 1, H, W) reversed trigger masks in [0, 1], or None (DeepInspect: mean |perturbation|).
        patterns: (K, C, H, W) reversed trigger patterns in [0, 1], or None.
        examples: (K, n, C, H, W) clean inputs with each label's reversed trigger stamped, or None.
        seconds: wall time of the inspection.
        details: method-specific extras (per-label success rates, epochs run, ...), tensors or plain data.
    """

    method: str
    statistic_name: str
    statistic: torch.Tensor
    anomaly_index: torch.Tensor
    cutoff: float = DEFAULT_CUTOFF
    suspected: list[int] = field(default_factory=list)
    alpha: float | None = DEFAULT_ALPHA
    p_values: torch.Tensor | None = None
    p_value: float = 1.0
    null: str = "normal"
    reached: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    patterns: torch.Tensor | None = None
    examples: torch.Tensor | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def infected(self) -> bool:
        return bool(self.suspected)

    @property
    def num_classes(self) -> int:
        return int(self.statistic.numel())

    @property
    def below_median(self) -> torch.Tensor:
        """(K,) bool: reached labels whose statistic is below the reached labels' median (the only ones that can
        be flagged)."""
        return below_median(self.statistic, self.reached)

    @property
    def score(self) -> float:
        """Model-level suspicion: the largest anomaly index among labels below the median (0 when none)."""
        below = self.below_median
        return float(self.anomaly_index[below].max()) if below.any() else 0.0

    @property
    def ranking(self) -> list[int]:
        """Labels from the smallest statistic (most suspicious) to the largest, reached labels first."""
        order = [int(i) for i in self.statistic.argsort()]
        if self.reached is None:
            return order
        return [i for i in order if bool(self.reached[i])] + [i for i in order if not bool(self.reached[i])]

    @property
    def unreached(self) -> list[int]:
        """Labels whose reversed trigger never reached the label (reported, never counted as small)."""
        return [] if self.reached is None else [int(i) for i in (~self.reached.bool()).nonzero().flatten()]

    def summary(self) -> dict[str, Any]:
        """Plain data for JSON: the decision, the per-label statistic and index, the run time."""
        return {
            "method": self.method,
            "infected": self.infected,
            "suspected": self.suspected,
            "score": self.score,
            "cutoff": round(self.cutoff, 4),
            "alpha": self.alpha,
            "p_value": round(self.p_value, 6),
            "null": self.null,
            "p_values": None if self.p_values is None else [round(float(v), 6) for v in self.p_values],
            "unreached": self.unreached,
            "statistic_name": self.statistic_name,
            "statistic": [round(float(v), 4) for v in self.statistic],
            "anomaly_index": [round(float(v), 4) for v in self.anomaly_index],
            "seconds": round(self.seconds, 3),
        }

    def __repr__(self) -> str:
        state = f"infected, suspected {self.suspected}" if self.infected else "clean"
        return f"Verdict({self.method}: {state}, score {self.score:.2f}, p {self.p_value:.3g}, {self.seconds:.1f} s)"

    __str__ = __repr__
