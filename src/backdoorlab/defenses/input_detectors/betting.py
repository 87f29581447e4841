"""A sequential test of whether a finite population's mean lies below or above a boundary, from draws without
replacement: testing by betting (Waudby-Smith & Ramdas, "Estimating means of bounded random variables by
betting", JRSS-B 2024, section 6 for sampling without replacement).

Sequential STRIP uses it to decide, after a few of an input's N perturbed copies, on which side of the boundary the
mean entropy of all N copies (full STRIP's statistic) lies. Many populations are tested at once, one per row.
"""

from __future__ import annotations

import math

import torch


class WithoutReplacementMeanTest:
    """Two one-sided tests per row of the mean mu of a population of ``size`` values in [0, ``upper``].

    The values arrive in a uniformly random order without replacement (each row its own population). Testing
    H_low: mu <= ``boundary`` bets that the next value exceeds the mean the remaining values would need if
    mu = boundary, m_t = (size * boundary - S_{t-1}) / (size - t + 1); the wealth K_t = prod(1 + lambda_i (x_i - m_i))
    is then a nonnegative supermartingale under H_low, so by Ville's inequality it ever reaches 1 / ``alpha`` with
    probability at most ``alpha``. ``above`` marks rows where it did (mu > boundary is accepted). H_high: mu >= boundary
    mirrors it (bets 1 + lambda (m_t - x_t)) and sets ``below``. When m_t leaves [0, upper] the hypothesis is
    impossible given the values seen, and it is rejected outright (a mean exactly at the boundary counts as above).
    The guarantee needs no assumption on the values' distribution beyond their range and the random order: a row
    gets the wrong mark with probability <= ``alpha``.

    Bets (ours, any predictable choice keeps the guarantee): the predictable plug-in of Waudby-Smith & Ramdas,
    lambda_t = sqrt(2 ln(1 / alpha) / (var t ln(1 + t))), on the side the running mean (with one pseudo-value at the
    boundary) points to, var and that mean taken from the values before the current ``update`` call (so a round of
    values is bet on at once, vectorised), capped at ``cap`` / m_t (H_low) or ``cap`` / (upper - m_t) (H_high) so
    that no single value can take more than that share of the wealth; var is the running variance with a prior of
    ``prior_var`` (weight one value).
    """

    def __init__(
        self,
        rows: int,
        size: int,
        boundary: float,
        upper: float,
        *,
        alpha: float = 0.005,
        cap: float = 0.5,
        prior_var: float = 0.25,
    ) -> None:
        if not (0 < alpha < 1 and 0 < cap < 1 and upper > 0 and size >= 1 and prior_var > 0):
            raise ValueError("need 0 < alpha < 1, 0 < cap < 1, upper > 0, size >= 1 and prior_var > 0")
        self.size, self.boundary, self.upper = size, float(boundary), float(upper)
        self.alpha, self.cap, self.prior_var = alpha, cap, prior_var
        f64 = torch.float64
        self.seen = torch.zeros(rows, dtype=torch.long)
        self.total = torch.zeros(rows, dtype=f64)
        self.squares = torch.zeros(rows, dtype=f64)
        self._log_wealth_low = torch.zeros(rows, dtype=f64)
        self._log_wealth_high = torch.zeros(rows, dtype=f64)
        self.above = torch.zeros(rows, dtype=torch.bool)  # H_low rejected: the population mean exceeds the boundary
        self.below = torch.zeros(rows, dtype=torch.bool)  # H_high rejected: it is below the boundary

    def update(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Feed ``values`` (len(rows), k), the next k draws of each of ``rows`` (int64 indices), in their order.
        Every row of one call must have seen the same number of values so far."""
        values = values.to(torch.float64)
        if len(rows) == 0 or values.shape[1] == 0:
            return
        t0, k = int(self.seen[rows[0]]), values.shape[1]
        if t0 + k > self.size:
            raise ValueError(f"more than size={self.size} draws fed to a row")
        total, squares = self.total[rows], self.squares[rows]
        before = total[:, None] + values.cumsum(dim=1) - values  # sum of the values preceding each one
        seen = t0 + torch.arange(k, dtype=torch.float64)  # values before each one
        need = (self.size * self.boundary - before) / (self.size - seen)  # m_t, (rows, k)
        lam_low, lam_high = self._bets(total, squares, t0, seen, need)
        low = self._log_wealth_low[rows, None] + torch.log1p(lam_low * (values - need)).cumsum(dim=1)
        high = self._log_wealth_high[rows, None] + torch.log1p(lam_high * (need - values)).cumsum(dim=1)
        threshold = math.log(1 / self.alpha)
        total = total + values.sum(dim=1)
        # a hypothesis that the values seen already rule out is rejected without betting
        gap = self.size * self.boundary - total  # what the values not yet seen must add up to
        left = self.size - t0 - k
        self.above[rows] |= (low.amax(dim=1) >= threshold) | (gap <= 0)
        self.below[rows] |= (high.amax(dim=1) >= threshold) | (gap > left * self.upper)
        self.seen[rows] = t0 + k
        self.total[rows], self.squares[rows] = total, squares + (values * values).sum(dim=1)
        self._log_wealth_low[rows], self._log_wealth_high[rows] = low[:, -1], high[:, -1]

    def mean(self, rows: torch.Tensor) -> torch.Tensor:
        """Running mean (len(rows),) float64 of the values seen."""
        return self.total[rows] / self.seen[rows].clamp_min(1)

    def _bets(
        self, total: torch.Tensor, squares: torch.Tensor, t0: int, seen: torch.Tensor, need: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bets (rows, k) on the k values of one update, from the rows' sums (rows,) over the t0 values before it
        (the same variance and direction for the whole update, so they stay predictable); ``seen`` (k,)."""
        centred = (squares - total * total / t0).clamp_min(0) if t0 else torch.zeros_like(total)
        var = ((self.prior_var + centred) / (t0 + 1))[:, None]
        t = seen + 1
        size = torch.sqrt(2 * math.log(1 / self.alpha) / (var * t * torch.log1p(t)))
        guess = ((total + self.boundary) / (t0 + 1))[:, None]
        zero = torch.zeros_like(size)
        lam_low = torch.where(guess > need, size, zero)
        lam_high = torch.where(guess < need, size, zero)
        # caps keep every factor 1 + lambda (...) >= 1 - cap > 0 for values in [0, upper]
        lam_low = torch.minimum(lam_low, self.cap / need.clamp_min(1e-12)).where(need > 0, zero)
        room = (self.upper - need).clamp_min(1e-12)
        lam_high = torch.minimum(lam_high, self.cap / room).where(need < self.upper, zero)
        return lam_low, lam_high
