"""Model-level decisions at a stated false-alarm rate ``alpha``: the null laws of the inspectors' outlier tests.

The papers' rule (anomaly index > 2 for some label below the median) is a per-label test: with K labels and no
backdoor, some label crosses 2 in about 33% of models at K = 10 and 63% at K = 43 (field.md section 6). This
module gives the decision for the whole model instead.

**Normal null** (:func:`null_maxima`, the default). Assumption: in a model without a backdoor the K per-label
statistics are i.i.d. normal. Both indices (:func:`.verdict.anomaly_index`, :func:`.verdict.left_tail_deviation`)
are invariant to the location and scale of the statistic, so their law under that assumption depends on K alone.
The law of the model score (the largest index among labels below the median) is simulated once per (index, K)
with a fixed seed and cached in memory; the cutoff at ``alpha`` is its ``1 - alpha`` quantile (about 3.9 at K = 10
for Neural Cleanse's index, not 2), the model's p-value the fraction of null scores at or above its score, and a
label's p-value the same fraction at or above the label's own index (the single-step max-T adjustment: a label is
flagged iff its p-value is at most ``alpha``, and the chance that a clean model has any flagged label is
``alpha``). The assumption fails where some class is easy to reach in every clean model of a task (class bias):
then use the reference null.

**Reference null** (:class:`ReferenceNull`): each label's statistic compared with the same label's in ``R >= 2``
clean reference models that the defender trained itself on its own clean data. Per model the statistic becomes a
profile ``log s_k - median_j log s_j`` (model-wide scale removed); per label, the reference profiles give a mean
and all of them a pooled standard deviation (``K (R - 1)`` degrees of freedom). The score of label k is Student's
``t = (mean_k - profile_k) / (sd * sqrt(1 + 1/R))`` (positive: smaller than that label usually is), its one-sided
p-value is multiplied by K (Bonferroni over labels) and the model's p-value is the smallest label p-value.

Several inspectors in one decision: :func:`combine_p_values` (Bonferroni, weighted by :func:`alpha_shares`: the
model is flagged when some inspector's p-value is at most its share of ``alpha``; valid whatever their dependence).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ...errors import ConfigError
from .verdict import (
    DEFAULT_ALPHA,
    MAD_CONSISTENCY,
    Verdict,
    anomaly_index,
    below_median,
    flagged_labels,
    leave_one_out_deviation,
    left_tail_deviation,
    studentized_deviations,
)

IndexKind = Literal["mad", "left_tail", "loo"]
IndexScale = Literal["linear", "log"]
NULL_DRAWS = 100_000  # p-values resolve to 1e-5; the 0.95 quantile to about +-0.02
NULL_SEED = 20_190_519
_CHUNK = 25_000


def _row_median(s: torch.Tensor) -> torch.Tensor:
    """numpy's median of each row of the row-sorted ``s`` (N, K) -> (N, 1)."""
    n = s.shape[1]
    return s[:, n // 2 : n // 2 + 1] if n % 2 else (s[:, n // 2 - 1 : n // 2] + s[:, n // 2 : n // 2 + 1]) / 2


def batched_scores(x: torch.Tensor, kind: IndexKind) -> torch.Tensor:
    """Model score (largest index among labels below the median, 0 when none) of each row of ``x`` (N, K).

    The batched twin of :func:`.verdict.anomaly_index` (``mad``), :func:`.verdict.left_tail_deviation`
    (``left_tail``) and :func:`.verdict.leave_one_out_deviation` (``loo``) for rows without ties (continuous
    draws)."""
    s = x.sort(dim=1).values
    median = _row_median(s)
    below = median - s  # >= 0 on the left half
    if kind == "loo":
        index = studentized_deviations(s)
    else:
        if kind == "mad":
            mad = _row_median((s - median).abs().sort(dim=1).values)
        else:
            left = (s.shape[1] + 1) // 2  # values at or below the median (no ties)
            mad = _row_median(below[:, :left].flip(1))
        index = below / (MAD_CONSISTENCY * mad)
    return torch.where(s < median, index, torch.zeros_like(index)).max(dim=1).values.clamp_min(0)


@functools.lru_cache(maxsize=64)
def null_maxima(kind: IndexKind, k: int, draws: int = NULL_DRAWS, seed: int = NULL_SEED) -> torch.Tensor:
    """Sorted (draws,) model scores of K i.i.d. standard-normal statistics (cached per kind, K, draws, seed)."""
    if k < 3:
        raise ConfigError(f"the MAD outlier test needs at least 3 labels, got {k}")
    gen = torch.Generator().manual_seed(seed + 1_000 * k + {"mad": 0, "left_tail": 1, "loo": 2}[kind])
    parts = [
        batched_scores(torch.randn(min(_CHUNK, draws - i), k, generator=gen, dtype=torch.float64), kind)
        for i in range(0, draws, _CHUNK)
    ]
    return torch.cat(parts).sort().values


def null_cutoff(kind: IndexKind, k: int, alpha: float) -> float:
    """The model-level cutoff: a clean model's score exceeds it with probability ``alpha`` (normal null)."""
    null = null_maxima(kind, k)
    rank = math.ceil((1 - alpha) * (len(null) + 1)) - 1
    return float(null[min(max(rank, 0), len(null) - 1)])


def tail_p_values(kind: IndexKind, k: int, values: torch.Tensor) -> torch.Tensor:
    """``(1 + #{null scores >= v}) / (draws + 1)`` for each value ``v`` (any shape), float64."""
    null = null_maxima(kind, k)
    v = torch.as_tensor(values, dtype=torch.float64)
    at_least = len(null) - torch.searchsorted(null, v.flatten(), right=False)
    return ((1 + at_least).double() / (len(null) + 1)).view(v.shape)


def alpha_shares(names: Sequence[str], weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each test's share of ``alpha`` in a weighted Bonferroni decision: ``w_i / sum w`` (weight 1 for names not
    in ``weights``; equal shares when ``weights`` is None). The shares sum to 1."""
    if not names:
        raise ConfigError("no inspector to share alpha between")
    raw = {name: float((weights or {}).get(name, 1.0)) for name in names}
    total = sum(raw.values())
    return {name: w / total for name, w in raw.items()}


def combine_p_values(p_values: Sequence[float], shares: Sequence[float] | None = None) -> float:
    """(Weighted) Bonferroni's combination of several tests of one model: ``min(1, min_i p_i / share_i)``, which
    is ``min(1, m * min p)`` for equal shares (None). The model is flagged at ``alpha`` iff some test's p-value is
    at most its share of ``alpha``; valid whatever the tests' dependence."""
    return min(1.0, uncapped_combination(p_values, shares))


def uncapped_combination(p_values: Sequence[float], shares: Sequence[float] | None = None) -> float:
    """``min_i p_i / share_i`` before the cap at 1 (equal shares when None): a model score that still orders
    models whose combined p-value is 1."""
    if not p_values:
        raise ConfigError("no inspector p-value to combine")
    shares = [1 / len(p_values)] * len(p_values) if shares is None else list(shares)
    if len(shares) != len(p_values) or min(shares) <= 0:
        raise ConfigError(f"{len(p_values)} p-values need as many positive shares, got {shares}")
    return min(float(p) / w for p, w in zip(p_values, shares, strict=True))


def _t_sf(t: torch.Tensor, df: int) -> torch.Tensor:
    """Upper tail of Student's t with ``df`` degrees of freedom (scipy's ``t.sf``)."""
    from scipy.stats import t as student

    return torch.as_tensor(student.sf(t.numpy(), df), dtype=torch.float64)


def profile(statistic: torch.Tensor) -> torch.Tensor:
    """``log s - median(log s)`` of a per-label statistic (K,): the label profile the reference null compares."""
    logs = torch.as_tensor(statistic, dtype=torch.float64).clamp_min(1e-12).log()
    return logs - logs.median()


@dataclass(frozen=True)
class ReferenceNull:
    """Per-label reference law from the statistics of ``R >= 2`` clean models the defender trained itself.

    Build it with :meth:`from_statistics`; :meth:`p_values` gives each label's Bonferroni-adjusted p-value for a
    model under inspection (see the module docstring)."""

    mean: torch.Tensor  # (K,) mean reference profile per label
    sd: float  # pooled standard deviation of the reference profiles
    count: int  # R

    @classmethod
    def from_statistics(cls, statistics: Sequence[torch.Tensor]) -> ReferenceNull:
        if len(statistics) < 2:
            raise ConfigError(f"the reference null needs at least 2 clean reference models, got {len(statistics)}")
        profiles = torch.stack([profile(s) for s in statistics])
        r, k = profiles.shape
        mean = profiles.mean(dim=0)
        sd = float(((profiles - mean) ** 2).sum() / (k * (r - 1))) ** 0.5
        return cls(mean, max(sd, 1e-6), r)

    @property
    def degrees_of_freedom(self) -> int:
        return int(self.mean.numel() * (self.count - 1))

    def scores(self, statistic: torch.Tensor) -> torch.Tensor:
        """(K,) t scores: how much smaller each label's statistic is than that label's in the reference models."""
        p = profile(statistic)
        if p.numel() != self.mean.numel():
            raise ConfigError(f"the reference models have {self.mean.numel()} labels, the model {p.numel()}")
        return (self.mean - p) / (self.sd * (1 + 1 / self.count) ** 0.5)

    def p_values(self, statistic: torch.Tensor) -> torch.Tensor:
        """(K,) Bonferroni-adjusted one-sided p-values (the model's p-value is their minimum)."""
        k = self.mean.numel()
        return (k * _t_sf(self.scores(statistic), self.degrees_of_freedom)).clamp(max=1.0)


INDEX_FUNCTIONS = {"mad": anomaly_index, "left_tail": left_tail_deviation, "loo": leave_one_out_deviation}


@dataclass(frozen=True)
class Decision:
    """An outlier test's outcome for one model: (K,) index and adjusted p-values, the model's p-value, the cutoff
    used and the flagged labels (most anomalous first)."""

    index: torch.Tensor
    p_values: torch.Tensor
    p_value: float
    cutoff: float
    suspected: list[int]


def scaled_statistic(statistic: torch.Tensor, scale: IndexScale) -> torch.Tensor:
    """The per-label statistic (K,) on the scale the outlier index is taken on: as it is (``linear``) or its
    natural logarithm (``log``; sizes below 1e-12 count as 1e-12), float64."""
    s = torch.as_tensor(statistic, dtype=torch.float64).flatten()
    return s.clamp_min(1e-12).log() if scale == "log" else s


def decide(
    statistic: torch.Tensor,
    kind: IndexKind,
    alpha: float,
    *,
    cutoff: float | None = None,
    reached: torch.Tensor | None = None,
    scale: IndexScale = "linear",
) -> Decision:
    """The normal-null test of a per-label ``statistic`` (K,), counting only the ``reached`` labels (all when None).

    ``cutoff`` None: the model-level cutoff at ``alpha`` for the number of counted labels; a number: that fixed
    per-label cutoff (the papers' 2). Fewer than 3 counted labels: no test (index 0, p-values 1, nothing flagged).
    ``scale``: the index of the statistic itself (``linear``, the papers') or of its logarithm (``log``: the null
    then assumes i.i.d. log-normal sizes, the reference null's scale).
    """
    s = scaled_statistic(statistic, scale)
    counted = torch.ones_like(s, dtype=torch.bool) if reached is None else reached.bool().flatten()
    k = int(counted.sum())
    index, p_values = torch.zeros_like(s), torch.ones_like(s)
    if k < 3:
        return Decision(index, p_values, 1.0, float("inf") if cutoff is None else cutoff, [])
    index[counted] = INDEX_FUNCTIONS[kind](s[counted])
    low = below_median(s, counted)
    p_values[low] = tail_p_values(kind, k, index[low])
    used = null_cutoff(kind, k, alpha) if cutoff is None else float(cutoff)
    return Decision(index, p_values, float(p_values.min()), used, flagged_labels(s, index, used, counted))


def decide_reference(
    statistic: torch.Tensor, reference: ReferenceNull, alpha: float, *, reached: torch.Tensor | None = None
) -> Decision:
    """The reference-null test: labels whose adjusted p-value is at most ``alpha`` are flagged (unreached labels
    get p-value 1); the index is the t score of :meth:`ReferenceNull.scores`."""
    s = torch.as_tensor(statistic, dtype=torch.float64).flatten()
    index = reference.scores(s)
    p_values = reference.p_values(s)
    if reached is not None:
        p_values = torch.where(reached.bool(), p_values, torch.ones_like(p_values))
    hits = (p_values <= alpha).nonzero().flatten()
    suspected = [int(i) for i in hits[p_values[hits].argsort()]]
    return Decision(index, p_values, float(p_values.min()), _t_cutoff(alpha / len(s), reference), suspected)


def _t_cutoff(level: float, reference: ReferenceNull) -> float:
    """The t score whose one-sided p-value is ``level`` (the reference test's cutoff on its index)."""
    from scipy.stats import t as student

    return float(student.isf(level, reference.degrees_of_freedom))


def apply_reference(verdict: Verdict, reference: ReferenceNull, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """``verdict`` decided again under the reference null (a new Verdict; the statistic and evidence are kept)."""
    d = decide_reference(verdict.statistic, reference, alpha, reached=verdict.reached)
    return dataclasses.replace(
        verdict,
        anomaly_index=d.index,
        cutoff=d.cutoff,
        suspected=d.suspected,
        alpha=alpha,
        p_values=d.p_values,
        p_value=d.p_value,
        null="reference",
    )
