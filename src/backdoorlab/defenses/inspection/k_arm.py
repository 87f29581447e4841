"""K-Arm (Shen, Liu, Tao, An, Xu, Cheng, Ma, Zhang, ICML 2021): Neural Cleanse's per-label trigger optimisation
scheduled as a multi-armed bandit, so that the optimisation steps go to the labels most likely to hold the smallest
trigger instead of to every label until it converges.

Read from PurduePAML/K-ARM_Backdoor_Optimization (``Arm_Pre_Screening.py``, ``K_Arm_Scanner.py``, ``main.py``):

1. **Pre-screening** (:func:`topk_frequency`): the fraction of clean images whose top-k softmax outputs
   (k = round(gamma * K), 2 when K <= 8) contain each label; a backdoor target is lifted on clean inputs. The
   reference keeps a single global candidate when some label reaches ``global_theta`` = 0.95 of the images, and
   declares the model benign when no label (or label pair, ``local_theta`` 0.9) passes. On our models no label
   comes near (digits BadNets: the target is in 37% of the top-2s, the most of any label), so here the frequency
   orders the arms and ``arms`` may keep only the most frequent labels; by default all are kept.
2. **Arms** (:class:`BanditScheduler`): one per kept label, each with its own mask, pattern, Adam and Neural
   Cleanse cost schedule (:class:`.neural_cleanse.CostSchedule`, with K-Arm's variant: the cost is set after 2
   successes and lowered by ``cost_multiplier`` itself). A *pull* optimises one arm for ``batches_per_epoch``
   mini-batches. Warm-up: an arm is pulled until its mask has improved ``warmup_rounds`` times (reached the
   attack success threshold with a smaller L1) with the cost on (ours: improvements at cost 0 do not shrink the
   mask, so they would compare nothing), then the next arm is warmed up.
3. **Scheduling**: once every arm is warmed up, after each improvement the next arm is, with probability
   ``epsilon``, a random one, else ``argmax_t velocity_t + beta / L1_t`` where ``velocity_t = (L1_init - L1_t) /
   (improvements_t + pulls_t / 2)`` (the reference's 2500 is its initial 50x50 mask's L1; ours is each arm's
   initial mask's L1); without an improvement the same arm is pulled again. An arm stops when Neural Cleanse's
   early-stop rule holds for it (cost went up and down, best L1 stale for ``early_stop_patience`` pulls) or after
   ``rounds`` improvements. The scan stops when the ``quorum`` arms with the smallest L1 have all stopped so. The
   reference stops when the smallest one has (``quorum`` 1); then the other arms keep the large L1 of a short
   warm-up, which inflates the median of the outlier test and flags clean models (measured on digits: a clean
   model flagged at p = 0.002). Our default, half the arms plus one, pins the median with converged arms, and
   arms left early only lengthen the upper tail (a larger MAD: a conservative index). Arms that cannot reach
   their label are given up by the reference's rules (best success < 0.3 after 20 pulls, < 0.8 after 200, 0
   after 10).

The decision departs from the reference (absolute trigger-size bounds tuned on TrojAI's 224x224 models, and a
symmetric check for label-specific triggers, which are not scanned here): the per-label best mask L1 goes through
the same MAD index and model-level ``alpha`` decision as Neural Cleanse (:mod:`.null`); labels dropped by
pre-screening are not counted (reported as ``Verdict.unreached``). ``details`` holds the steps spent per label,
their total, the pull sequence, the arms and the top-k frequencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from ...utils.progress import track
from ...utils.seeding import make_generator
from ..base import DEFENSES
from .base import Inspector, Reversal, from_unit, to_unit
from .neural_cleanse import CostSchedule, stamp_all

REFERENCE_AREA = 224 * 224  # the reference's beta is in pixels of 224x224 TrojAI images


def screen_k(num_classes: int, gamma: float) -> int:
    """The reference's top-k size: 2 when K <= 8, else ``round(gamma * K)`` (Python's rounding), at least 1."""
    return 2 if num_classes <= 8 else max(1, round(num_classes * gamma))


@torch.no_grad()
def topk_frequency(
    model: nn.Module, x: torch.Tensor, num_classes: int, k: int, device: torch.device, batch: int = 512
) -> torch.Tensor:
    """(K,) fraction of the images ``x`` (N, C, H, W) whose top-``k`` outputs contain each label (float64)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(0, len(x), batch):
        top = model(x[i : i + batch].to(device)).topk(k, dim=1).indices.cpu()
        counts += torch.bincount(top.flatten(), minlength=num_classes).double()
    return counts / len(x)


