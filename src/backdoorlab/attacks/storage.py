"""Save and load a :class:`Backdoor` (model + trigger + target rule + poisoned indices) as a checkpoint.

The file is a backdoorlab checkpoint whose ``extra`` holds the attack's parts as tensors and plain data, so
it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..models import load_checkpoint, save_checkpoint
from ..triggers import trigger_from_state
from .base import Backdoor, TargetRule


def save_backdoor(path: str | Path, backdoor: Backdoor, input_shape, num_classes: int) -> None:
    """Write ``backdoor`` to ``path`` atomically."""
    rule = backdoor.target_rule
    extra = {
        "attack": backdoor.attack,
        "params": json.loads(json.dumps(backdoor.params, default=list)),
        "trigger": backdoor.trigger.to_state() if backdoor.trigger is not None else None,
        "target_rule": dataclasses.asdict(rule) if rule is not None else None,
        "poisoned_indices": backdoor.poisoned_indices,
        "info": json.loads(json.dumps(backdoor.info, default=str)),
    }
    save_checkpoint(
        path,
        backdoor.model,
        architecture=backdoor.architecture or "",
        input_shape=input_shape,
        num_classes=num_classes,
        extra=extra,
    )


def backdoor_from_checkpoint(model, payload: dict) -> Backdoor | None:
    """The :class:`Backdoor` stored in a loaded checkpoint's ``extra``, or None for a plain model checkpoint."""
    extra = payload.get("extra") or {}
    if "attack" not in extra:
        return None
    trigger = trigger_from_state(extra["trigger"]) if extra.get("trigger") is not None else None
    rule = TargetRule(**extra["target_rule"]) if extra.get("target_rule") is not None else None
    return Backdoor(
        model=model,
        trigger=trigger,
        target_rule=rule,
        attack=extra["attack"],
        params=extra["params"],
        architecture=payload["architecture"],
        poisoned_indices=extra.get("poisoned_indices"),
        info=dict(extra.get("info") or {}),
    )


def load_backdoor(path: str | Path) -> Backdoor | None:
    """The backdoor saved at ``path`` by :func:`save_backdoor`, or None when the file holds a plain model."""
    model, payload = load_checkpoint(path)
    return backdoor_from_checkpoint(model, payload)
