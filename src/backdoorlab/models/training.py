"""Training and inference loops on in-memory tensors (small data sets make DataLoaders pure overhead).

On a GPU the trainer keeps the training split on the device when it fits (a quarter of the free memory), augments
there, trains convolutional networks in ``channels_last`` and under bf16 autocast (``precision``). The random draws
(batch order, shifts) are made on the CPU generator in both cases, so the CPU path gives the numbers it always gave.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..utils.device import resolve_device
from ..utils.progress import track
from ..utils.seeding import make_generator, seed_everything
from .placement import on_device


class TrainingConfig(BaseModel):
    """How a model is trained. Defaults reach ~98% on MNIST-5k with ``badnet_cnn`` in about 20 s on 2 CPU cores."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam, or sgd with momentum")
    lr: float = Field(2e-3, gt=0, le=10, description="learning rate at the start of training")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of SGD (unused by Adam)")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay of the optimizer")
    epochs: int = Field(40, ge=1, le=10_000, description="passes over the training split")
    batch_size: int = Field(64, ge=1, description="training images per step")
    schedule: Literal["none", "cosine", "step"] = Field(
        "cosine",
        description="learning-rate schedule: none (constant), cosine (annealed to 0 over training) or step "
        "(divided by 10 after each third)",
    )
    augment_shift: int = Field(
        2, ge=0, le=8, description="augmentation: each training image is translated by up to this many pixels"
    )
    augment_flip: bool = Field(
        False,
        description="augmentation: mirror each training image left-right with probability 1/2 (BackdoorBench's "
        "CIFAR-10 recipe; off by default, digits and signs are not mirror-symmetric)",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="arithmetic of the forward pass: auto (bf16 autocast on CUDA, fp32 elsewhere), fp32, or bf16",
    )


def make_optimizer(params, cfg: TrainingConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainingConfig, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, math.ceil(steps / 3)), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image of (N, C, H, W) by its own random offset of up to ``max_shift`` pixels, zero fill."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    # offsets drawn from ``gen`` (a CPU generator) wherever ``x`` lives: the same draws on every device
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2, n, 1), generator=gen).to(x.device, non_blocking=True)
    padded = nn.functional.pad(x, (max_shift,) * 4)
    rows = torch.arange(h, device=x.device) + max_shift + dy  # (N, H)
    cols = torch.arange(w, device=x.device) + max_shift + dx  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    # contiguous NCHW: the permuted view has channels-last strides, on which torch 2.13's CPU backward of a narrow
    # PreAct-ResNet corrupted memory (a batch of 87, widths 8-16: "free(): invalid next size")
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image of (N, C, H, W) left-right with probability 1/2, draws from ``gen`` (a CPU generator)."""
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device, non_blocking=True)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


# Per-batch poisoning (WaNet, BPP, Input-aware): (augmented images on the device, labels, generator) -> the
# batch to train on. It may return images that carry gradients of its own parameters (a trigger generator).
BatchHook = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def autocast_for(dev: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast where ``precision`` asks for it (``auto``: on CUDA only), else nothing."""
    if precision == "fp32" or (precision == "auto" and dev.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16)


def fits_on_device(x: torch.Tensor, dev: torch.device) -> bool:
    """True when ``x`` can stay on ``dev`` for a whole training run: the CPU, or a quarter of the free GPU memory."""
    if dev.type != "cuda":
        return dev.type == "cpu"
    free, _ = torch.cuda.mem_get_info(dev)
    return x.numel() * x.element_size() < free // 4


def uses_channels_last(model: nn.Module, dev: torch.device) -> bool:
    """Convolutional networks train in ``channels_last`` on CUDA (tensor cores); never on the CPU."""
    return dev.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def train_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainingConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    description: str = "training",
    batch_hook: BatchHook | None = None,
) -> nn.Module:
    """Train ``model`` in place with cross-entropy on ``x`` (N, C, H, W) in [0, 1] and ``y`` (N,) int64.

    ``batch_hook``: called on every augmented batch, returns the batch trained on (attacks that poison per batch).
    On CUDA the data stay on the device when they fit (:func:`fits_on_device`) and are augmented there, conv nets
    train in ``channels_last`` and the forward pass runs under bf16 autocast unless ``cfg.precision`` is ``fp32``.
    Returns the model, on the CPU, in eval mode and contiguous. The same seed gives the same weights on the same
    machine.
    """
    cfg = cfg or TrainingConfig()
    dev = resolve_device(device)
    seed_everything(seed)
    gen = make_generator(seed)
    model.to(dev).train()
    channels_last = uses_channels_last(model, dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), cfg)
    batches = math.ceil(len(x) / cfg.batch_size)
    sched = make_scheduler(opt, cfg, cfg.epochs * batches)
    loss_fn = nn.CrossEntropyLoss()
    xs, ys = (x.to(dev), y.to(dev)) if fits_on_device(x, dev) else (x, y)
    for _ in track(range(cfg.epochs), description, enabled=progress):
        order = torch.randperm(len(x), generator=gen)
        for b in range(batches):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(xs.device, non_blocking=True)
            xb = random_shift(xs[idx], cfg.augment_shift, gen).to(dev, non_blocking=True)
            if cfg.augment_flip:
                xb = random_flip(xb, gen)
            yb = ys[idx].to(dev, non_blocking=True)
            if batch_hook is not None:
                xb, yb = batch_hook(xb, yb, gen)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast_for(dev, cfg.precision):
                loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return model.cpu().eval()


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: str | torch.device = "auto"
) -> torch.Tensor:
    """Logits (N, K) of ``model`` on ``x`` (N, C, H, W), in eval mode, batched; returned on the CPU."""
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    try:
        with on_device(model, dev):
            outs = [model(x[i : i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def predict(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """Predicted labels (N,) int64."""
    return predict_logits(model, x, **kwargs).argmax(dim=1)
