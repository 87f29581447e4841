"""Neural Cleanse (Wang, Yao, Shan, Li, Viswanath, Zheng, Zhao, IEEE S&P 2019), all labels in one batched problem.

For every candidate target label t it reverse-engineers the smallest trigger ``x' = (1 - m) * x + m * p`` that
sends clean inputs to t, minimising ``CE(f(x'), t) + cost_t * ||m||_1``; a backdoor target needs an abnormally
small mask, found by the MAD anomaly index (docs/methods.md section 9, read from ``visualizer.py`` of
bolunwang/backdoor).

Our version optimises all K labels together: masks (K, 1, H, W) and patterns (K, C, H, W) are one parameter
tensor each with one Adam optimizer, every step stamps the same clean mini-batch with all K triggers and runs
one (K*B)-image forward pass, and the reference's cost schedule (cost initialisation, up/down, best-so-far,
early stop) runs on (K,) state vectors, so each label keeps its own cost and stops on its own. Adam is
elementwise and the loss is a sum of per-label terms, so this is the same optimisation as K separate runs
that see the same mini-batches; ``mode="per_label"`` runs them one after another for comparison.

Departures from the reference, for CPU budgets (each stated at its parameter below): mini-batches of
``batch_size`` = 16 clean images per label rather than 32, an epoch of ``batches_per_epoch`` = 2 mini-batches
rather than 31, at most ``max_epochs`` = 300 epochs rather than 1000, and the best mask is judged by the mask's L1
at the end of the epoch (the reference compares the epoch's mean L1 but keeps the end-of-epoch mask). The L1 is
computed on the float mask, never on an 8-bit PNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ...utils.progress import track
from ...utils.seeding import make_generator
from ..base import DEFENSES
from .base import Inspector, Reversal, from_unit, to_unit


def stamp_all(x: torch.Tensor, masks: torch.Tensor, patterns: torch.Tensor) -> torch.Tensor:
    """Every image stamped with every trigger: x (B, C, H, W), masks (L, 1, H, W), patterns (L, C, H, W) ->
    (L, B, C, H, W) with ``(1 - m) * x + m * p``."""
    m, p = masks[:, None], patterns[:, None]
    return (1 - m) * x[None] + m * p


@dataclass
class CostSchedule:
    """Neural Cleanse's cost schedule for L labels at once, as (L,) state vectors (``visualizer.py``).

    After every epoch, per label: keep the smallest mask whose epoch ASR >= the threshold; once the ASR has been
    reached for ``patience`` epochs at cost 0, set the cost to ``init_cost``; after ``patience`` successful epochs
    multiply it by ``multiplier``, after ``patience`` failed ones divide it by ``multiplier ** 1.5``; stop when
    the cost has gone both up and down and the best L1 has not improved below ``early_stop_threshold`` times
    its previous best for ``early_stop_patience`` epochs. ``set_after`` (default ``patience``) and ``down_exponent``
    (default 1.5) let K-Arm's variant reuse the schedule (it arms the cost after 2 successes and lowers it by
    ``multiplier`` itself).
    """

    init_cost: float
    patience: int
    multiplier: float
    early_stop_threshold: float
    early_stop_patience: int
    set_after: int | None = None
    down_exponent: float = 1.5

    def __post_init__(self) -> None:
        self.size = 0

    def start(self, size: int) -> None:
        self.size = size
        zeros = torch.zeros(size, dtype=torch.long)
        self.cost = torch.zeros(size, dtype=torch.float64)
        self.set_counter, self.up_counter, self.down_counter = zeros.clone(), zeros.clone(), zeros.clone()
        self.up_flag = torch.zeros(size, dtype=torch.bool)
        self.down_flag = torch.zeros(size, dtype=torch.bool)
        self.best_l1 = torch.full((size,), math.inf, dtype=torch.float64)
        self.stop_best = torch.full((size,), math.inf, dtype=torch.float64)
        self.stop_counter = zeros.clone()

    def update(self, success: torch.Tensor, l1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch's outcome per label: ``success`` (L,) bool (ASR >= threshold), ``l1`` (L,) mask L1.

        Returns ``(improved, stop)``, both (L,) bool: keep this epoch's mask / stop this label.
        """
        improved = success & (l1 < self.best_l1)
        self.best_l1 = torch.where(improved, l1, self.best_l1)
        valid = torch.isfinite(self.best_l1)
        stale = self.best_l1 >= self.early_stop_threshold * self.stop_best
        self.stop_counter = torch.where(valid, torch.where(stale, self.stop_counter + 1, 0), self.stop_counter)
        self.stop_best = torch.minimum(self.best_l1, self.stop_best)
        stop = self.up_flag & self.down_flag & (self.stop_counter >= self.early_stop_patience)

        at_zero = (self.cost == 0) & success
        self.set_counter = torch.where(at_zero, self.set_counter + 1, 0)
        arm = self.set_counter >= (self.patience if self.set_after is None else self.set_after)
        self.cost = torch.where(arm, self.init_cost, self.cost)
        self.up_counter = torch.where(arm, 0, self.up_counter)
        self.down_counter = torch.where(arm, 0, self.down_counter)
        self.up_flag &= ~arm
        self.down_flag &= ~arm

        self.up_counter = torch.where(success, self.up_counter + 1, 0)
        self.down_counter = torch.where(success, 0, self.down_counter + 1)
        up = self.up_counter >= self.patience
        down = ~up & (self.down_counter >= self.patience)
        self.cost = torch.where(up, self.cost * self.multiplier, self.cost)
        self.cost = torch.where(down, self.cost / self.multiplier**self.down_exponent, self.cost)
        self.up_counter = torch.where(up, 0, self.up_counter)
        self.down_counter = torch.where(down, 0, self.down_counter)
        self.up_flag |= up
        self.down_flag |= down
        return improved, stop