@dataclass
class BanditScheduler:
    """K-Arm's choice of the next arm to pull, as plain state over A arms (``K_Arm_Scanner.scanning``).

    Call :meth:`record` after each pull, then :meth:`next_arm`, which returns the arm to pull next or None when
    the scan is over. ``first_reg`` (A,) holds each arm's initial mask L1; ``beta`` is in pixels of mask.
    """

    first_reg: torch.Tensor
    warmup_rounds: int
    rounds: int
    epsilon: float
    beta: float
    quorum: int
    gen: torch.Generator
    improvements: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        a = len(self.first_reg)
        self.improvements = torch.zeros(a, dtype=torch.long)  # the reference's ``times``
        self.pulls = torch.zeros(a, dtype=torch.long)  # ``total_times``
        self.best = torch.full((a,), math.inf, dtype=torch.float64)
        self.last = torch.full((a,), math.inf, dtype=torch.float64)
        self.velocity = torch.full((a,), -math.inf, dtype=torch.float64)
        self.converged = torch.zeros(a, dtype=torch.bool)
        self.best_success = torch.zeros(a, dtype=torch.float64)
        self.stopped = torch.zeros(a, dtype=torch.bool)
        self.exploiting = False

    def record(self, arm: int, l1: float, success: float, improved: bool) -> None:
        """One pull of ``arm``: its end-of-pull mask L1, success rate, and whether its best mask improved."""
        self.pulls[arm] += 1
        self.last[arm] = l1
        self.best_success[arm] = max(float(self.best_success[arm]), success)
        if improved:
            self.improvements[arm] += 1
            self.best[arm] = l1
            effort = float(self.improvements[arm]) + float(self.pulls[arm]) / 2
            self.velocity[arm] = (float(self.first_reg[arm]) - l1) / effort

    def objective(self) -> torch.Tensor:
        """(A,) ``velocity + beta / L1`` of the live arms (-inf for stopped ones)."""
        score = self.velocity + self.beta / self.last.clamp_min(1e-12)
        return torch.where(self.stopped, torch.full_like(score, -math.inf), score)

    def quorum_met(self) -> bool:
        """Whether the ``quorum`` arms with the smallest best L1 have all converged (never-reached arms last)."""
        return bool(self.converged[self.best.argsort(stable=True)[: self.quorum]].all())

    def _gave_up(self, arm: int) -> bool:
        p, s = int(self.pulls[arm]), float(self.best_success[arm])
        return (p > 20 and s < 0.3) or (p > 200 and s < 0.8) or (p > 10 and s == 0)

    def _random_live(self) -> int:
        live = (~self.stopped).nonzero().flatten()
        return int(live[torch.randint(len(live), (1,), generator=self.gen)])

    def next_arm(self, arm: int, improved: bool, converged: bool) -> int | None:
        """The arm to pull after ``arm`` (``converged``: its cost schedule's early-stop rule holds), or None."""
        if self._gave_up(arm):
            self.stopped[arm] = True
        if self.exploiting and (converged or int(self.improvements[arm]) > self.rounds):
            self.stopped[arm] = self.converged[arm] = True
        live = ~self.stopped
        if not live.any() or self.quorum_met():
            return None
        cold = (live & (self.improvements < self.warmup_rounds)).nonzero().flatten()
        if self.stopped[arm]:
            return int(cold[0]) if len(cold) else self._random_live()
        if not improved or int(self.improvements[arm]) < self.warmup_rounds:
            return arm
        if len(cold):
            return int(cold[0])
        self.exploiting = True
        if float(torch.rand(1, generator=self.gen)) < self.epsilon and int(live.sum()) > 1:
            return self._random_live()
        return int(self.objective().argmax())


