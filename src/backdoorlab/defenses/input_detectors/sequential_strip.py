"""Sequential STRIP: STRIP that stops drawing overlays once an input's side of the boundary is settled.

Most inputs are clear after a few perturbed copies: a trojaned input's copies all have near-zero entropy, a clean
input's mean entropy sits far above the boundary. Drawing the N overlays in small rounds and stopping with a
sequential test spends the full N only on inputs near the boundary.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field, PrivateAttr

from ...utils.seeding import make_generator
from ..base import DEFENSES
from .betting import WithoutReplacementMeanTest
from .strip import STRIP


@DEFENSES.register("sequential_strip")
class SequentialSTRIP(STRIP):
    """STRIP with early stopping. ``score(x)`` is the negated running mean entropy at the input's stop.

    ``fit`` is STRIP's (N = ``n_overlays`` copies per clean image, the same boundary b). At run time each input
    draws exactly the overlays STRIP would (same seed, same N pool images), in rounds of ``round_size``; their
    order among the N is uniformly random. Its N copies' entropies are thus a finite population whose mean is full
    STRIP's statistic, sampled without replacement, and two rules stop an input early:

    1. A sequential test by betting (:class:`~.betting.WithoutReplacementMeanTest`, Waudby-Smith & Ramdas) of
       "mean of the N entropies <= b" and of ">= b", entropies in [0, log2 K]. After each round an input whose
       test rejected one side stops on the other. Whatever the entropies, an input stops on the side opposite to
       full STRIP's decision with probability at most ``alpha``: FAR and FRR each move by at most ``alpha`` in
       expectation (a mean exactly at b aside). No normal approximation: the skewed entropies of MNIST broke that.
    2. ``first_round_flag``: after the first round an input is flagged when the largest entropy of its copies is
       below tau. tau is set in ``fit`` on the clean calibration images that full STRIP passes (mean >= b): the
       smallest first-round maximum among them, over ``calibration_orders`` random orders of each image's N copies
       (a lower, so safer, threshold than one order gives), and never above b (so a flagged input's running mean is
       below b too, and nothing is flagged when full STRIP can flag nothing, b <= 0). By exchangeability, a clean
       input that full STRIP would pass is flagged here with probability at most 1 / (n + 1), n the number of such
       calibration images (the calibration copies exclude the image itself from its overlays; the run-time ones
       need not). This rule exists because the test of rule 1 cannot flag early when b is small against log2 K: a
       trojaned input's entropies near 0 are also consistent with a population that hides a few high-entropy
       copies.

    An input that neither rule stops takes all N copies and gets STRIP's decision. The entropy reported for an
    input stopped early is its running mean, moved to the boundary when that lies on the other side of the stop's
    decision (so ``predict`` follows the decision). Defaults are ours: rounds of 10, alpha 0.005 (the issue's
    half-point bound on the added FAR / FRR), 20 calibration orders; the bets are those of
    :class:`~.betting.WithoutReplacementMeanTest`.

    ``overlays_used_`` holds the copies each input of the last ``score`` call drew; ``first_round_tau_`` is tau.
    """

    name: ClassVar[str] = "sequential_strip"

    round_size: int = Field(10, ge=1, description="overlays drawn per input in each round")
    alpha: float = Field(
        0.005,
        gt=0,
        lt=1,
        description="bound on the probability that the betting test stops an input on the side opposite to full "
        "STRIP's decision",
    )
    first_round_flag: bool = Field(
        True, description="flag an input after the first round when all its entropies are below the clean tau"
    )
    calibration_orders: int = Field(
        20, ge=1, le=1000, description="random orders of each clean image's copies over which tau is the minimum"
    )

    _used: torch.Tensor | None = PrivateAttr(None)
    _tau: float = PrivateAttr(0.0)

    @property
    def overlays_used_(self) -> torch.Tensor:
        """Copies (N,) int64 each input of the last ``score`` call drew before it stopped."""
        self._require_fit()
        return self._used if self._used is not None else torch.empty(0, dtype=torch.long)

    @property
    def first_round_tau_(self) -> float:
        """tau (bits): after the first round, inputs whose copies' entropies are all below it are flagged."""
        self._require_fit()
        return self._tau

    def _fit_copies(self, entropies: torch.Tensor) -> None:
        passed = entropies[entropies.mean(dim=1) >= self.boundary_]
        first = min(self.round_size, self.n_overlays)
        if not self.first_round_flag or len(passed) == 0 or first >= self.n_overlays:
            self._tau = 0.0
            return
        gen = make_generator(self._seed + 1)
        tau = math.inf
        for _ in range(self.calibration_orders):
            order = torch.rand(passed.shape, generator=gen).argsort(dim=1)[:, :first]
            tau = min(tau, float(passed.gather(1, order).amax(dim=1).min()))
        # never above the boundary: a flag then also has its running mean below it, and with a boundary <= 0 (full
        # STRIP can flag nothing) nothing is flagged early either
        self._tau = min(tau, self.boundary_)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        cap, boundary = self.n_overlays, self.boundary_
        index = self._overlay_indices(len(x), exclude_self=False)
        most = math.log2(max(2, self._num_outputs))  # the largest entropy of K classes, in bits
        test = WithoutReplacementMeanTest(len(x), cap, boundary, most, alpha=self.alpha)
        flagged = torch.zeros(len(x), dtype=torch.bool)
        decided = torch.zeros(len(x), dtype=torch.bool)
        active = torch.arange(len(x))
        while len(active):
            n0 = int(test.seen[active[0]])
            n1 = min(cap, n0 + self.round_size)
            h = self._entropies_with(x[active], index[active, n0:n1])
            test.update(active, h)
            if n1 >= cap:
                flagged[active] = test.mean(active) < boundary
                break
            flag = test.below[active] & ~test.above[active]
            if n0 == 0:
                flag |= h.amax(dim=1) < self._tau
            stop = flag | (test.above[active] & ~test.below[active])
            flagged[active[flag]] = True
            decided[active[stop]] = True
            active = active[~stop]
        self._used = test.seen.clone()
        entropy = test.mean(torch.arange(len(x)))
        b = torch.tensor(boundary, dtype=torch.float64)
        # ``decided`` marks early stops only: an input that reached the cap got the plain mean's decision
        entropy = torch.where(decided & flagged, entropy.minimum(b - 1e-6 * b.abs().clamp_min(1)), entropy)
        entropy = torch.where(decided & ~flagged, entropy.maximum(b), entropy)
        return -entropy.float()
