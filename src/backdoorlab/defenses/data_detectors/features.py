"""The representation every data detector works on: the input of the model's last linear layer."""

from __future__ import annotations

import torch
from torch import nn

from ...utils.device import resolve_device


def last_linear_layer(model: nn.Module) -> nn.Linear | None:
    """The model's last ``nn.Linear`` in module order (the classifier head), or None (e.g. a TorchScript graph)."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found = module
    return found


@torch.no_grad()
def penultimate_features(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: str | torch.device = "auto"
) -> torch.Tensor:
    """Float64 features (N, D) of ``x`` (N, C, H, W) in [0, 1]: the input of the model's last linear layer (the
    penultimate activations the papers use), or the logits when the model has no ``nn.Linear`` to hook (a
    TorchScript or ONNX graph). ``model`` is not changed; its train/eval mode is restored."""
    dev = resolve_device(device)
    head = last_linear_layer(model)
    caught: list[torch.Tensor] = []
    hook = None
    if head is not None:
        hook = head.register_forward_hook(lambda _m, inputs, _out: caught.append(inputs[0].flatten(1).cpu()))
    was_training = model.training
    model.eval()
    outs = []
    first = next(iter(model.parameters()), None)
    home = first.device if first is not None else torch.device("cpu")
    try:
        model.to(dev)
        for i in range(0, len(x), batch_size):
            outs.append(model(x[i : i + batch_size].to(dev)).float().cpu())
    finally:
        model.to(home).train(was_training)
        if hook is not None:
            hook.remove()
    feats = caught if head is not None else outs
    return torch.cat(feats).double() if feats else torch.empty(0, 0, dtype=torch.float64)
