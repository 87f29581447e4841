"""Trainer throughput (issue 24): the toolkit's trainer against a fixed reference loop on the same model and data.

The reference loop: batch 128, data resident on the device, random crop (pad 4) and horizontal flip on the device,
bf16 autocast and ``channels_last`` (on CUDA), SGD (lr 0.01, momentum 0.9), the same model. The trainer runs with
SGD lr 0.01, batch 128, shift 4 (its crop) and its defaults (``precision="auto"``). Also timed: the trainer as it was
before (data and augmentation on the CPU, one copy per batch, fp32), to show the CPU path is no slower.

Target on CUDA: the trainer within 1.3x of the reference loop's images/s. On the CPU the figures are printed with
no target (the reference loop then runs in fp32 without ``channels_last``, as the trainer does there).

Model and data: ``preact_resnet18`` on 5,000 random 3x32x32 images (the CIFAR-10 slice's shape) on CUDA;
``cnn_small`` on 1,024 such images on the CPU. ``BENCH_TRAINER_N`` and ``BENCH_TRAINER_EPOCHS`` change them.
Timings are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import math
import os
import time

import torch
from torch import nn

from backdoorlab.models import TrainingConfig, build_model, train_model
from backdoorlab.models.training import autocast_for, make_optimizer, random_shift
from backdoorlab.utils.device import resolve_device

from .common import check, print_table

SHAPE, CLASSES, BATCH = (3, 32, 32), 10, 128


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def crop(padded: torch.Tensor, size: int) -> torch.Tensor:
    """A random ``size`` x ``size`` crop of each image of ``padded``, offsets drawn on its device."""
    n, dev = len(padded), padded.device
    top, left = torch.randint(0, padded.shape[-1] - size + 1, (2, n, 1), device=dev)
    rows = torch.arange(size, device=dev) + top  # (N, size)
    cols = torch.arange(size, device=dev) + left
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def reference_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, dev: torch.device) -> None:
    """The fixed reference: everything on the device, crop + flip there, bf16 + channels_last on CUDA, SGD."""
    cuda = dev.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model.to(dev, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xs, ys = x.to(dev), y.to(dev)
    n = len(xs)
    for _ in range(epochs):
        order = torch.randperm(n, device=dev)
        for b in range(math.ceil(n / BATCH)):
            idx = order[b * BATCH : (b + 1) * BATCH]
            xb = crop(nn.functional.pad(xs[idx], (4, 4, 4, 4)), 32)
            flip = torch.rand(len(idx), device=dev) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb).contiguous(memory_format=fmt)
            with autocast_for(dev, "auto"):
                loss = nn.functional.cross_entropy(model(xb), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def previous_trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainingConfig, dev) -> None:
    """The trainer before issue 24: CPU data, CPU augmentation, one host-to-device copy per batch, fp32."""
    gen = torch.Generator().manual_seed(0)
    model.to(dev).train()
    opt = make_optimizer(model.parameters(), cfg)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        for b in range(math.ceil(len(x) / cfg.batch_size)):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb = random_shift(x[idx], cfg.augment_shift, gen).to(dev)
            loss = nn.functional.cross_entropy(model(xb), y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _rate(fn, n: int, epochs: int, dev: torch.device) -> float:
    """Images per second of ``fn(epochs)`` after one warm-up epoch."""
    fn(1)
    _sync(dev)
    start = time.perf_counter()
    fn(epochs)
    _sync(dev)
    return n * epochs / (time.perf_counter() - start)


def main() -> bool:
    dev = resolve_device("auto")
    cuda = dev.type == "cuda"
    arch = "preact_resnet18" if cuda else "cnn_small"
    n = int(os.environ.get("BENCH_TRAINER_N", 5000 if cuda else 1024))
    epochs = int(os.environ.get("BENCH_TRAINER_EPOCHS", 3 if cuda else 1))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, *SHAPE, generator=gen), torch.randint(0, CLASSES, (n,), generator=gen)

    def net() -> nn.Module:
        return build_model(arch, SHAPE, CLASSES, [0.5] * 3, [0.25] * 3, seed=0)

    def cfg(e: int) -> TrainingConfig:
        return TrainingConfig(optimizer="sgd", lr=0.01, batch_size=BATCH, epochs=e, augment_shift=4, schedule="none")

    trainer = _rate(lambda e: train_model(net(), x, y, cfg(e), device=dev, progress=False), n, epochs, dev)
    reference = _rate(lambda e: reference_loop(net(), x, y, e, dev), n, epochs, dev)
    before = _rate(lambda e: previous_trainer(net(), x, y, cfg(e), dev), n, epochs, dev)
    card = torch.cuda.get_device_name(dev) if cuda else f"CPU, {torch.get_num_threads()} torch threads"
    print(f"device: {card}; model {arch}; {n} images 3x32x32; {epochs} timed epoch(s) after one warm-up")
    print_table(
        ["loop", "images/s", "vs reference"],
        [
            ["trainer (train_model)", f"{trainer:,.0f}", f"{trainer / reference:.2f}x"],
            ["reference loop", f"{reference:,.0f}", "1.00x"],
            ["trainer before issue 24", f"{before:,.0f}", f"{before / reference:.2f}x"],
        ],
    )
    if not cuda:
        print("no GPU: no target; CPU figures only meaningful on an idle machine")
        return True
    ok = trainer * 1.3 >= reference
    print_table(["target", "value", "goal", ""], [check("trainer / reference", trainer / reference, ">= 0.77", ok)])
    return ok
