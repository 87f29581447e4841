"""One source of trained models: the clean network of a setting and seed, and the backdoored network of an attack
and seed, each trained once and kept in the content-hashed cache.

The grid (:class:`~.workbench.Workbench`) and the population study (:mod:`.population`) both take their models
from here, and an attack that starts from a clean network (TrojanNet, the pruning-aware attack, Refool's reflection
selection; ``Attack.uses_clean_model``) is handed the very network the grid measures as the clean model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..attacks import Attack, Backdoor
from ..data import Dataset
from ..models import TrainingConfig, train_new_model
from ..utils.device import resolve_device
from .cache import ModelCache, cache_key

Log = Callable[[str], None]


def dataset_fingerprint(name: str, data_dir: str | None, defender_fraction: float | None = None) -> dict:
    """What identifies the data for the cache: the name, for files their size and modification time, and the
    defender's fraction when one redraws the val split (absent otherwise, so earlier keys stay valid)."""
    fp: dict = {"name": name, "data_dir": data_dir}
    if defender_fraction is not None:
        fp["defender_fraction"] = defender_fraction
    if name.startswith("npz:"):
        p = Path(name[4:]).expanduser()
        fp["file"] = [p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else None
    return fp


@dataclass(frozen=True)
class Setting:
    """What determines a model besides the attack and the seed: the data, the architecture, the training recipe.

    ``fingerprint`` identifies the data in cache keys (:func:`dataset_fingerprint`; default ``{"name": ...}``).
    """

    dataset: Dataset
    architecture: str
    training: TrainingConfig
    fingerprint: dict | None = None

    def key(self, attack: str, params: dict, seed: int) -> str:
        """The cache key of the model of ``attack`` (``"none"`` for the clean one) with ``params`` and ``seed``."""
        return cache_key(
            data=self.fingerprint or {"name": self.dataset.name},
            model=self.architecture,
            training=self.training.model_dump(),
            attack=attack,
            params=params,
            seed=seed,
        )


class ModelSource:
    """Trains or loads models, each at most once per process: from memory, else the cache, else training.

    ``trained`` lists the cache keys of the models this source trained (not loaded), in order: a default run
    trains each clean model once.
    """

    def __init__(
        self,
        cache: ModelCache | str | Path | None,
        *,
        device: str | torch.device = "auto",
        progress: bool | None = None,
        log: Log | None = None,
    ) -> None:
        self.cache = ModelCache(cache) if isinstance(cache, str | Path) else cache
        self.device = resolve_device(device)
        self.progress = progress
        self.log = log or (lambda _msg: None)
        self.trained: list[str] = []
        self._clean: dict[str, nn.Module] = {}
        self._backdoors: dict[str, Backdoor] = {}

    def clean(self, setting: Setting, seed: int) -> nn.Module:
        """The clean ``setting.architecture`` network of ``seed``, trained on the clean training split."""
        key = setting.key("none", {}, seed)
        if key in self._clean:
            return self._clean[key]
        loaded = self.cache.load_model(key) if self.cache is not None else None
        if loaded is not None:
            model = loaded[0]
            self.log(f"  clean model seed {seed}: from cache")
        else:
            ds = setting.dataset
            model = train_new_model(
                setting.architecture,
                ds,
                setting.training,
                seed=seed,
                device=str(self.device),
                progress=self.progress,
                description=f"clean {setting.architecture}, seed {seed}",
            )
            self.trained.append(key)
            if self.cache is not None:
                self.cache.save_model(key, model, setting.architecture, ds.input_shape, ds.num_classes)
        self._clean[key] = model
        return model

    def backdoor(self, setting: Setting, attack: Attack, seed: int) -> Backdoor:
        """The backdoor ``attack`` plants for ``seed``; an attack that starts from a clean network gets
        :meth:`clean` of the same setting and seed."""
        key = setting.key(attack.name, attack.model_dump(mode="json"), seed)
        if key in self._backdoors:
            return self._backdoors[key]
        ds = setting.dataset
        bd = self.cache.load_backdoor(key) if self.cache is not None else None
        if bd is not None:
            self.log(f"  {attack.name} seed {seed}: from cache")
        else:
            host = self.clean(setting, seed) if attack.uses_clean_model else None
            bd = attack.run(
                ds,
                setting.architecture,
                setting.training,
                seed=seed,
                device=str(self.device),
                progress=self.progress,
                clean_model=host,
            )
            self.trained.append(key)
            if self.cache is not None:
                self.cache.save_backdoor(key, bd, ds.input_shape, ds.num_classes)
        self._backdoors[key] = bd
        return bd