@DEFENSES.register("neural_cleanse")
class NeuralCleanse(Inspector):
    """Neural Cleanse trigger reverse engineering + outlier test (the paper's MAD anomaly index with ``index:
    paper``; the decision at ``alpha`` uses the leave-one-out index by default, :class:`.base.Inspector`).

    Defaults are the reference code's (``gtsrb_visualize_example.py``) unless said otherwise, with
    ``early_stop_patience`` 25 = 5 x patience. ``early_stop_threshold`` 0.99 is the class default of
    ``visualizer.py`` and BackdoorBench's (the GTSRB example script uses 1.0, which only stops once the mask stops
    shrinking at all). ``batch_size`` 16 and ``batches_per_epoch`` 2 depart from the reference (32 and 31 = 1000 //
    32): the schedule is checked after 32 images per label. Issue 22 asked for a scan three times faster; on 4 clean
    and 4 BadNets MNIST-5k ``badnet_cnn`` models these settings took 5.3 s per model on one core where the
    settings before (32 and 4, kept as the scan's ``verdicts`` preset, :mod:`backdoorlab.audit.presets`) took about
    four times as long, with the true target first on all four backdoored models and the backdoored models' p-values
    (0.02-0.04) all below the clean ones' (0.83-0.94). ``max_epochs`` 300 (reference 1000) is a cap that only
    labels which never settle reach.

    Initial masks and patterns are uniform in (0, 1), drawn from ``seed`` (the reference: U(0, 1) masks,
    U(0, 255) patterns, seed 123), the same for both modes.
    """

    name: ClassVar[str] = "neural_cleanse"
    statistic_name: ClassVar[str] = "mask L1"

    lr: float = Field(0.1, gt=0, le=10, description="learning rate of Adam on the tanh-parametrised mask and pattern")
    betas: tuple[float, float] = Field((0.5, 0.9), description="Adam's betas")
    init_cost: float = Field(
        1e-3, gt=0, description="weight of the mask's L1 norm once a label's trigger first reaches the threshold"
    )
    attack_success_threshold: float = Field(
        0.99, gt=0, le=1, description="attack success rate on the clean images a reversed trigger must reach"
    )
    patience: int = Field(5, ge=1, description="epochs of success (or failure) before the cost is raised (or lowered)")
    cost_multiplier: float = Field(
        2.0, gt=1, description="factor the cost is raised by; it is lowered by cost_multiplier ** 1.5"
    )
    early_stop_threshold: float = Field(
        0.99, gt=0, le=1, description="a label's best mask L1 must fall below this times its previous best to count"
    )
    early_stop_patience: int = Field(
        25, ge=1, description="epochs without such improvement (after the cost went up and down) that stop a label"
    )
    batch_size: int = Field(
        16, ge=1, le=4096, description="clean images per optimisation step, per label (reference 32)"
    )
    batches_per_epoch: int = Field(
        2, ge=1, description="steps per epoch, after which the cost schedule is checked (reference 31)"
    )
    max_epochs: int = Field(300, ge=1, description="cap on the epochs of a label that never settles")
    mode: Literal["batched", "per_label"] = Field(
        "batched",
        description="batched (all labels in one problem) or per_label (one after another; the same optimisation, "
        "kept for the speed comparison)",
    )
    examples: int = Field(
        4, ge=0, le=64, description="clean images stamped with each reversed trigger, kept for the report"
    )

    def _schedule(self) -> CostSchedule:
        return CostSchedule(
            self.init_cost, self.patience, self.cost_multiplier, self.early_stop_threshold, self.early_stop_patience
        )

    def regulariser(
        self, model: nn.Module, x: torch.Tensor, masks: torch.Tensor, patterns: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor | None:
        """Extra (L,) loss terms per label added to Neural Cleanse's objective (None: none; TABOR overrides it).

        ``x`` (B, C, H, W) the clean mini-batch, ``masks`` (L, 1, H, W), ``patterns`` (L, C, H, W), ``labels`` (L,)."""
        return None

    def _reverse(self, model, clean, input_shape, num_classes, *, seed, device, progress) -> Reversal:
        assert clean is not None
        c, h, w = input_shape
        gen = make_generator(seed)
        init_mask = torch.rand(num_classes, 1, h, w, generator=gen)
        init_pattern = torch.rand(num_classes, c, h, w, generator=gen)
        data_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        if self.mode == "batched":
            groups = [list(range(num_classes))]
        else:
            groups = [[t] for t in range(num_classes)]
        masks, patterns = torch.empty_like(init_mask), torch.empty_like(init_pattern)
        l1, found, epochs = (
            torch.empty(num_classes, dtype=torch.float64),
            torch.empty(num_classes, dtype=torch.bool),
            torch.empty(num_classes, dtype=torch.long),
        )
        for group in groups:
            idx = torch.tensor(group)
            out = self._optimise(model, clean.x, idx, init_mask[idx], init_pattern[idx], data_seed, device, progress)
            masks[idx], patterns[idx], l1[idx], found[idx], epochs[idx] = out
        x = clean.x[: self.examples]
        return Reversal(
            statistic=l1,
            masks=masks,
            patterns=patterns,
            examples=stamp_all(x, masks, patterns) if self.examples else None,
            details={
                "reached_threshold": found,
                "epochs": epochs,
                "steps": epochs * self.batches_per_epoch,  # (K,) optimisation steps spent on each label
                "mode": self.mode,
            },
        )

    def _optimise(
        self,
        model: nn.Module,
        pool: torch.Tensor,
        labels: torch.Tensor,
        mask0: torch.Tensor,
        pattern0: torch.Tensor,
        data_seed: int,
        device: torch.device,
        progress: bool | None,
    ) -> tuple[torch.Tensor, ...]:
        """Reverse-engineer triggers for ``labels`` (L,) jointly from initial masks (L, 1, H, W) and patterns
        (L, C, H, W) in [0, 1]; mini-batches from ``pool`` (N, C, H, W) drawn by ``data_seed``.

        Returns best masks, best patterns, their L1 (float64; the last mask's L1 where the ASR threshold was never
        reached), whether it was reached (bool) and the epochs each label ran, all on the CPU, first dim L.
        """
        size = len(labels)
        w_mask = from_unit(mask0).to(device).requires_grad_(True)
        w_pattern = from_unit(pattern0).to(device).requires_grad_(True)
        opt = torch.optim.Adam([w_mask, w_pattern], lr=self.lr, betas=self.betas)
        schedule = self._schedule()
        schedule.start(size)
        best_mask, best_pattern = mask0.clone(), pattern0.clone()
        active = torch.ones(size, dtype=torch.bool)
        epochs = torch.zeros(size, dtype=torch.long)
        gen = make_generator(data_seed)
        targets = labels.to(device)
        what = f"{self.name}, label {int(labels[0])}" if size == 1 else f"{self.name}, {size} labels"
        for _ in track(range(self.max_epochs), what, enabled=progress):
            rows = active.nonzero().flatten()
            hits = torch.zeros(len(rows), device=device)
            rows_dev = rows.to(device)
            for _ in range(self.batches_per_epoch):
                xb = pool[torch.randint(len(pool), (self.batch_size,), generator=gen)].to(device)
                m, p = to_unit(w_mask[rows_dev]), to_unit(w_pattern[rows_dev])
                logits = model(stamp_all(xb, m, p).flatten(0, 1)).view(len(rows), self.batch_size, -1)
                want = targets[rows_dev, None].expand(-1, self.batch_size)
                ce = nn.functional.cross_entropy(logits.transpose(1, 2), want, reduction="none").mean(dim=1)
                cost = schedule.cost[rows].to(device, torch.float32)
                loss = (ce + cost * m.flatten(1).sum(dim=1)).sum()
                extra = self.regulariser(model, xb, m, p, targets[rows_dev])
                if extra is not None:
                    loss = loss + extra.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                hits += (logits.argmax(dim=2) == want).float().mean(dim=1).detach()
            with torch.no_grad():
                m_now, p_now = to_unit(w_mask[rows_dev]).cpu(), to_unit(w_pattern[rows_dev]).cpu()
            success = torch.zeros(size, dtype=torch.bool)
            success[rows] = (hits / self.batches_per_epoch).cpu() >= self.attack_success_threshold
            l1 = torch.full((size,), math.inf, dtype=torch.float64)
            l1[rows] = m_now.flatten(1).sum(dim=1).double()
            improved, stop = schedule.update(success, l1)
            improved &= active
            keep = improved[rows]
            best_mask[rows[keep]], best_pattern[rows[keep]] = m_now[keep], p_now[keep]
            epochs[rows] += 1
            active &= ~stop
            if not active.any():
                break
        found = torch.isfinite(schedule.best_l1)
        with torch.no_grad():
            last_mask, last_pattern = to_unit(w_mask).cpu(), to_unit(w_pattern).cpu()
        best_mask[~found], best_pattern[~found] = last_mask[~found], last_pattern[~found]
        l1 = torch.where(found, schedule.best_l1, best_mask.flatten(1).sum(dim=1).double())
        return best_mask, best_pattern, l1, found, epochs
