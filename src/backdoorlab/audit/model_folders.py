"""Folders of models as the field ships them: the Trojan Detection Challenge's and TrojAI's layouts.

A population folder holds one folder per model (at any depth up to 4, e.g. TDC's ``train/trojan/<id>/``), each
with a model file and, when known, its ground truth:

- **TDC**: ``<id>/model.pt`` (a whole pickled ``nn.Module``) and ``info.json``; the truth is ``trojaned``, else
  the presence of an attack specification, else the parent folder's name (``clean`` / ``trojan``); the target is
  ``target_label`` (or ``attack_specification.target_label``), the trigger ``trigger_type``.
- **TrojAI**: ``<id>/model.pt`` (a whole pickled module), ``config.json`` (``poisoned``, ``model_architecture``,
  ``trigger_target_class`` or ``triggers[0].target_class``), ``ground_truth.csv`` (one 0/1, which wins over
  the config), and clean example images in ``clean-example-data/``, ``clean_example_data/`` or ``example_data/``
  named ``class_<K>_example_<J>.png``.
- A folder with only a model file is read too, without ground truth.

Of the model files in a folder the ones that load without running code come first: ``model.torchscript.pt``,
``model.pt2``, ``model.onnx``, then ``model.pt``; a whole pickled module is only read with ``trust_pickle``
(:func:`~backdoorlab.models.loading.load_model_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

MODEL_FILES = ("model.torchscript.pt", "model.pt2", "model.onnx", "model.pt")
EXAMPLE_FOLDERS = ("clean-example-data", "clean_example_data", "example_data")
MAX_DEPTH = 4


@dataclass(frozen=True)
class ModelEntry:
    """One model of a population folder.

    Attributes:
        id: the model folder's path relative to the population folder (``id-0000``, ``train/clean/id-0003``).
        layout: ``tdc`` (``info.json``), ``trojai`` (``config.json`` or ``ground_truth.csv``) or ``plain``.
        model_file: the file to load (see the module docstring for the order).
        trojaned, target, trigger_type, architecture: the ground truth when the layout has it, else None.
        examples: the folder of clean example images, or None.
    """

    id: str
    folder: Path
    layout: str
    model_file: Path
    trojaned: bool | None = None
    target: int | None = None
    trigger_type: str | None = None
    architecture: str | None = None
    examples: Path | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, found a {type(value).__name__}")
    return value


def _flag(value: Any, where: Path) -> bool | None:
    """A truth value written as a bool, 0/1, or the strings true/false/1/0; DataError otherwise."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "1.0"):
        return True
    if text in ("0", "false", "0.0"):
        return False
    raise DataError(f"{where}: cannot read {value!r} as trojaned / poisoned (expected true/false or 1/0)")


def _label(value: Any) -> int | None:
    return None if value is None else int(value)


def _tdc_truth(folder: Path) -> dict[str, Any]:
    info = _read_json(folder / "info.json")
    spec = info.get("attack_specification") if isinstance(info.get("attack_specification"), dict) else {}
    trojaned = _flag(info.get("trojaned"), folder / "info.json")
    if trojaned is None and spec:
        trojaned = True
    if trojaned is None and folder.parent.name in ("clean", "trojan"):
        trojaned = folder.parent.name == "trojan"
    trigger = spec.get("trigger") if isinstance(spec.get("trigger"), dict) else {}
    return {
        "trojaned": trojaned,
        "target": _label(info.get("target_label", spec.get("target_label"))),
        "trigger_type": info.get("trigger_type") or trigger.get("trigger_type"),
        "architecture": info.get("architecture"),
    }


def _trojai_truth(folder: Path) -> dict[str, Any]:
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    trojaned = _flag(config.get("poisoned", config.get("POISONED")), folder / "config.json")
    truth_file = folder / "ground_truth.csv"
    if truth_file.is_file():
        trojaned = _flag(truth_file.read_text(encoding="utf-8").strip().split(",")[0], truth_file)
    triggers = config.get("triggers") if isinstance(config.get("triggers"), list) else []
    first = triggers[0] if triggers and isinstance(triggers[0], dict) else {}
    target = config.get("trigger_target_class", first.get("target_class"))
    kind = config.get("trigger_type") or first.get("trigger_executor") or first.get("type")
    return {
        "trojaned": trojaned,
        "target": _label(target) if trojaned else None,
        "trigger_type": kind if trojaned else None,
        "architecture": config.get("model_architecture") or config.get("MODEL_ARCHITECTURE"),
    }


def read_entry(folder: Path, root: Path) -> ModelEntry:
    """The :class:`ModelEntry` of a model folder; DataError when it holds no model file."""
    model_file = next((folder / name for name in MODEL_FILES if (folder / name).is_file()), None)
    if model_file is None:
        raise DataError(f"{folder}: no model file ({', '.join(MODEL_FILES)})")
    if (folder / "config.json").is_file() or (folder / "ground_truth.csv").is_file():
        layout, truth = "trojai", _trojai_truth(folder)
    elif (folder / "info.json").is_file():
        layout, truth = "tdc", _tdc_truth(folder)
    else:
        layout, truth = "plain", {}
    examples = next((folder / name for name in EXAMPLE_FOLDERS if (folder / name).is_dir()), None)
    ident = folder.relative_to(root).as_posix() if folder != root else folder.name
    return ModelEntry(ident, folder, layout, model_file, examples=examples, **truth)


def _model_folders(root: Path, depth: int) -> list[Path]:
    if any((root / name).is_file() for name in MODEL_FILES):
        return [root]
    if depth == 0:
        return []
    children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [f for child in children for f in _model_folders(child, depth - 1)]


def find_models(root: str | Path) -> list[ModelEntry]:
    """Every model folder under ``root`` (``root`` itself when it holds a model file), sorted by id; DataError
    when there is none. Hidden folders (a population being written) are skipped."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: not a folder of models")
    folders = _model_folders(base, MAX_DEPTH)
    if not folders:
        raise DataError(f"{base}: no model folder in it (a folder per model holding one of {', '.join(MODEL_FILES)})")
    return sorted((read_entry(f, base) for f in folders), key=lambda e: e.id)
