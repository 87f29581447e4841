"""Checkpoints: state dict + architecture name + input shape + classes, written atomically, read safely.

A checkpoint is a dict saved with ``torch.save`` holding only tensors and plain data, so it loads with
``torch.load(weights_only=True)``: nothing in the file is executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from ..utils.files import save_with
from .architectures import build_model

FORMAT = "backdoorlab-checkpoint/1"


def save_checkpoint(
    path: str | Path,
    model: nn.Sequential,
    *,
    architecture: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save ``model`` (built by :func:`build_model`) and what is needed to rebuild it; ``extra`` is plain data."""
    payload = {
        "format": FORMAT,
        "architecture": architecture,
        "input_shape": list(input_shape),
        "num_classes": int(num_classes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    save_with(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dict, loaded with ``weights_only=True``."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: checkpoint not found")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt file can fail anywhere inside the unpickler
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{p}: not a readable backdoorlab checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{p}: not a backdoorlab checkpoint (format {FORMAT} expected)")
    return payload


def load_checkpoint(path: str | Path) -> tuple[nn.Sequential, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) from a file written by :func:`save_checkpoint`."""
    payload = read_checkpoint(path)
    model = build_model(payload["architecture"], payload["input_shape"], payload["num_classes"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ModelFileError(
            f"{path}: weights do not fit {payload['architecture']} ({str(err).splitlines()[0]})"
        ) from None
    return model.eval(), payload
