"""DeepInspect (Chen, Fu, Zhao, Koushanfar, IJCAI 2019): black-box Trojan detection without clean data.

There is no official code; this follows the paper's three steps as summarised in docs/methods.md section 8:

1. **Model inversion** (:func:`invert_model`): for every class t, images that the model gives class t with high
   confidence, found by gradient descent on ``1 - softmax_t(f(x)) + tv_weight * TV(x)`` from random noise, all
   classes in one batch. They replace the training data the defender does not have. ``lite=True`` uses the
   given clean images instead ("DeepInspect-lite", as docs/methods.md recommends calling it; every output says so).
2. **Conditional trigger generator** G(z, t) (:class:`ConditionalGenerator`) trained against the frozen model:
   ``x' = clip(x + G(z, t), 0, 1)`` (while training G, the clip passes gradients through:
   :func:`clamp_straight_through`), loss ``NLL(f(x'), t) + gan_weight * MSE(softmax_t(f(x')), 1)
   + pert_weight_t * max(0, ||G(z, t)||_1 - pert_bound)``, the GAN term on. The paper tunes the gammas so that
   G's triggers reach their label on at least 95% of inputs (docs/methods.md section 8, from third-party notes: the
   PDF could not be read here, so the rule's wording is not the paper's own). Ours: every ``adapt_every`` steps,
   each label whose generated inputs reached it less than ``success_threshold`` of the time in those steps has
   its penalty weight divided by ``pert_multiplier`` (never raised), so the penalty is lowered until the triggers
   reach their label.
3. **Anomaly detection**: per class, the mean L1 of G's perturbations; a Trojan target needs an abnormally
   small one. Only labels whose trigger reached them (success >= ``success_threshold`` when measured) are
   counted; the others are reported as unreached (``Verdict.unreached``), never as small. The paper's deviation
   factor is the double-MAD left tail (:func:`.verdict.left_tail_deviation`, ``index: paper``) and flags the model
   when some class exceeds 2 (alpha = 0.05, per label); the decision here is for the whole model at ``alpha``
   (:mod:`.null`), by default with the leave-one-out index on log sizes (:class:`.base.Inspector`).

The generator (as plain state: :func:`generator_state` / :func:`generator_from_state`), perturbation sizes and
success rates per class are kept in ``Verdict.details``, so a verdict saves and loads without unpickling code.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from ...data import Split
from ...utils.progress import track
from ...utils.seeding import make_generator
from ..base import DEFENSES
from .base import Inspector, Reversal, from_unit, to_unit
from .null import IndexKind


class ConditionalGenerator(nn.Module):
    """G(z, t): an MLP from noise z (noise_dim,) and a one-hot label t to a perturbation (C, H, W) in (-1, 1).

    ``[z; onehot(t)] -> hidden -> 2*hidden -> C*H*W`` with ReLU between and tanh at the end; the last layer starts
    near zero so the first perturbations are near zero (our choice). The paper does not
    give G's architecture; trojanzoo uses FC + deconvolutions for 32x32 colour images. An MLP is enough for the
    small images of this toolkit and cheaper on the CPU.
    """

    def __init__(self, noise_dim: int, num_classes: int, shape: tuple[int, int, int], hidden: int = 256) -> None:
        super().__init__()
        self.noise_dim, self.num_classes, self.shape = noise_dim, num_classes, tuple(shape)
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Linear(noise_dim + num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * hidden),
            nn.ReLU(),
            nn.Linear(2 * hidden, c * h * w),
            nn.Tanh(),
        )
        last = self.net[-2]
        with torch.no_grad():  # start from (almost) no perturbation, so G only grows what the target needs
            last.weight.mul_(0.01)
            last.bias.zero_()

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(t, self.num_classes).to(z.dtype)
        return self.net(torch.cat([z, onehot], dim=1)).view(len(z), *self.shape)

    @torch.no_grad()
    def sample(self, t: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Perturbations (N, C, H, W) for labels ``t`` (N,), noise drawn from ``gen`` (no gradients)."""
        z = torch.randn(len(t), self.noise_dim, generator=gen).to(t.device)
        return self(z, t)


def generator_state(generator: ConditionalGenerator) -> dict:
    """The generator as tensors and plain data (what :func:`generator_from_state` rebuilds)."""
    hidden = generator.net[0].out_features
    return {
        "noise_dim": generator.noise_dim,
        "num_classes": generator.num_classes,
        "shape": list(generator.shape),
        "hidden": hidden,
        "weights": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
    }


