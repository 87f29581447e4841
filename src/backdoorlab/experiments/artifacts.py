"""Per-cell artifacts (detector scores, curves, verdicts, example images) kept beside a run for its report.

Saved with ``torch.save`` and loaded with ``weights_only=True``: besides tensors and plain containers, only
dataclasses defined in ``backdoorlab`` are accepted, so nothing in the file can run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils.files import save_with


def artifact_path(run_dir: Path, cell_id: str) -> Path:
    return run_dir / "cells" / f"{hashlib.sha1(cell_id.encode()).hexdigest()[:16]}.pt"


def portable(artifacts: dict[str, Any]) -> dict[str, Any]:
    """The artifacts without models (large, and rebuilt from the cache when needed)."""
    return {k: v for k, v in artifacts.items() if not isinstance(v, nn.Module)}


def save_artifacts(path: Path, artifacts: dict[str, Any]) -> None:
    save_with(path, lambda tmp: torch.save(portable(artifacts), tmp))


def _allowed_globals(path: Path) -> list[type]:
    allowed = []
    for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)):
        module, _, attr = name.rpartition(".")
        if not module.startswith("backdoorlab."):
            continue
        obj = getattr(importlib.import_module(module), attr, None)
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            allowed.append(obj)
    return allowed


def load_artifacts(path: Path) -> dict[str, Any]:
    """The artifacts saved at ``path``; an empty dict when the file is missing or holds anything unsafe."""
    if not path.is_file():
        return {}
    try:
        with torch.serialization.safe_globals(_allowed_globals(path)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable or unsafe: the report goes on without this cell's figures
        return {}
