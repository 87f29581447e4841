"""Adversarial Neuron Pruning, ANP (Wu & Wang, NeurIPS 2021).

Learn a mask m in [0, 1] per neuron while the neurons are adversarially perturbed: each iteration draws a
multiplicative noise on each neuron's weight and bias term uniformly in [-eps, eps], takes ``steps`` signed
gradient-ascent steps on it (step eps / steps, clipped to [-eps, eps]), then updates the masks with
``alpha * CE(clean) + (1 - alpha) * CE(perturbed)`` (SGD, lr 0.2, momentum 0.9, masks clipped to [0, 1]).
Neurons whose mask falls below a threshold are pruned (their weight set to 0, the bias kept, as in the official
code).

Defaults are the paper's: eps 0.4, one step, alpha 0.2, 2000 iterations, batch 128, thresholds swept from 0 to
0.9 in steps of 0.05. Departures, and why:

- **the threshold is chosen on clean validation data only**: the largest threshold of the sweep, walked in
  increasing order, before the clean accuracy on the defender's data falls more than ``max_accuracy_drop``
  (2 points, fixed before any measurement) below the unpruned accuracy. The paper picks a fixed threshold (0.2)
  or a number of neurons, and BackdoorBench picks it with the test ASR (its issue #35): test or poisoned data
  never enter here. ``threshold`` fixes it instead;
- **neurons**: BatchNorm2d channels (the paper's), or Conv2d output channels for networks without BatchNorm
  (e.g. ``badnet_cnn``), where the mask and noise scale the conv's weight term and bias term the same way;
- BatchNorm layers keep their running statistics while the masks are learnt (eval mode; the official code runs
  the model in train mode on the defender's batches), so the pruned model is the input model minus its pruned
  neurons.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, PrivateAttr
from torch import nn

from ...utils.seeding import make_generator, seed_everything
from ..base import DEFENSES, Figures, Repair
from .neurons import NeuronCoefficients, accuracy, channels_of, endless_batches, need_data, neuron_layers, working_copy


@DEFENSES.register("anp")
class ANP(Repair):
    """Adversarial neuron perturbation, then pruning of the neurons with small masks."""

    name: ClassVar[str] = "anp"

    eps: float = Field(0.4, ge=0, le=1, description="bound of the multiplicative neuron perturbation")
    steps: int = Field(1, ge=1, le=100, description="gradient-ascent steps on the perturbation per iteration")
    alpha: float = Field(
        0.2, ge=0, le=1, description="weight of the clean loss against the perturbed loss in the mask objective"
    )
    iterations: int = Field(2000, ge=1, le=1_000_000, description="mask-optimisation iterations (mini-batches)")
    mask_lr: float = Field(0.2, gt=0, le=10, description="learning rate of the masks (SGD, momentum 0.9)")
    batch_size: int = Field(128, ge=1, description="clean images per iteration")
    max_accuracy_drop: float = Field(
        0.02,
        ge=0,
        le=1,
        description="pruning threshold rule: the largest threshold before clean validation accuracy falls more than "
        "this below the unpruned accuracy (absolute: 0.02 = 2 points)",
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="prune neurons whose mask is below this value instead of using the rule"
    )
    threshold_step: float = Field(0.05, gt=0, le=1, description="spacing of the threshold sweep")
    max_threshold: float = Field(0.9, gt=0, le=1, description="largest threshold of the sweep")
    _state: dict | None = PrivateAttr(default=None)

    def grid(self) -> list[float]:
        n = int(round(self.max_threshold / self.threshold_step))
        return [round(i * self.threshold_step, 6) for i in range(n + 1)]

    def learn_masks(self, model: nn.Module, clean, *, seed: int, device) -> list[torch.Tensor]:
        """The masks (one (C,) tensor in [0, 1] per neuron layer) learnt on ``clean``; ``model`` is not changed."""
        need_data(clean, self.name)
        net, dev = working_copy(model, device)
        for p in net.parameters():
            p.requires_grad_(False)
        layers = neuron_layers(net)
        seed_everything(seed)
        gen = make_generator(seed)
        masks = [torch.ones(channels_of(m), device=dev, requires_grad=True) for _, m in layers]
        opt = torch.optim.SGD(masks, lr=self.mask_lr, momentum=0.9)
        coef = NeuronCoefficients(layers)
        batches = endless_batches(len(clean), self.batch_size, gen)
        try:
            for _ in range(self.iterations):
                idx = next(batches)
                x, y = clean.x[idx].to(dev), clean.y[idx].to(dev)
                noise_w, noise_b = self._perturb(net, coef, masks, x, y, gen, dev)
                coef.weight, coef.bias = [m + n for m, n in zip(masks, noise_w, strict=True)], [1 + n for n in noise_b]
                loss_rob = F.cross_entropy(net(x), y)
                coef.weight, coef.bias = list(masks), [None] * len(masks)
                loss = self.alpha * F.cross_entropy(net(x), y) + (1 - self.alpha) * loss_rob
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for m in masks:
                        m.clamp_(0, 1)
        finally:
            coef.detach()
        return [m.detach().cpu() for m in masks]

    def _perturb(self, net, coef, masks, x, y, gen, dev):
        """Adversarial multiplicative noise on each neuron's weight and bias terms (random start, signed ascent)."""
        fixed = [m.detach() for m in masks]
        noise = [(torch.rand(len(m), generator=gen) * 2 - 1).mul_(self.eps).to(dev) for m in fixed * 2]
        if self.eps == 0:
            return noise[: len(fixed)], noise[len(fixed) :]
        for _ in range(self.steps):
            for n in noise:
                n.requires_grad_(True)
            k = len(fixed)
            coef.weight = [m + n for m, n in zip(fixed, noise[:k], strict=True)]
            coef.bias = [1 + n for n in noise[k:]]
            grads = torch.autograd.grad(F.cross_entropy(net(x), y), noise)
            noise = [
                (n.detach() + self.eps / self.steps * g.sign()).clamp(-self.eps, self.eps)
                for n, g in zip(noise, grads, strict=True)
            ]
        k = len(fixed)
        return noise[:k], noise[k:]

    @staticmethod
    def keep(masks: list[torch.Tensor], threshold: float) -> list[torch.Tensor]:
        return [(m >= threshold).float() for m in masks]

    def curve(self, model: nn.Module, masks: list[torch.Tensor], split, dev) -> list[float]:
        """Accuracy on ``split`` after pruning at each threshold of :meth:`grid`."""
        net, dev = working_copy(model, dev)
        coef = NeuronCoefficients(neuron_layers(net))
        try:
            out = []
            for t in self.grid():
                coef.weight = [k.to(dev) for k in self.keep(masks, t)]
                out.append(accuracy(net, split, dev))
            return out
        finally:
            coef.detach()

    def choose(self, val_accuracy: list[float]) -> float:
        """The threshold rule on the clean validation curve (or the fixed ``threshold``)."""
        if self.threshold is not None:
            return self.threshold
        chosen = 0.0
        for t, acc in zip(self.grid(), val_accuracy, strict=True):
            if acc < val_accuracy[0] - self.max_accuracy_drop:
                break
            chosen = t
        return chosen

    def repair(self, model, clean, *, seed=0, device="auto", progress=None) -> nn.Module:
        """A copy of ``model`` whose neurons with mask below the chosen threshold have weight 0."""
        masks = self.learn_masks(model, clean, seed=seed, device=device)
        _, dev = working_copy(nn.Identity(), device)
        val = self.curve(model, masks, clean, dev)
        threshold = self.choose(val)
        out, _ = working_copy(model, "cpu")
        with torch.no_grad():
            for (_, layer), k in zip(neuron_layers(out), self.keep(masks, threshold), strict=True):
                layer.weight.mul_(k.view(-1, *([1] * (layer.weight.ndim - 1))))
        pruned = int(sum(int((k == 0).sum()) for k in self.keep(masks, threshold)))
        self._state = {"masks": masks, "val_accuracy": val, "threshold": threshold, "pruned": pruned}
        return out.eval()

    def figures(self, model, probes, *, device="cpu") -> Figures:
        """Rows ``pruning_threshold``, ``pruned_neurons``, ``pruned_fraction``, ``val_accuracy_drop``; artifact
        ``anp_curve``: accuracy against the threshold on val (what the defender saw) and, for the report, test CA
        and ASR; ``anp_masks``: the learnt masks."""
        if self._state is None:
            raise RuntimeError("anp: call repair() before figures()")
        s, grid = self._state, self.grid()
        total = sum(len(m) for m in s["masks"])
        val = s["val_accuracy"]
        at = min(range(len(grid)), key=lambda i: abs(grid[i] - s["threshold"]))
        metrics = {
            "pruning_threshold": s["threshold"],
            "pruned_neurons": float(s["pruned"]),
            "pruned_fraction": s["pruned"] / max(1, total),
            "val_accuracy_drop": val[0] - val[at],
        }
        _, dev = working_copy(nn.Identity(), device)
        curve = {
            "thresholds": grid,
            "val_accuracy": val,
            "test_accuracy": self.curve(model, s["masks"], probes["test"], dev),
        }
        if "triggered" in probes:
            curve["asr"] = self.curve(model, s["masks"], probes["triggered"], dev)
        return metrics, {"anp_curve": curve, "anp_masks": [m.tolist() for m in s["masks"]]}
