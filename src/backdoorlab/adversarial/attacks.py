"""Evasion attacks of the Adversarial Robustness Toolbox (ART) as registered, validated backdoorlab objects.

Each class holds one attack's parameters (pydantic: checked up front, unknown names refused) and builds the ART
attack on a model wrapped by :func:`~backdoorlab.adversarial.classifier.art_classifier`. :meth:`EvasionAttack.run`
attacks images (N, C, H, W) in [0, 1] with true labels (N,), rounds the result to 256 levels and says which inputs
the attack fooled: an untargeted attack succeeds when the label changes, a targeted one only when the model outputs
its target (Xu et al., NDSS 2018, EvadeML-Zoo ``detections/base.py``).

Targets (``target``): ``untargeted``; ``next``, the class after the true one, (y + 1) mod K; ``ll``, the class the
model finds least likely for the clean input (EvadeML-Zoo ``attacks/__init__.py``).

Defaults are ART's where the Feature Squeezing study gives none, else the study's MNIST values (its
``Reproduce_FeatureSqueezing.md`` and ``attacks/README.md``; docs/methods.md section 5); the per-dataset values of the
study are in :mod:`~backdoorlab.adversarial.study`. How ART departs from the implementations the study ran is said
on each class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..errors import ConfigError
from ..models import predict_logits
from ..models.channels import evaluating
from ..registry import Registry
from ..utils.device import resolve_device
from .carlini import carlini_l0, carlini_l2
from .classifier import art_classifier

Target = Literal["untargeted", "next", "ll"]
TARGET = "untargeted; next, the class after the true one, (y + 1) mod K; or ll, the model's least likely class"


def round_to_levels(x: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """``x`` in [0, 1] rounded to ``levels`` evenly spaced values (half to even), as EvadeML's
    ``reduce_precision_np(x, 256)`` does to every adversarial example before it is evaluated."""
    return torch.round(x.clamp(0, 1) * (levels - 1)) / (levels - 1)


def target_labels(target: Target, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """Target classes (N,) for clean ``logits`` (N, K) and true labels ``y`` (N,); None when untargeted."""
    if target == "next":
        return (y + 1) % logits.shape[1]
    if target == "ll":
        return logits.argmin(dim=1)
    return None


@dataclass
class AdversarialExamples:
    """What one attack produced on N inputs.

    ``x`` (N, C, H, W) on 256 levels in [0, 1]; ``targets`` (N,) or None (untargeted); ``predicted`` (N,) labels
    the model gives ``x``; ``success`` (N,) bool; ``seconds`` of attack time (ART's ``generate`` and rounding).
    """

    x: torch.Tensor
    targets: torch.Tensor | None
    predicted: torch.Tensor
    success: torch.Tensor
    seconds: float

    def distortion(self, clean: torch.Tensor) -> dict[str, float]:
        """Mean L2, L-infinity and L0 (fraction of changed values) of the successful examples; NaN if none."""
        if not bool(self.success.any()):
            return {"l2": float("nan"), "linf": float("nan"), "l0": float("nan")}
        d = (self.x - clean)[self.success].flatten(1)
        return {
            "l2": float(d.norm(dim=1).mean()),
            "linf": float(d.abs().amax(dim=1).mean()),
            "l0": float((d.abs() > 0).float().mean()),
        }


class EvasionAttack(BaseModel):
    """An ART evasion attack: parameters plus :meth:`run`. Subclasses implement :meth:`art_attack`.

    ``supports`` lists the targets the method has.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str] = "evasion"
    supports: ClassVar[tuple[str, ...]] = ("untargeted", "next", "ll")

    target: Target = Field("untargeted", description=TARGET)
    batch_size: int = Field(100, ge=1, description="inputs attacked at once")

    @model_validator(mode="after")
    def _supported_target(self) -> EvasionAttack:
        if self.target not in self.supports:
            raise ValueError(f"{self.name} has no {self.target!r} variant; use one of {', '.join(self.supports)}")
        return self

    def art_attack(self, classifier) -> Any:
        """The ART attack object on ``classifier``."""
        raise NotImplementedError

    def generate(self, classifier, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """ART's ``generate`` on ``x`` (N, C, H, W) float32; ``labels`` are targets or, untargeted, true labels."""
        return self.art_attack(classifier).generate(x, y=labels)

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_classes: int,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """Unrounded examples (N, C, H, W) for ``x`` in [0, 1] and ``labels`` (N,) (targets or, untargeted, true
        labels): by default ART's attack on the model wrapped by :func:`art_classifier`."""
        classifier = art_classifier(model, tuple(x.shape[1:]), num_classes, device=device)
        adv = self.generate(classifier, x.detach().cpu().numpy().astype(np.float32), labels.cpu().numpy())
        return torch.from_numpy(np.asarray(adv, dtype=np.float32))

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        num_classes: int,
        device: str | torch.device = "cpu",
    ) -> AdversarialExamples:
        """Attack ``x`` (N, C, H, W) in [0, 1] with true labels ``y`` (N,); see :class:`AdversarialExamples`."""
        if x.ndim != 4 or len(x) != len(y):
            raise ConfigError(
                f"{self.name}: need images (N, C, H, W) and N labels, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        start = time.perf_counter()
        targets = target_labels(self.target, predict_logits(model, x, device=device), y)
        if len(x) == 0:
            return AdversarialExamples(x.clone(), targets, y.clone(), torch.zeros(0, dtype=torch.bool), 0.0)
        labels = targets if targets is not None else y
        adv_x = round_to_levels(self.perturb(model, x, labels, num_classes=num_classes, device=device).cpu())
        seconds = time.perf_counter() - start
        predicted = predict_logits(model, adv_x, device=device).argmax(dim=1)
        success = predicted == targets if targets is not None else predicted != y
        return AdversarialExamples(adv_x, targets, predicted, success, seconds)


ADVERSARIAL_ATTACKS: Registry[type[EvasionAttack]] = Registry("adversarial attack")


@ADVERSARIAL_ATTACKS.register("fgsm")
class FGSM(EvasionAttack):
    """Fast Gradient Sign Method, L-infinity (ART ``FastGradientMethod``): one step of size ``eps``.

    Default ``eps`` 0.3, the study's MNIST value. Untargeted in the study; ART also has targeted FGSM.
    """

    name: ClassVar[str] = "fgsm"
    eps: float = Field(0.3, gt=0, le=1, description="L-infinity size of the one step, in pixel values")

    def art_attack(self, classifier):
        from art.attacks.evasion import FastGradientMethod

        return FastGradientMethod(
            classifier, norm=np.inf, eps=self.eps, targeted=self.target != "untargeted", batch_size=self.batch_size
        )


@ADVERSARIAL_ATTACKS.register("bim")
class BIM(EvasionAttack):
    """Basic Iterative Method, L-infinity (ART ``BasicIterativeMethod``): ``max_iter`` steps of ``eps_step``,
    projected on the ``eps`` ball.

    Defaults: ``eps`` 0.3 and ``eps_step`` 0.06 (the study's MNIST values), ``max_iter`` 10 (cleverhans' default,
    which the study's wrapper keeps).
    """

    name: ClassVar[str] = "bim"
    eps: float = Field(0.3, gt=0, le=1, description="radius of the L-infinity ball the example stays in")
    eps_step: float = Field(0.06, gt=0, le=1, description="L-infinity size of each step")
    max_iter: int = Field(10, ge=1, le=100_000, description="steps")

    def art_attack(self, classifier):
        from art.attacks.evasion import BasicIterativeMethod

        return BasicIterativeMethod(
            classifier,
            eps=self.eps,
            eps_step=self.eps_step,
            max_iter=self.max_iter,
            targeted=self.target != "untargeted",
            batch_size=self.batch_size,
            verbose=False,
        )


class _CarliniWagner(EvasionAttack):
    """What the Carlini-Wagner L2 and L0 attacks share: the solver (``carlini``, the default: Carlini's own
    algorithm in torch, :mod:`.carlini`; or an ART class) and its parameters.

    ART's ``CarliniL2Method`` and ``CarliniL0Method`` depart from Carlini's code, which the study ran: they work in
    tanh space without Adam and so cannot move pixels that are exactly 0 or 1 (see :class:`CarliniWagnerL2`), and
    they double c after a failure where Carlini's L2 attack multiplies it by 10 (from the study's c0 1e-3 and 9
    steps ART never gets past c = 0.26).
    """

    supports: ClassVar[tuple[str, ...]] = ("untargeted", "next", "ll")
    confidence: float = Field(10.0, ge=0, description="logit margin the example must have (the study: 10 on MNIST)")
    learning_rate: float = Field(0.01, gt=0, description="step size of the optimizer")
    binary_search_steps: int = Field(
        9, ge=1, le=100, description="steps of the search over the constant c that weighs the margin loss"
    )
    max_iter: int = Field(1000, ge=1, le=100_000, description="optimizer iterations per value of c")
    initial_const: float = Field(1e-3, gt=0, description="first value of c")
    max_halving: int = Field(5, ge=1, le=100, description="ART's line search: halvings of the step per iteration")
    max_doubling: int = Field(5, ge=1, le=100, description="ART's line search: doublings of the step per iteration")

    def _art_params(self) -> dict[str, Any]:
        return dict(
            confidence=self.confidence,
            targeted=self.target != "untargeted",
            learning_rate=self.learning_rate,
            binary_search_steps=self.binary_search_steps,
            max_iter=self.max_iter,
            initial_const=self.initial_const,
            max_halving=self.max_halving,
            max_doubling=self.max_doubling,
            batch_size=self.batch_size,
            verbose=False,
        )

    def _uses_carlini(self) -> bool:
        return getattr(self, "solver", "") == "carlini"

    def carlini(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Examples (B, C, H, W) of the torch solver for one batch, on ``x``'s device."""
        raise NotImplementedError

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_classes: int,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """The torch solver over batches of ``batch_size`` (model moved to ``device`` and back), else ART's."""
        if not self._uses_carlini():
            return super().perturb(model, x, labels, num_classes=num_classes, device=device)
        dev = resolve_device(device)
        with evaluating(model, dev):
            return torch.cat(
                [
                    self.carlini(
                        model, x[i : i + self.batch_size].to(dev), labels[i : i + self.batch_size].to(dev)
                    ).cpu()
                    for i in range(0, len(x), self.batch_size)
                ]
            )


@cache
def _margin_elastic_net() -> type:
    """ART's ``ElasticNet`` whose candidates count as adversarial only with the logit margin ``confidence`` (built
    once, lazily).

    ART's ``ElasticNet`` keeps the smallest candidate whose top label is the target, whatever its margin; Carlini's
    code (and so the study) keeps one only when the target's logit leads by ``confidence`` (untargeted: the true
    label trails by it). This subclass labels each candidate as Carlini's ``compare`` does (targeted: subtract
    ``confidence`` from the target's logit before the argmax; untargeted: add it to the true label's).
    """
    from art.attacks.evasion import ElasticNet

    class MarginElasticNet(ElasticNet):
        def _generate_batch(self, x_batch: np.ndarray, y_batch: np.ndarray) -> np.ndarray:
            self._batch_labels = y_batch  # one-hot (B, K): targets, or true labels when untargeted
            return super()._generate_batch(x_batch, y_batch)

        def _loss(self, x: np.ndarray, x_adv: np.ndarray) -> tuple:
            diff = (x - x_adv).reshape(len(x), -1)
            l1, l2 = np.abs(diff).sum(axis=1), np.square(diff).sum(axis=1)
            logits = self.estimator.predict(np.asarray(x_adv, dtype=np.float32), batch_size=self.batch_size)
            shift = -self.confidence if self.targeted else self.confidence
            return np.argmax(logits + shift * self._batch_labels, axis=1), l1, l2, self.beta * l1 + l2

    return MarginElasticNet


@ADVERSARIAL_ATTACKS.register("cw2")
class CarliniWagnerL2(_CarliniWagner):
    """Carlini-Wagner L2: the smallest squared L2 perturbation plus c times the margin loss (confidence
    ``confidence``), with a binary search over c.

    ``solver``:

    - ``carlini`` (default): Carlini's algorithm as his ``l2_attack.py`` runs it (:func:`.carlini.carlini_l2`):
      tanh change of variables, Adam, c times 10 until a success then bisection, abort early every ``max_iter`` //
      10 iterations, the smallest-L2 example at the full margin kept. Batched, ``batch_size`` inputs at once.
      Adam's step moves a tanh-space coordinate by about ``learning_rate`` per iteration, and a pixel at exactly 0
      sits at -7.25 there, so cut budgets need hundreds of iterations per step: on 30 MNIST badnet_cnn inputs
      (Next, confidence 10) 3 x 100 iterations from c0 = 1 reached no target, 5 x 300 from c0 1e-2 reached 20 of
      30, the study's 9 x 1000 from 1e-3 all 30 (mean L2 3.74).
    - ``projected``: ART's ``ElasticNet`` (EAD, Chen et al. 2018) with L1 weight beta = 0 and the L2 decision rule,
      i.e. the same objective and constant search solved by projected FISTA steps in pixel space, with candidates
      kept only at the required margin (:func:`_margin_elastic_net`). Converges in far fewer iterations (3 x 100
      from c0 = 1 reached every target above), but its examples raise more background pixels past 0.5.
    - ``tanh``: ART's ``CarliniL2Method``, the tanh change of variables with plain gradient steps and a line search
      instead of Adam, c doubled after a failure. Its gradient is scaled by 1 - tanh^2, about 2e-6 at pixels
      exactly 0 or 1, and without Adam's per-pixel step size those pixels never move: on MNIST (81% of pixels
      exactly 0) it changes only the stroke (measured on badnet_cnn: 35% of Next targets, mean L-infinity 0.98).

    Defaults: the study's MNIST run (confidence 10, 1000 iterations) with Carlini's learning rate 0.01, 9 binary
    search steps and initial constant 1e-3. ``max_halving`` and ``max_doubling`` are used by ``tanh`` only.
    """

    name: ClassVar[str] = "cw2"
    solver: Literal["carlini", "projected", "tanh"] = Field(
        "carlini",
        description="carlini (Carlini's algorithm in torch), projected (ART's ElasticNet with beta 0) or tanh "
        "(ART's CarliniL2Method)",
    )
    abort_early: bool = Field(True, description="carlini: stop a step when the loss stalls (checked every max_iter/10)")

    def carlini(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv, _ = carlini_l2(
            model,
            x,
            labels,
            targeted=self.target != "untargeted",
            confidence=self.confidence,
            learning_rate=self.learning_rate,
            binary_search_steps=self.binary_search_steps,
            max_iter=self.max_iter,
            initial_const=self.initial_const,
            abort_early=self.abort_early,
        )
        return adv

    def art_attack(self, classifier):
        if self.solver == "tanh":
            from art.attacks.evasion import CarliniL2Method

            return CarliniL2Method(classifier, **self._art_params())
        return _margin_elastic_net()(
            classifier,
            confidence=self.confidence,
            targeted=self.target != "untargeted",
            learning_rate=self.learning_rate,
            binary_search_steps=self.binary_search_steps,
            max_iter=self.max_iter,
            beta=0.0,
            initial_const=self.initial_const,
            batch_size=self.batch_size,
            decision_rule="L2",
            verbose=False,
        )


@ADVERSARIAL_ATTACKS.register("cw0")
class CarliniWagnerL0(_CarliniWagner):
    """Carlini-Wagner L0: repeated L2 attacks on a shrinking set of pixels allowed to change.

    ``solver``:

    - ``carlini`` (default): Carlini's ``l0_attack.py`` (:func:`.carlini.carlini_l0`), batched: each round runs the
      tanh-space Adam L2 attack on the allowed pixels, warm-started from the previous solution, with c doubled
      (``const_factor``) after ``max_iter`` iterations without success, up to ``largest_const``; after a success
      the pixels with the smallest |change| * |gradient| are no longer allowed; the answer is the last round's
      solution before an L2 attack fails. ``binary_search_steps`` is not used. Departures: a success needs the
      hinge below min(1e-4 c, 0.01) (Carlini: 1e-4 c, which at large c accepts non-adversarial iterates), and
      ``max_total_iter`` caps the Adam steps per input (None: no cap).
    - ``art``: ART's ``CarliniL0Method``. ART 1.20 runs ``x.shape[1] + 1`` elimination rounds, i.e. channels + 1
      on NCHW images, fixing one value per round, and like ART's CW2 cannot move pixels exactly 0 or 1; on MNIST
      badnet_cnn it reached 15-21% of its targets.

    Defaults: Carlini's (learning rate 0.01, 1000 iterations, c0 1e-3, largest c 2e6, factor 2) with the study's
    confidence 10 (Carlini's code has a fixed margin of 0.01; the study passed 10).
    """

    name: ClassVar[str] = "cw0"
    solver: Literal["carlini", "art"] = Field(
        "carlini", description="carlini (Carlini's l0_attack in torch) or art (ART's CarliniL0Method)"
    )
    largest_const: float = Field(2e6, gt=0, description="carlini: largest value of c tried before giving up")
    const_factor: float = Field(2.0, gt=1, description="carlini: factor on c after a round without success")
    max_total_iter: int | None = Field(None, ge=1, description="carlini: Adam steps per input over all rounds")

    def carlini(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv, _ = carlini_l0(
            model,
            x,
            labels,
            targeted=self.target != "untargeted",
            confidence=self.confidence,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            initial_const=self.initial_const,
            largest_const=self.largest_const,
            const_factor=self.const_factor,
            max_total_iter=self.max_total_iter,
        )
        return adv

    def art_attack(self, classifier):
        from art.attacks.evasion import CarliniL0Method

        return CarliniL0Method(classifier, **self._art_params())


@ADVERSARIAL_ATTACKS.register("cw_inf")
class CarliniWagnerLinf(EvasionAttack):
    """Carlini-Wagner L-infinity (ART ``CarliniLInfMethod``), untargeted only.

    ART 1.20 keeps a candidate only when the model's label differs from the label it was given; for a targeted
    attack that label is the target, so it keeps exactly the examples that missed their target. Its Next and LL
    variants are therefore refused here; the study's CW-infinity Next/LL columns use :class:`MinimalEpsilonBIM`.
    It is also slow: one input at a time, a tau loop, a constant loop and Adam inside.

    Defaults: the study's MNIST confidence 10 and 1000 iterations; Carlini's learning rate 0.005, initial constant
    1e-5, largest constant 20, decrease factor 0.9, constant factor 2.
    """

    name: ClassVar[str] = "cw_inf"
    supports: ClassVar[tuple[str, ...]] = ("untargeted",)
    confidence: float = Field(10.0, ge=0, description="logit margin the example must have")
    learning_rate: float = Field(0.005, gt=0, description="step size of Adam")
    max_iter: int = Field(1000, ge=1, le=100_000, description="Adam iterations per constant")
    decrease_factor: float = Field(0.9, gt=0, lt=1, description="factor on the L-infinity bound tau after a success")
    initial_const: float = Field(1e-5, gt=0, description="first value of the constant c")
    largest_const: float = Field(20.0, gt=0, description="largest value of c tried")
    const_factor: float = Field(2.0, gt=1, description="factor on c after a failure")

    def art_attack(self, classifier):
        from art.attacks.evasion import CarliniLInfMethod

        return CarliniLInfMethod(
            classifier,
            confidence=self.confidence,
            targeted=False,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            decrease_factor=self.decrease_factor,
            initial_const=self.initial_const,
            largest_const=self.largest_const,
            const_factor=self.const_factor,
            batch_size=1,
            verbose=False,
        )


@ADVERSARIAL_ATTACKS.register("min_eps_bim")
class MinimalEpsilonBIM(EvasionAttack):
    """Stand-in for CW-infinity Next/LL: ART's targeted ``BasicIterativeMethod`` at the smallest working epsilon.

    Not Carlini-Wagner. Like CW-infinity it looks for the smallest L-infinity perturbation that makes the model
    output the target with a logit margin of at least ``confidence``: it tries ``grid`` epsilons spaced
    geometrically from ``eps_min`` to ``eps_max`` (each with ``max_iter`` steps of 2.5 eps / ``max_iter``), and keeps
    for each input the first epsilon whose rounded example reaches the margin; inputs no epsilon solves keep the
    last try. Chosen because ART's own ``CarliniLInfMethod`` cannot run targeted (see :class:`CarliniWagnerLinf`).

    Default ``grid`` 47: from 1/255 to 0.5, consecutive epsilons are 1/0.9 apart, the resolution of CW-infinity's
    search (its bound tau shrinks by the decrease factor 0.9). A coarser grid overshoots the smallest epsilon: with
    12 steps (1.55 apart) 11 of 20 LL examples on MNIST badnet_cnn ended at 0.5, which rounds to 128/255 and so
    survives 1-bit squeezing; with 47, 1 of 20 (mean L-infinity 0.42 and 0.36).
    """

    name: ClassVar[str] = "min_eps_bim"
    supports: ClassVar[tuple[str, ...]] = ("untargeted", "next", "ll")
    confidence: float = Field(10.0, ge=0, description="logit margin required (CW-infinity's confidence)")
    eps_min: float = Field(1 / 255, gt=0, le=1, description="smallest epsilon tried")
    eps_max: float = Field(0.5, gt=0, le=1, description="largest epsilon tried")
    grid: int = Field(47, ge=1, le=200, description="epsilons tried (default: 1/0.9 apart, as CW-infinity)")
    max_iter: int = Field(20, ge=1, le=10_000, description="BIM steps per epsilon, each of 2.5 eps / max_iter")

    @model_validator(mode="after")
    def _ordered(self) -> MinimalEpsilonBIM:
        if self.eps_min > self.eps_max:
            raise ValueError(f"eps_min ({self.eps_min}) must not exceed eps_max ({self.eps_max})")
        return self

    def epsilons(self) -> list[float]:
        """The epsilons tried, ascending."""
        return np.geomspace(self.eps_min, self.eps_max, self.grid).tolist()

    def generate(self, classifier, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        from art.attacks.evasion import BasicIterativeMethod

        targeted = self.target != "untargeted"
        out = x.copy()
        todo = np.arange(len(x))
        for eps in self.epsilons():
            bim = BasicIterativeMethod(
                classifier,
                eps=eps,
                eps_step=2.5 * eps / self.max_iter,
                max_iter=self.max_iter,
                targeted=targeted,
                batch_size=self.batch_size,
                verbose=False,
            )
            adv = bim.generate(x[todo], y=labels[todo])
            out[todo] = adv
            logits = classifier.predict(np.rint(np.clip(adv, 0, 1) * 255) / 255, batch_size=self.batch_size)
            own = logits[np.arange(len(todo)), labels[todo]]
            logits[np.arange(len(todo)), labels[todo]] = -np.inf
            margin = own - logits.max(axis=1) if targeted else logits.max(axis=1) - own
            todo = todo[margin < self.confidence]
            if len(todo) == 0:
                break
        return out


@ADVERSARIAL_ATTACKS.register("deepfool")
class DeepFool(EvasionAttack):
    """DeepFool (ART ``DeepFool``), untargeted: linearize, step to the nearest class boundary, repeat; the final
    perturbation is scaled by 1 + ``overshoot``.

    Defaults: overshoot 0.02, ``max_iter`` 50 and all 10 top classes (the study's DeepFool wrapper); the study ran
    DeepFool only on CIFAR-10 (overshoot 10) and ImageNet (35), not on MNIST.
    """

    name: ClassVar[str] = "deepfool"
    supports: ClassVar[tuple[str, ...]] = ("untargeted",)
    overshoot: float = Field(0.02, ge=0, description="the final perturbation is scaled by 1 + overshoot")
    max_iter: int = Field(50, ge=1, le=10_000, description="linearize-and-step iterations")
    nb_grads: int = Field(10, ge=2, description="classes considered at each step (the most likely ones)")

    def art_attack(self, classifier):
        from art.attacks.evasion import DeepFool as ArtDeepFool

        return ArtDeepFool(
            classifier,
            max_iter=self.max_iter,
            epsilon=self.overshoot,
            nb_grads=min(self.nb_grads, classifier.nb_classes),
            batch_size=self.batch_size,
            verbose=False,
        )


@ADVERSARIAL_ATTACKS.register("jsma")
class JSMA(EvasionAttack):
    """Jacobian-based Saliency Map Attack (ART ``SaliencyMapMethod``), targeted: raise pairs of pixels by
    ``theta`` until the target is reached or a fraction ``gamma`` of the values has changed.

    Defaults: theta 1, gamma 0.1 (the study's). Departure (ART): ART ranks pixels by the target's gradient alone;
    Papernot's saliency map (cleverhans, which the study ran) also weighs the other classes' gradients, and is
    stronger. Untargeted JSMA is not offered (ART would pick random targets).
    """

    name: ClassVar[str] = "jsma"
    supports: ClassVar[tuple[str, ...]] = ("next", "ll")
    target: Target = Field("next", description="next, the class after the true one, or ll, the least likely class")
    theta: float = Field(1.0, ge=-1, le=1, description="change of each chosen pixel per step")
    gamma: float = Field(0.1, gt=0, le=1, description="largest fraction of the input's values that may change")

    def art_attack(self, classifier):
        from art.attacks.evasion import SaliencyMapMethod

        return SaliencyMapMethod(
            classifier, theta=self.theta, gamma=self.gamma, batch_size=self.batch_size, verbose=False
        )