def generator_from_state(state: dict) -> ConditionalGenerator:
    """The frozen generator saved by :func:`generator_state`, in eval mode on the CPU."""
    g = ConditionalGenerator(state["noise_dim"], state["num_classes"], tuple(state["shape"]), state["hidden"])
    g.load_state_dict(state["weights"])
    return g.eval().requires_grad_(False)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image: x (N, C, H, W) -> (N,)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(dim=1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(dim=1)
    return dh + dw


def clamp_straight_through(x: torch.Tensor) -> torch.Tensor:
    """``x.clamp(0, 1)`` forward; the gradient passes as if there were no clamp (straight-through).

    Departure from the paper's plain clip while G trains: where ``x + G(z, t)`` leaves [0, 1] the clip's gradient
    is 0, and once G's tanh saturates there nothing moves it back; on the 8x8 digits G collapsed within 25 steps
    to one saturated image for every label (9 of 10 labels unreached in every clean model)."""
    return x + (x.clamp(0, 1) - x).detach()


def invert_model(
    model: nn.Module,
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    per_class: int,
    steps: int,
    lr: float,
    tv_weight: float,
    seed: int,
    device: torch.device,
    progress: bool | None = None,
) -> Split:
    """Model inversion: ``per_class`` images for each class from U(0, 1) noise, minimising
    ``1 - softmax_t(f(x)) + tv_weight * TV(x)`` with Adam, all ``num_classes * per_class`` images at once.

    Images stay in (0, 1) through the tanh box of Neural Cleanse's reference. Returns a Split with labels
    0..K-1, ``per_class`` each (the images are on the CPU).
    """
    gen = make_generator(seed)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    w = from_unit(torch.rand(len(y), *input_shape, generator=gen)).to(device).requires_grad_(True)
    target = y.to(device)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in track(range(steps), "model inversion", enabled=progress):
        x = to_unit(w)
        prob = model(x).softmax(dim=1).gather(1, target[:, None]).squeeze(1)
        loss = (1 - prob + tv_weight * total_variation(x)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return Split(to_unit(w).cpu(), y)


@DEFENSES.register("deepinspect")
class DeepInspect(Inspector):
    """DeepInspect: model inversion + conditional trigger generator + double-MAD deviation factor.

    The paper gives no numbers beyond alpha = 0.05 and the 95% success of the generated triggers: the defaults are
    ours, chosen on MNIST-5k, except ``noise_dim`` 100 (trojanzoo's) and ``success_threshold`` 0.95. The budget
    (10 inverted images per class from 100 steps, 400 generator steps at a rate of 2e-3) is issue 22's faster
    scan; the settings before (20 images, 300 steps, 800 generator steps at 1e-3) are the scan's ``verdicts``
    preset (:mod:`backdoorlab.audit.presets`), measured against these in ``python -m benchmarks population``.
    ``gan_weight`` 1 turns the paper's GAN term on (trojanzoo leaves it off; the paper's value could not be read, 1
    weighs it as the target loss). The total-variation prior of the inversion is the "AuxInfo" the paper allows.
    ``pert_bound`` 0 makes every unit of perturbation cost: a bound above the true trigger's L1 would leave the
    target's trigger unpenalised and hide it among the others.
    """

    name: ClassVar[str] = "deepinspect"
    statistic_name: ClassVar[str] = "perturbation L1"
    index_kind: ClassVar[IndexKind] = "left_tail"

    lite: bool = Field(
        False,
        description="DeepInspect-lite: train the generator on the given clean images instead of model-inverted ones "
        "(False: the paper's data-free setting)",
    )
    inversion_per_class: int = Field(10, ge=1, le=10_000, description="model inversion: images recovered per class")
    inversion_steps: int = Field(100, ge=1, description="model inversion: Adam steps")
    inversion_lr: float = Field(0.1, gt=0, description="model inversion: Adam's learning rate")
    tv_weight: float = Field(0.05, ge=0, description="model inversion: weight of the total-variation prior")
    noise_dim: int = Field(100, ge=1, description="generator: size of its noise input z")
    hidden: int = Field(256, ge=8, description="generator: width of its hidden layers")
    lr: float = Field(2e-3, gt=0, le=1, description="generator: Adam's learning rate")
    steps: int = Field(
        400, ge=1, description="generator: training steps, each sample aimed at a random label other than its own"
    )
    batch_size: int = Field(64, ge=2, description="generator: samples per training step")
    gan_weight: float = Field(
        1.0, ge=0, description="gamma 1: weight of the GAN loss term MSE(softmax_t(f(x + G(z, t))), 1); 0 turns it off"
    )
    pert_weight: float = Field(
        0.01,
        ge=0,
        description="gamma 2: starting weight of the perturbation hinge max(0, ||G||_1 - pert_bound), one per label, "
        "lowered for labels whose triggers do not reach them",
    )
    success_threshold: float = Field(
        0.95,
        gt=0,
        le=1,
        description="fraction of inputs a label's generated trigger must send to it: below it the label's penalty "
        "weight is lowered, and at the end the label counts in the outlier test only if its trigger reaches this",
    )
    adapt_every: int = Field(
        50, ge=1, description="generator steps between checks of each label's success (the penalty adaptation)"
    )
    pert_multiplier: float = Field(
        1.5, gt=1, description="divisor of a label's penalty weight when its triggers missed the success threshold"
    )
    pert_bound: float = Field(0.0, ge=0, description="L1 size of a perturbation below which it costs nothing")
    eval_samples: int = Field(
        100, ge=1, description="inputs of other classes per label when measuring perturbation sizes and success"
    )
    examples: int = Field(4, ge=0, le=64, description="stamped examples per label kept for the report")

    @property
    def method_name(self) -> str:
        return "deepinspect-lite" if self.lite else "deepinspect"

    @property
    def needs_clean_data(self) -> bool:
        return self.lite

    def substitute_data(
        self,
        model: nn.Module,
        clean: Split | None,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        seed: int,
        device: torch.device,
        progress: bool | None,
    ) -> Split:
        """The clean images (lite) or the model-inversion set that G is trained on."""
        if self.lite:
            assert clean is not None
            return clean
        return invert_model(
            model,
            num_classes,
            input_shape,
            per_class=self.inversion_per_class,
            steps=self.inversion_steps,
            lr=self.inversion_lr,
            tv_weight=self.tv_weight,
            seed=seed,
            device=device,
            progress=progress,
        )

    def _reverse(self, model, clean, input_shape, num_classes, *, seed, device, progress) -> Reversal:
        data = self.substitute_data(model, clean, input_shape, num_classes, seed=seed, device=device, progress=progress)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = ConditionalGenerator(self.noise_dim, num_classes, input_shape, self.hidden).to(device)
        weights = self._train_generator(
            model, generator, data, num_classes, seed=seed + 1, device=device, progress=progress
        )
        generator.eval().requires_grad_(False)
        sizes, success, mean_pert, stamped = self._measure(model, generator, data, num_classes, seed + 2, device)
        return Reversal(
            statistic=sizes,
            reached=success >= self.success_threshold,
            masks=mean_pert.abs().mean(dim=1, keepdim=True).clamp(0, 1),
            patterns=(0.5 + mean_pert / 2).clamp(0, 1),
            examples=stamped,
            details={
                "success_rate": success,
                "pert_weights": weights,
                "generator": generator_state(generator),
                "data": "clean (lite)" if self.lite else "model inversion",
                "inverted_examples": None if self.lite else data.x[:: max(1, len(data) // 20)],
            },
        )

    def _train_generator(
        self,
        model: nn.Module,
        generator: ConditionalGenerator,
        data: Split,
        num_classes: int,
        *,
        seed: int,
        device: torch.device,
        progress: bool | None,
    ) -> torch.Tensor:
        """Train G in place; returns the final per-label penalty weights (K,)."""
        gen = make_generator(seed)
        opt = torch.optim.Adam(generator.parameters(), lr=self.lr)
        weights = torch.full((num_classes,), float(self.pert_weight), device=device)
        hits = torch.zeros(num_classes, device=device)
        tries = torch.zeros(num_classes, device=device)
        for step in track(range(self.steps), f"{self.method_name} generator", enabled=progress):
            idx = torch.randint(len(data), (self.batch_size,), generator=gen)
            x, y = data.x[idx].to(device), data.y[idx]
            t = ((y + torch.randint(1, num_classes, (len(y),), generator=gen)) % num_classes).to(device)
            delta = generator(torch.randn(len(t), self.noise_dim, generator=gen).to(device), t)
            logits = model(clamp_straight_through(x + delta))
            loss = nn.functional.cross_entropy(logits, t)
            if self.gan_weight:
                prob = logits.softmax(dim=1).gather(1, t[:, None]).squeeze(1)
                loss = loss + self.gan_weight * nn.functional.mse_loss(prob, torch.ones_like(prob))
            size = delta.abs().flatten(1).sum(dim=1)
            loss = loss + (weights[t] * (size - self.pert_bound).clamp_min(0)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                hits.index_add_(0, t, (logits.argmax(dim=1) == t).float())
                tries.index_add_(0, t, torch.ones_like(t, dtype=torch.float))
            if (step + 1) % self.adapt_every == 0:
                missed = (tries > 0) & (hits < self.success_threshold * tries)
                weights[missed] /= self.pert_multiplier
                hits.zero_()
                tries.zero_()
        return weights.cpu()

    @torch.no_grad()
    def _measure(
        self,
        model: nn.Module,
        generator: ConditionalGenerator,
        data: Split,
        num_classes: int,
        seed: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, ...]:
        """Per label t: mean L1 of G(z, t) and the fraction of other-class inputs sent to t (K,), the mean
        perturbation (K, C, H, W) and ``examples`` stamped inputs (K, n, C, H, W)."""
        gen = make_generator(seed)
        sizes, success, means, stamped = [], [], [], []
        for t in range(num_classes):
            pool = (data.y != t).nonzero().flatten()
            idx = pool[torch.randint(len(pool), (self.eval_samples,), generator=gen)]
            x = data.x[idx].to(device)
            labels = torch.full((len(x),), t, device=device)
            delta = generator.sample(labels, gen)
            pred = model((x + delta).clamp(0, 1)).argmax(dim=1)
            sizes.append(delta.abs().flatten(1).sum(dim=1).mean().double().cpu())
            success.append((pred == t).float().mean().cpu())
            means.append(delta.mean(dim=0).cpu())
            stamped.append((x[: self.examples] + delta[: self.examples]).clamp(0, 1).cpu())
        return torch.stack(sizes), torch.stack(success), torch.stack(means), torch.stack(stamped)