@DEFENSES.register("k_arm")
class KArm(Inspector):
    """K-Arm: top-k pre-screening and bandit-scheduled Neural Cleanse optimisation, MAD decision at ``alpha``.

    Defaults are the reference's (``main.py``) except: a pull is ``batches_per_epoch`` = 4 mini-batches of 32
    (the reference's pull is one pass over the label's example images; 4 is our Neural Cleanse's epoch), the best
    mask is judged by its L1 at the end of the pull (the reference: the pull's mean L1; as our Neural Cleanse),
    ``beta`` is given at the reference's 224x224 and scaled by a^2 (a = H*W / 224^2, the area ratio: velocities
    scale with a and 1 / L1 with 1 / a, so both terms of the objective keep their proportion),
    ``arms`` None keeps every label, ``quorum`` (see the module docstring), and the give-up rules, which the
    reference applies to label-specific arms only, apply to every arm here.
    """

    name: ClassVar[str] = "k_arm"
    statistic_name: ClassVar[str] = "mask L1"

    lr: float = Field(0.1, gt=0, le=10, description="learning rate of each arm's Adam on its tanh-parametrised trigger")
    betas: tuple[float, float] = Field((0.5, 0.9), description="Adam's betas")
    init_cost: float = Field(
        1e-3, gt=0, description="weight of the mask's L1 once an arm's trigger has reached the threshold twice"
    )
    attack_success_threshold: float = Field(
        0.99, gt=0, le=1, description="success rate on clean images a pull must reach to count as an improvement"
    )
    patience: int = Field(5, ge=1, description="pulls of success (or failure) before an arm's cost goes up (or down)")
    cost_multiplier: float = Field(1.5, gt=1, description="factor an arm's cost is raised and lowered by")
    early_stop_threshold: float = Field(
        1.0, gt=0, le=1, description="an arm's best L1 must fall below this times its previous best to count"
    )
    early_stop_patience: int = Field(
        10, ge=1, description="pulls without such improvement (after the cost went up and down) that stop an arm"
    )
    gamma: float = Field(0.25, gt=0, le=1, description="pre-screening: top-k with k = round(gamma * K) (2 if K <= 8)")
    arms: int | None = Field(
        None,
        ge=3,
        description="pre-screening: labels kept as arms, the most frequent in the clean images' top-k first; None "
        "keeps all (dropped labels are not optimised and not counted in the outlier test)",
    )
    warmup_rounds: int = Field(2, ge=1, description="improvements each arm makes before the bandit chooses")
    rounds: int = Field(60, ge=1, description="improvements after which an arm stops")
    epsilon: float = Field(0.3, ge=0, le=1, description="chance that the bandit pulls a random live arm")
    beta: float = Field(1e4, ge=0, description="weight of 1 / L1 in the bandit objective, at 224x224 (scaled by a^2)")
    quorum: int | None = Field(
        None,
        ge=1,
        description="arms with the smallest L1 that must converge before the scan stops; None: half the arms plus "
        "one, enough to pin the median of the outlier test (1 is the reference's rule)",
    )
    max_pulls: int = Field(1000, ge=1, description="cap on the pulls of the whole scan (the reference's step)")
    batch_size: int = Field(32, ge=1, le=4096, description="clean images per optimisation step")
    batches_per_epoch: int = Field(4, ge=1, description="optimisation steps per pull")
    examples: int = Field(
        4, ge=0, le=64, description="clean images stamped with each reversed trigger, kept for the report"
    )

    def _schedule(self) -> CostSchedule:
        return CostSchedule(
            self.init_cost,
            self.patience,
            self.cost_multiplier,
            self.early_stop_threshold,
            self.early_stop_patience,
            set_after=2,
            down_exponent=1.0,
        )

    def _reverse(self, model, clean, input_shape, num_classes, *, seed, device, progress) -> Reversal:
        assert clean is not None
        c, h, w = input_shape
        gen = make_generator(seed)  # the same initial triggers and data seed as Neural Cleanse's for this seed
        masks = torch.rand(num_classes, 1, h, w, generator=gen)
        patterns = torch.rand(num_classes, c, h, w, generator=gen)
        data_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        frequency = topk_frequency(model, clean.x, num_classes, screen_k(num_classes, self.gamma), device)
        order = frequency.argsort(descending=True, stable=True)
        labels = order[: self.arms or num_classes]
        area = h * w / REFERENCE_AREA
        bandit = BanditScheduler(
            masks[labels].flatten(1).sum(dim=1).double(),
            self.warmup_rounds,
            self.rounds,
            self.epsilon,
            self.beta * area**2,
            min(len(labels), self.quorum or len(labels) // 2 + 1),
            make_generator(data_seed + 1),
        )
        best_mask, best_pattern, sequence = self._scan(
            model, clean.x, labels, masks[labels], patterns[labels], bandit, data_seed, device, progress
        )
        masks[labels], patterns[labels] = best_mask, best_pattern
        statistic = torch.full((num_classes,), float(h * w), dtype=torch.float64)
        found = torch.isfinite(bandit.best)
        statistic[labels] = torch.where(found, bandit.best, best_mask.flatten(1).sum(dim=1).double())
        kept = torch.zeros(num_classes, dtype=torch.bool)
        kept[labels] = True
        steps = torch.zeros(num_classes, dtype=torch.long)
        steps[labels] = bandit.pulls * self.batches_per_epoch
        reached = torch.zeros(num_classes, dtype=torch.bool)
        reached[labels] = found
        x = clean.x[: self.examples]
        return Reversal(
            statistic=statistic,
            reached=kept,
            masks=masks,
            patterns=patterns,
            examples=stamp_all(x, masks, patterns) if self.examples else None,
            details={
                "reached_threshold": reached,
                "steps": steps,
                "optimisation_steps": int(steps.sum()),
                "topk_frequency": frequency,
                "arms": [int(t) for t in labels],
                "pull_sequence": [int(labels[a]) for a in sequence],
            },
        )

    def _scan(
        self,
        model: nn.Module,
        pool: torch.Tensor,
        labels: torch.Tensor,
        mask0: torch.Tensor,
        pattern0: torch.Tensor,
        bandit: BanditScheduler,
        data_seed: int,
        device: torch.device,
        progress: bool | None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Pull arms (labels (A,), initial masks (A, 1, H, W) and patterns (A, C, H, W)) as ``bandit`` chooses.

        Returns the best masks and patterns (the last ones for arms that never reached the threshold), on the CPU,
        and the sequence of pulled arm indices."""
        w_mask = [from_unit(m[None]).to(device).requires_grad_(True) for m in mask0]
        w_pattern = [from_unit(p[None]).to(device).requires_grad_(True) for p in pattern0]
        opts = [
            torch.optim.Adam([wm, wp], lr=self.lr, betas=self.betas) for wm, wp in zip(w_mask, w_pattern, strict=True)
        ]
        schedules = []
        for _ in labels:
            schedules.append(self._schedule())
            schedules[-1].start(1)
        best_mask, best_pattern = mask0.clone(), pattern0.clone()
        gen = make_generator(data_seed)
        arm: int | None = 0
        sequence: list[int] = []
        for _ in track(range(self.max_pulls), f"k-arm, {len(labels)} arms", enabled=progress):
            assert arm is not None
            sequence.append(arm)
            target, cost = int(labels[arm]), float(schedules[arm].cost[0])
            success = self._pull(model, pool, target, w_mask[arm], w_pattern[arm], opts[arm], cost, gen, device)
            with torch.no_grad():
                m_now, p_now = to_unit(w_mask[arm])[0].cpu(), to_unit(w_pattern[arm])[0].cpu()
            l1 = float(m_now.sum())
            ok = torch.tensor([success >= self.attack_success_threshold])
            improved, stop = schedules[arm].update(ok, torch.tensor([l1], dtype=torch.float64))
            if bool(improved[0]):
                best_mask[arm], best_pattern[arm] = m_now, p_now
            counted = bool(improved[0]) and cost > 0  # improvements at cost 0 do not shrink the mask
            bandit.record(arm, l1, success, counted)
            arm = bandit.next_arm(arm, counted, bool(stop[0]))
            if arm is None:
                break
        for a in (~torch.isfinite(bandit.best)).nonzero().flatten().tolist():
            with torch.no_grad():
                best_mask[a], best_pattern[a] = to_unit(w_mask[a])[0].cpu(), to_unit(w_pattern[a])[0].cpu()
        return best_mask, best_pattern, sequence

    def _pull(
        self,
        model: nn.Module,
        pool: torch.Tensor,
        target: int,
        w_mask: torch.Tensor,
        w_pattern: torch.Tensor,
        opt: torch.optim.Optimizer,
        cost: float,
        gen: torch.Generator,
        device: torch.device,
    ) -> float:
        """One pull: ``batches_per_epoch`` Adam steps on ``CE(f(x'), target) + cost * ||m||_1``; returns the mean
        success rate (fraction of stamped mini-batch images sent to ``target``) over those steps."""
        hits = 0.0
        want = torch.full((self.batch_size,), target, device=device)
        for _ in range(self.batches_per_epoch):
            xb = pool[torch.randint(len(pool), (self.batch_size,), generator=gen)].to(device)
            m, p = to_unit(w_mask), to_unit(w_pattern)
            logits = model(stamp_all(xb, m, p)[0])
            loss = nn.functional.cross_entropy(logits, want) + cost * m.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hits += float((logits.argmax(dim=1) == want).float().mean())
        return hits / self.batches_per_epoch
