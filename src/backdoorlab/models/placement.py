"""Where a model's tensors live, and moving a model for the length of a block.

A model's device is read from its parameters *and* its buffers: a loaded ONNX graph keeps its weights as buffers
and has no parameter at all, and ``next(model.parameters())`` alone would leave it on the CPU.

:func:`misplaced` is the placement checker of the tests: it names every parameter and buffer of a model that is
not on the requested device. The tests run it with the ``meta`` device as the "other" device, which the CPU has:
a tensor left behind on the CPU is then as visible as one left behind by a CUDA run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from ((name, b) for name, b in model.named_buffers() if b is not None)


def module_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter, else of its first buffer; None when it holds no tensor."""
    first = next((t for _, t in _tensors(model)), None)
    return first.device if first is not None else None


def _same(a: torch.device, b: torch.device) -> bool:
    """Same device, taking ``cuda`` as ``cuda:<current>``."""
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        return True
    return a.index == b.index


def misplaced(model: nn.Module, device: str | torch.device) -> list[str]:
    """Names (``name@device``) of the parameters and buffers of ``model`` not on ``device``; [] when all are."""
    dev = torch.device(device)
    return [f"{name}@{t.device}" for name, t in _tensors(model) if not _same(t.device, dev)]


def check_placement(model: nn.Module, device: str | torch.device, what: str = "model") -> None:
    """Raise AssertionError naming every tensor of ``model`` that is not on ``device``."""
    wrong = misplaced(model, device)
    if wrong:
        raise AssertionError(f"{what}: {len(wrong)} tensor(s) not on {device}: {', '.join(wrong[:8])}")


@contextmanager
def on_device(model: nn.Module, device: str | torch.device) -> Iterator[nn.Module]:
    """``model`` with its parameters and buffers on ``device`` inside the block, moved back afterwards (to where its
    first tensor was; a model without tensors is not moved)."""
    dev = torch.device(device)
    home = module_device(model)
    moved = home is not None and (not _same(home, dev) or misplaced(model, dev))
    if moved:
        model.to(dev)
    try:
        yield model
    finally:
        if moved:
            model.to(home)
