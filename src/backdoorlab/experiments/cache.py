"""Cache of trained models, keyed by a hash of everything that determines them, the code included."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from .. import __version__
from ..attacks import Backdoor
from ..attacks.storage import backdoor_from_checkpoint, save_backdoor
from ..errors import ModelFileError
from ..models import load_checkpoint, save_checkpoint
from .fingerprint import code_fingerprint

CACHE_FORMAT = 1


def cache_key(**parts: Any) -> str:
    """A short sha256 of ``parts`` as canonical JSON (sorted keys), plus the cache format, the package version and
    the hash of the model-determining sources (:func:`~.fingerprint.code_fingerprint`): a model trained by other
    code is never found under this code's key."""
    base = {"_format": CACHE_FORMAT, "_version": __version__, "_source": code_fingerprint().source}
    payload = json.dumps({**base, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


class ModelCache:
    """Trained models under ``root/<key>.pt``; a corrupt or unreadable entry is treated as missing."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def save_model(
        self,
        key: str,
        model: nn.Sequential,
        architecture: str,
        input_shape,
        num_classes: int,
        extra: dict | None = None,
    ) -> None:
        save_checkpoint(
            self.path(key),
            model,
            architecture=architecture,
            input_shape=input_shape,
            num_classes=num_classes,
            extra=extra,
        )

    def load_model(self, key: str) -> tuple[nn.Sequential, dict] | None:
        if not self.path(key).is_file():
            return None
        try:
            return load_checkpoint(self.path(key))
        except ModelFileError:
            return None

    def save_backdoor(self, key: str, backdoor: Backdoor, input_shape, num_classes: int) -> None:
        save_backdoor(self.path(key), backdoor, input_shape, num_classes)

    def load_backdoor(self, key: str) -> Backdoor | None:
        loaded = self.load_model(key)
        return backdoor_from_checkpoint(*loaded) if loaded is not None else None
