"""The trainer: the CPU path gives exactly the weights of the plain loop it replaced; bf16 is a flag."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from backdoorlab.models import TrainingConfig, build_model, train_model
from backdoorlab.models.training import (
    autocast_for,
    fits_on_device,
    make_optimizer,
    make_scheduler,
    random_shift,
    uses_channels_last,
)
from backdoorlab.utils.seeding import make_generator, seed_everything


def plain_loop(model, x, y, cfg, seed):
    """The trainer as it was before the GPU work (data on the CPU, shifted there, fp32)."""
    seed_everything(seed)
    gen = make_generator(seed)
    model.train()
    opt = make_optimizer(model.parameters(), cfg)
    batches = math.ceil(len(x) / cfg.batch_size)
    sched = make_scheduler(opt, cfg, cfg.epochs * batches)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        for b in range(batches):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            loss = nn.functional.cross_entropy(model(random_shift(x[idx], cfg.augment_shift, gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@pytest.mark.parametrize("architecture", ["badnet_cnn", "cnn_small"])
def test_the_cpu_path_gives_the_weights_of_the_plain_loop(digits, architecture):
    cfg = TrainingConfig(epochs=2, augment_shift=2)
    x, y = digits.train.x[:300], digits.train.y[:300]
    args = (architecture, digits.input_shape, digits.num_classes, digits.mean, digits.std)
    ours = train_model(build_model(*args, seed=1), x, y, cfg, seed=1, device="cpu", progress=False)
    theirs = plain_loop(build_model(*args, seed=1), x, y, cfg, seed=1)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_bf16_is_asked_for_and_still_trains(digits):
    cfg = TrainingConfig(epochs=2, augment_shift=0, precision="bf16")
    x, y = digits.train.x[:300], digits.train.y[:300]
    args = ("badnet_cnn", digits.input_shape, digits.num_classes, digits.mean, digits.std)
    bf16 = train_model(build_model(*args, seed=0), x, y, cfg, seed=0, device="cpu", progress=False)
    fp32 = train_model(
        build_model(*args, seed=0), x, y, cfg.model_copy(update={"precision": "fp32"}), seed=0, device="cpu"
    )
    a, b = bf16.net[0][0].weight, fp32.net[0][0].weight
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.05)


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_device_choices():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert isinstance(autocast_for(cpu), type(autocast_for(cpu, "fp32")))  # nothing on the CPU by default
    assert isinstance(autocast_for(cpu, "bf16"), torch.autocast)
    assert isinstance(autocast_for(cuda), torch.autocast) and not isinstance(autocast_for(cuda, "fp32"), torch.autocast)
    assert fits_on_device(torch.zeros(3), cpu) and not fits_on_device(torch.zeros(3), torch.device("meta"))
    net = build_model("badnet_cnn", (1, 8, 8), 10, [0.5], [0.2])
    assert uses_channels_last(net, cuda) and not uses_channels_last(net, cpu)
    assert not uses_channels_last(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), cuda)
    shifted = random_shift(torch.rand(5, 1, 6, 6), 2, make_generator(0))
    assert shifted.shape == (5, 1, 6, 6)
