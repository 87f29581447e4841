"""Carlini and Wagner's L2 and L0 attacks (IEEE S&P 2017) in torch, as their code (``nn_robust_attacks``) runs them.

The Feature Squeezing study (Xu et al., NDSS 2018) ran Carlini's own TensorFlow code; ART's versions depart from it
(see :mod:`.attacks`). This module follows it, batched: every input has its own constant, bounds, pixel mask and
Adam state, so N inputs cost one forward and one backward pass of N images per iteration.

Shared pieces (pixels in [0, 1], images (N, C, H, W)):

- the change of variables x = (tanh(w) + 1) / 2, started from w = arctanh((2 x - 1) * 0.999999) (Carlini's box
  [-0.5, 0.5] shifted to [0, 1]; the distance is measured to the image tanh(w0) gives, as Carlini's is);
- Adam with TensorFlow's update (learning rate 0.01 by default, beta1 0.9, beta2 0.999, epsilon 1e-8), one step
  counter per input: Adam's per-coordinate step size is what lets pixels at exactly 0 or 1 move, whose gradient the
  tanh scales by about 2e-6;
- the margin loss max(max_{i != t} Z_i - Z_t, -kappa) on logits Z (targeted; untargeted: Z_y - max_{i != y} Z_i),
  and Carlini's success test ``compare``: the logit margin reaches ``confidence``.

:func:`carlini_l2` is ``l2_attack.py``'s ``attack_batch``; :func:`carlini_l0` is ``l0_attack.py``'s
``attack_single`` for all inputs at once. Departures are stated on each function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

TANH_SHRINK = 0.999999  # Carlini: arctanh(x * 1.999999) on [-0.5, 0.5], i.e. (2x - 1) * 0.999999 on [0, 1]


def to_tanh_space(x: torch.Tensor) -> torch.Tensor:
    """w with (tanh(w) + 1) / 2 close to ``x`` in [0, 1]; pixels at 0 or 1 map to about -/+7.25."""
    return torch.atanh((2 * x - 1) * TANH_SHRINK)


def from_tanh_space(w: torch.Tensor) -> torch.Tensor:
    """Pixels (tanh(w) + 1) / 2, in (0, 1)."""
    return (torch.tanh(w) + 1) / 2


def logit_margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """(N,) how far ``logits`` (N, K) are past the decision: targeted, Z_t - max_{i != t} Z_i for targets
    ``labels``; untargeted, max_{i != y} Z_i - Z_y for true labels ``labels``."""
    own = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return own - other if targeted else other - own


class RowAdam:
    """Adam over a tensor (N, ...) with one step counter per row (TensorFlow's update), resettable per row."""

    def __init__(self, like: torch.Tensor, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m, self.v = torch.zeros_like(like), torch.zeros_like(like)
        self.t = torch.zeros(len(like), dtype=like.dtype, device=like.device)

    def reset(self, rows: torch.Tensor) -> None:
        """Forget the moments and step count of ``rows`` (bool (N,) or indices)."""
        self.m[rows], self.v[rows], self.t[rows] = 0, 0, 0

    def step(self, param: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> None:
        """Update ``param[rows]`` in place with ``grad`` (len(rows), ...), the gradient at ``param[rows]``."""
        t = self.t[rows] + 1
        self.t[rows] = t
        m = self.m[rows] * self.beta1 + (1 - self.beta1) * grad
        v = self.v[rows] * self.beta2 + (1 - self.beta2) * grad * grad
        self.m[rows], self.v[rows] = m, v
        shape = (-1,) + (1,) * (grad.ndim - 1)
        lr_t = self.lr * torch.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        param[rows] = param[rows] - lr_t.view(shape) * m / (torch.sqrt(v) + self.eps)


@dataclass
class _Objective:
    """Carlini's loss on a batch: candidate images, their margins, hinge, squared L2 and the gradient in w."""

    images: torch.Tensor
    margin: torch.Tensor
    hinge: torch.Tensor
    l2: torch.Tensor
    grad: torch.Tensor


def _objective(
    model: nn.Module,
    modifier: torch.Tensor,
    start: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor,
    const: torch.Tensor,
    *,
    targeted: bool,
    confidence: float,
    mask: torch.Tensor | None = None,
    original: torch.Tensor | None = None,
) -> _Objective:
    """sum_i ||x'_i - reference_i||^2 + const_i * max(kappa - margin_i, 0) at x' = (tanh(modifier + start) + 1) / 2,
    where ``mask`` (L0: 1 where the pixel may change) keeps ``original`` elsewhere; its gradient w.r.t. ``modifier``."""
    modifier = modifier.detach().requires_grad_(True)
    images = from_tanh_space(modifier + start)
    if mask is not None:
        images = images * mask + (1 - mask) * original
    margin = logit_margin(model(images), labels, targeted)
    hinge = (confidence - margin).clamp(min=0)
    l2 = (images - reference).flatten(1).square().sum(dim=1)
    (grad,) = torch.autograd.grad((l2 + const * hinge).sum(), modifier)
    return _Objective(images.detach(), margin.detach(), hinge.detach(), l2.detach(), grad)


def _check_inputs(x: torch.Tensor, labels: torch.Tensor) -> None:
    if x.ndim != 4 or labels.shape != (len(x),):
        raise ValueError(f"need images (N, C, H, W) and N labels, got {tuple(x.shape)} and {tuple(labels.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("images must be in [0, 1]")


@torch.no_grad()
def carlini_l2(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = True,
    confidence: float = 0.0,
    learning_rate: float = 0.01,
    binary_search_steps: int = 9,
    max_iter: int = 10_000,
    initial_const: float = 1e-3,
    abort_early: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Carlini's L2 attack on ``x`` (N, C, H, W) in [0, 1]; ``labels`` (N,) are targets (or true labels when
    untargeted). Returns (examples (N, C, H, W) in [0, 1], success (N,) bool); failed inputs come back unchanged.

    For each of ``binary_search_steps`` constants: reset w to the input and Adam, run ``max_iter`` Adam steps on
    ||x' - x||^2 + c * max(kappa - margin, 0), and keep per input the smallest-L2 candidate whose margin reaches
    ``confidence``. Then c is bisected between the largest failing and smallest succeeding constant, or multiplied
    by 10 while none has succeeded; with 10 or more steps the last one uses the upper bound (Carlini's ``repeat``).
    Abort early, as Carlini's code: every max_iter // 10 iterations stop when the batch's total loss has not fallen
    below 0.9999 times its previous check. Defaults are Carlini's (confidence 0, lr 0.01, 9 steps, 10000
    iterations, c0 1e-3).
    """
    _check_inputs(x, labels)
    w0 = to_tanh_space(x)
    reference = from_tanh_space(w0)
    n = len(x)
    lower, upper = x.new_zeros(n), x.new_full((n,), 1e10)
    const = x.new_full((n,), float(initial_const))
    best_l2, best = x.new_full((n,), float("inf")), x.clone()
    check_every = max(1, max_iter // 10)
    for step in range(binary_search_steps):
        if binary_search_steps >= 10 and step == binary_search_steps - 1:
            const = upper.clone()
        modifier, adam = torch.zeros_like(x), RowAdam(x, learning_rate)
        succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
        previous = float("inf")
        everyone = torch.arange(n, device=x.device)
        for it in range(max_iter):
            with torch.enable_grad():
                obj = _objective(
                    model, modifier, w0, reference, labels, const, targeted=targeted, confidence=confidence
                )
            adam.step(modifier, obj.grad, everyone)
            if abort_early and it % check_every == 0:
                loss = float((obj.l2 + const * obj.hinge).sum())
                if loss > previous * 0.9999:
                    break
                previous = loss
            ok = obj.margin >= confidence
            succeeded |= ok
            better = ok & (obj.l2 < best_l2)
            best_l2 = torch.where(better, obj.l2, best_l2)
            best[better] = obj.images[better]
        upper = torch.where(succeeded, torch.minimum(upper, const), upper)
        lower = torch.where(succeeded, lower, torch.maximum(lower, const))
        const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
    return best, torch.isfinite(best_l2)


def _pixels_to_fix(change: torch.Tensor, valid: torch.Tensor, changed_pixels: int) -> torch.Tensor:
    """Indices into the flat pixel grid of the pixels Carlini's L0 round fixes, for one input.

    ``change`` (P,) is |sum over channels of the change| * sum over channels of |gradient| per pixel; ``valid``
    (P,) bool the pixels still free. In ascending order of change, free pixels are fixed until one with change
    > 0.01 has been fixed or 0.3 * sqrt(``changed_pixels``) have been (at least one).
    """
    free = valid.nonzero().flatten()
    if len(free) == 0:
        return free
    order = free[torch.argsort(change[free], stable=True)]
    big = (change[order] > 0.01).nonzero().flatten()
    count = max(1, math.ceil(0.3 * changed_pixels**0.5))
    if len(big):
        count = min(count, int(big[0]) + 1)
    return order[:count]


@torch.no_grad()
def carlini_l0(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = True,
    confidence: float = 0.01,
    learning_rate: float = 0.01,
    max_iter: int = 1000,
    initial_const: float = 1e-3,
    largest_const: float = 2e6,
    const_factor: float = 2.0,
    max_total_iter: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Carlini's L0 attack on ``x`` (N, C, H, W) in [0, 1]; ``labels`` (N,) targets (or true labels when
    untargeted). Returns (examples, success (N,) bool); failed inputs come back unchanged.

    Per input, rounds of a restricted L2 attack: only the still-allowed pixels (all channels of a pixel together,
    Carlini's default) may change, starting (in tanh space, Adam reset, modifier 0) from the previous round's
    solution. Within a round, Adam runs up to ``max_iter`` steps per constant, stopping at the first iterate whose
    hinge max(kappa - margin, 0) is below 1e-4 * c, at most 0.01 (that iterate is the solution, as Carlini restores
    the value before the step); without success c is multiplied by ``const_factor`` (modifier and Adam state kept)
    until it reaches ``largest_const``, and the input's answer is the last successful round's solution. After a
    success the pixels with the smallest |change| * |gradient| are removed from the allowed set (see
    :func:`_pixels_to_fix`); c carries over to the next round. Defaults are Carlini's (lr 0.01, 1000 iterations,
    c0 1e-3, largest c 2e6, factor 2); ``confidence`` defaults to his fixed margin 0.01 (the study passed 10).

    Departures: Carlini's success test is hinge < 1e-4 * c without the 0.01 cap; for c > 100 it accepts examples
    short of the margin, and once c passes 1e4 * kappa every iterate, adversarial or not (with the study's
    confidence 10 this made rounds at large c "succeed" on clean-looking images). ``max_total_iter`` (None:
    unlimited) caps the Adam steps per input over all rounds; an input that reaches it keeps its last successful
    solution, as if its next L2 attack had failed.
    """
    _check_inputs(x, labels)
    n = len(x)
    reference = from_tanh_space(to_tanh_space(x))
    valid = x.new_ones(n, 1, *x.shape[2:])
    start = to_tanh_space(x)
    modifier, adam = torch.zeros_like(x), RowAdam(x, learning_rate)
    const = x.new_full((n,), float(initial_const))
    iters = torch.zeros(n, dtype=torch.long, device=x.device)
    total = torch.zeros_like(iters)
    solution, solved = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    active = torch.full((n,), initial_const < largest_const, dtype=torch.bool, device=x.device)
    while bool(active.any()):
        rows = active.nonzero().flatten()
        with torch.enable_grad():
            obj = _objective(
                model,
                modifier[rows],
                start[rows],
                reference[rows],
                labels[rows],
                const[rows],
                targeted=targeted,
                confidence=confidence,
                mask=valid[rows],
                original=x[rows],
            )
        works = obj.hinge < (1e-4 * const[rows]).clamp(max=0.01)
        for k in works.nonzero().flatten().tolist():
            _finish_round(int(rows[k]), obj.images[k], obj.grad[k], x, valid, solution, solved, active)
        won = rows[works]
        start[won] = to_tanh_space(solution[won])
        modifier[won], iters[won] = 0, 0
        adam.reset(won)
        going = ~works
        adam.step(modifier, obj.grad[going], rows[going])
        rows = rows[going]
        iters[rows] += 1
        total[rows] += 1
        climb = rows[iters[rows] >= max_iter]
        const[climb] *= const_factor
        iters[climb] = 0
        active[climb[const[climb] >= largest_const]] = False
        if max_total_iter is not None:
            active[total >= max_total_iter] = False
    return solution, solved


def _finish_round(
    i: int,
    image: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    valid: torch.Tensor,
    solution: torch.Tensor,
    solved: torch.Tensor,
    active: torch.Tensor,
) -> None:
    """Input ``i``'s restricted L2 attack succeeded with ``image`` (C, H, W) and loss gradient ``grad``: record the
    solution and fix the pixels Carlini's rule picks; stop the input when no pixel was left to fix."""
    solution[i], solved[i] = image, True
    if not bool(valid[i].any()):
        solution[i] = x[i]  # Carlini returns the input itself when nothing may change and it still succeeds
        active[i] = False
        return
    diff = image - x[i]
    changed = int((diff.abs() >= 1e-4).any(dim=0).sum())
    change = (diff.sum(dim=0).abs() * grad.abs().sum(dim=0)).flatten()
    flat = valid[i, 0].flatten()
    flat[_pixels_to_fix(change, flat > 0, changed)] = 0
    valid[i, 0] = flat.view(valid.shape[2:])
