"""TrojanNN (Liu, Ma, Aafer, Lee, Zhai, Wang, Zhang, NDSS 2018, "Trojaning Attack on Neural Networks"): a
patch optimised so that chosen neurons of a clean model fire strongly, then training on data poisoned with it."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..triggers import MaskedTrigger, stamp_trigger
from ..utils.seeding import make_generator
from .base import ATTACKS, Backdoor, RelabelPoisoningAttack


def selected_layer(model: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """The last two ``nn.Linear`` layers of ``model``: the first makes the neurons TrojanNN drives (the input of
    the second, the classifier)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise ConfigError("trojannn needs a model with a hidden fully connected layer before its classifier")
    return linears[-2], linears[-1]


def strongest_neurons(layer: nn.Linear, count: int) -> torch.Tensor:
    """Indices of the ``count`` neurons of ``layer`` with the largest total absolute incoming weight."""
    return layer.weight.detach().abs().sum(dim=1).topk(min(count, layer.out_features)).indices


Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]


def square_mask(image_shape, size: int, position: Corner, margin: int = 1) -> torch.Tensor:
    """A (1, H, W) 0/1 mask with a ``size`` x ``size`` square at ``position``."""
    return stamp_trigger(torch.ones(size, size), image_shape, position=position, margin=margin).mask


@ATTACKS.register("trojannn")
class TrojanNN(RelabelPoisoningAttack):
    """TrojanNN: select the ``neurons`` of the clean model's last hidden layer with the strongest connections,
    optimise the pixels of a square patch so that they reach ``target_value``, then train on data poisoned with
    the patch (dirty label, BadNets' poisoning parameters).

    Defaults are BackdoorBench's: 2 neurons, target value 100, 1000 optimisation steps, poison rate 0.1. The clean
    model is the setting's own (``uses_clean_model``: the grid's clean network of the same seed). Departures: the
    paper's apple-logo and watermark masks are replaced by a square of ``size_fraction`` of the image side at
    ``position`` (the paper's "trojan square" shape); the patch is optimised on a batch of the attacker's training
    images rather than on a blank image; the backdoored model is a new network trained on the poisoned split with
    the setting's recipe (as BackdoorBench), not the paper's fine-tuning of the original with reverse-engineered
    training data.
    """

    name: ClassVar[str] = "trojannn"
    uses_clean_model: ClassVar[bool] = True

    neurons: int = Field(2, ge=1, le=4096, description="neurons of the last hidden layer that the patch drives")
    target_value: float = Field(100.0, gt=0, description="activation the selected neurons are pushed to")
    steps: int = Field(1000, ge=1, le=100_000, description="Adam steps of the patch optimisation")
    lr: float = Field(0.1, gt=0, le=10, description="learning rate of the patch optimisation")
    batch: int = Field(64, ge=1, le=4096, description="training images the patch is optimised on")
    size_fraction: float = Field(0.25, gt=0, le=1, description="side of the square patch, as a fraction of the image")
    position: Corner = Field("bottom-right", description="the corner the patch sits in")

    def mask(self, dataset: Dataset) -> torch.Tensor:
        size = max(1, round(self.size_fraction * dataset.input_shape[1]))
        return square_mask(dataset.input_shape, size, self.position)

    def make_trigger(self, dataset: Dataset) -> MaskedTrigger:
        mask = self.mask(dataset)  # the optimised pattern comes from run(); this one only checks the shape
        return MaskedTrigger(mask, torch.zeros(dataset.input_shape), kind="trojannn")

    def optimise_patch(self, model: nn.Module, dataset: Dataset, seed: int) -> tuple[MaskedTrigger, dict]:
        """The trigger whose pattern drives the selected neurons of ``model`` (unchanged) to ``target_value``."""
        hidden, classifier = selected_layer(model)
        chosen = strongest_neurons(hidden, self.neurons)
        mask = self.mask(dataset)
        gen = make_generator(seed)
        x = dataset.train.x[torch.randperm(len(dataset.train), generator=gen)[: self.batch]]
        raw = (torch.rand(dataset.input_shape, generator=gen) * 2 - 1).requires_grad_(True)
        captured: list[torch.Tensor] = []
        handle = classifier.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
        was = model.training
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        opt = torch.optim.Adam([raw], lr=self.lr)
        try:
            for _ in range(self.steps):
                captured.clear()
                pattern = (torch.tanh(raw) + 1) / 2
                model((1 - mask) * x + mask * pattern)
                loss = ((captured[-1][:, chosen] - self.target_value) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                captured.clear()
                pattern = (torch.tanh(raw) + 1) / 2
                model((1 - mask) * x + mask * pattern)
                reached = captured[-1][:, chosen].mean().item()
        finally:
            handle.remove()
            for p in model.parameters():
                p.requires_grad_(True)
            model.train(was)
        trigger = MaskedTrigger(mask, pattern.detach(), kind="trojannn", params={"neurons": chosen.tolist()})
        return trigger, {"neurons": chosen.tolist(), "activation_reached": reached}

    def run(
        self, dataset, architecture, training, *, seed=0, device="auto", progress=None, clean_model=None
    ) -> Backdoor:
        host = self.host_model(
            clean_model, dataset, architecture, training, seed=seed, device=device, progress=progress
        )
        trigger, info = self.optimise_patch(host, dataset, seed)
        return self.poison_and_train(
            dataset, architecture, training, trigger, seed=seed, device=device, progress=progress, info=info
        )
