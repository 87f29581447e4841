"""One attack or one defense outside a grid: what `backdoorlab attack` and `backdoorlab defend` run."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from ..attacks import ATTACKS, Backdoor
from ..attacks.storage import backdoor_from_checkpoint, save_backdoor
from ..data import Dataset, load_dataset
from ..defenses import DEFENSES
from ..errors import ConfigError
from ..models import TrainingConfig, load_checkpoint, save_checkpoint
from ..utils.device import resolve_device
from ..utils.files import write_atomic
from .evaluation import DefenseOutcome, EvaluationContext, evaluate_defense, measure_model


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["poison_rate=0.05", "position=[2, 3]"]`` -> ``{"poison_rate": 0.05, "position": [2, 3]}`` (YAML values)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--param {key}: value {value!r} is not valid YAML") from None
    return params


def attack_metrics(backdoor: Backdoor, dataset: Dataset, device) -> dict[str, float]:
    """Backdoor metrics on the test split (only clean accuracy for attacks without a trigger)."""
    return measure_model(backdoor.model, backdoor, dataset.test, device=device)


def run_single_attack(
    name: str,
    params: dict,
    *,
    dataset: str,
    data_dir: str | None,
    architecture: str,
    training: TrainingConfig,
    seed: int,
    device: str,
    output: Path,
    progress: bool | None,
) -> tuple[Backdoor, dict[str, float]]:
    """Validate everything, run the attack, measure it, and save the backdoored model to ``output``."""
    attack = ATTACKS.build(name, params)
    ds = load_dataset(dataset, data_dir)
    dev = resolve_device(device)
    attack.check(ds)
    from ..models import MODELS

    MODELS.get(architecture)
    backdoor = attack.run(ds, architecture, training, seed=seed, device=str(dev), progress=progress)
    metrics = attack_metrics(backdoor, ds, dev)
    save_backdoor(output, backdoor, ds.input_shape, ds.num_classes)
    return backdoor, metrics


def _check_fits(payload: dict, ds: Dataset, model_path: Path) -> None:
    if int(payload["num_classes"]) != ds.num_classes:
        raise ConfigError(
            f"{model_path}: the model has {payload['num_classes']} outputs but {ds.name} has {ds.num_classes} classes"
        )
    if tuple(payload["input_shape"]) != ds.input_shape:
        raise ConfigError(
            f"{model_path}: the model takes {tuple(payload['input_shape'])} inputs but {ds.name} images are "
            f"{ds.input_shape}"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"tensor{tuple(value.shape)}"
    return value


def run_single_defense(
    name: str,
    params: dict,
    *,
    model_path: Path,
    dataset: str,
    data_dir: str | None,
    seed: int,
    device: str,
    output: Path,
    progress: bool | None,
) -> tuple[DefenseOutcome, list[Path]]:
    """Run one defense on a saved model; write ``defense.json`` (and ``repaired.pt`` for repairs) into ``output``.

    When the checkpoint was written by `backdoorlab attack`, its trigger is used to measure ASR and detection.
    """
    defense = DEFENSES.build(name, params)
    ds = load_dataset(dataset, data_dir)
    model, payload = load_checkpoint(model_path)
    _check_fits(payload, ds, model_path)
    backdoor = backdoor_from_checkpoint(model, payload)
    if backdoor is not None and backdoor.trigger is None:
        backdoor = None
    ctx = EvaluationContext(ds, seed=seed, device=resolve_device(device), progress=progress)
    start = time.perf_counter()
    outcome = evaluate_defense(defense, model, backdoor, ctx)
    seconds = time.perf_counter() - start
    written = []
    repaired = outcome.artifacts.get("model")
    if isinstance(repaired, torch.nn.Module):
        path = output / "repaired.pt"
        if backdoor is not None:
            save_backdoor(path, dataclasses.replace(backdoor, model=repaired), ds.input_shape, ds.num_classes)
        else:
            save_checkpoint(
                path,
                repaired,
                architecture=payload["architecture"],
                input_shape=ds.input_shape,
                num_classes=ds.num_classes,
            )
        written.append(path)
    report = {
        "defense": name,
        "params": defense.model_dump(mode="json"),
        "model": str(model_path),
        "dataset": ds.name,
        "attack": backdoor.attack if backdoor is not None else None,
        "seed": seed,
        "seconds": seconds,
        "metrics": outcome.metrics,
        "artifacts": {k: _plain(v) for k, v in outcome.artifacts.items() if not isinstance(v, torch.nn.Module)},
    }
    write_atomic(output / "defense.json", json.dumps(report, indent=2, default=str))
    written.append(output / "defense.json")
    return outcome, written
