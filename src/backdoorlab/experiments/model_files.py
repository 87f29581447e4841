"""A population of model files: N clean and N trojaned models written in the Trojan Detection Challenge's layout.

``backdoorlab population CONFIG -o OUT`` reads an ordinary run config (:class:`~.config.ExperimentConfig`): its
first dataset, its architectures (``model``), its training recipe, its attacks and ``population.k`` = N. Model i
of each role takes architecture ``models[i mod A]``; trojaned model i takes the (architecture, attack) pair
``i mod (A x attacks)``. Everything random is drawn from the population ``seed``: each model's training seed, each
trojaned model's target (TDC's rule: every class once in a shuffled order, repeated, then shuffled) and its
trigger's seed (``trigger_seed`` of the ``tdc`` attack, ``noise_seed`` of ``blend``); the ids ``id-0000`` ...
are shuffled so that an id says nothing of its role.

Each model goes to ``OUT/<id>/``: ``model.pt`` (the whole pickled module, as TDC and TrojAI ship them; loading it
back needs ``--trust-pickle``), ``info.json`` (ground truth: ``trojaned``, ``target_label``, ``trigger_type``,
``architecture``, ...), and on request ``model.torchscript.pt`` / ``model.onnx`` beside it, which the loaders
prefer (no code runs when they are read). A model's folder is written under a temporary name and renamed when
complete, so a killed run leaves no half-written model and a rerun resumes where it stopped; ``population.json``
records what the population is, and a rerun with another config, size, seed or formats is refused.

A trojaned model whose attack success rate on the test split stays below ``min_asr`` (default 0.5) is drawn
again (new training seed and trigger seed, up to ``attempts`` draws, the last one kept): a backdoor that did not
take is a clean model with a wrong label (TDC's blended trigger at alpha 0.1 often fails on BadNets' CNN on the
8x8 digits).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import Attack, Backdoor
from ..errors import ConfigError
from ..utils.files import write_atomic
from ..utils.progress import track
from ..utils.seeding import make_generator
from .config import ExperimentConfig
from .evaluation import measure_model, single_target
from .model_source import ModelSource, Setting, dataset_fingerprint

Log = Callable[[str], None]
FORMATS = ("torchscript", "onnx")  # written beside model.pt on request
FILE_NAMES = {"pickle": "model.pt", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
MANIFEST = "population.json"
SEED_RANGE = 2**31 - 1


@dataclass(frozen=True)
class PlannedModel:
    """One model to write: its id, role, architecture, training seed and (trojaned) attack with its draws."""

    id: str
    trojaned: bool
    architecture: str
    seed: int
    attack_label: str | None = None
    attack: Attack | None = None

    def redrawn(self, attempt: int) -> PlannedModel:
        """The same model drawn again (``attempt`` >= 1): new training seed and trigger seed, same target."""
        if attempt == 0:
            return self
        seed = (self.seed + 7919 * attempt) % SEED_RANGE
        attack = self.attack
        if attack is not None:
            attack = with_draws(attack, None, (seed + 1) % SEED_RANGE)
        return PlannedModel(self.id, self.trojaned, self.architecture, seed, self.attack_label, attack)


def with_draws(attack: Attack, target: int | None, trigger_seed: int | None) -> Attack:
    """``attack`` aimed at ``target`` (its ``target``, or ``targets = [target]``) with its trigger drawn from
    ``trigger_seed`` (its ``trigger_seed`` or ``noise_seed``); None leaves a parameter as it is, and so does an
    attack without it."""
    fields = type(attack).model_fields
    params = attack.model_dump()
    if target is not None and "target" in fields:
        params["target"] = target
    elif target is not None and "targets" in fields:
        params["targets"] = [target]
    for name in ("trigger_seed", "noise_seed"):
        if trigger_seed is not None and name in fields:
            params[name] = trigger_seed
    return type(attack).model_validate(params)


def tdc_targets(n: int, num_classes: int, gen: torch.Generator) -> list[int]:
    """``n`` targets the way TDC draws them: the classes in a random order, repeated to ``n``, shuffled again."""
    order = torch.randperm(num_classes, generator=gen).repeat(n // num_classes + 1)[:n]
    return [int(t) for t in order[torch.randperm(n, generator=gen)]]


def plan_population(cfg: ExperimentConfig, n: int, num_classes: int, seed: int = 0) -> list[PlannedModel]:
    """The ``2 n`` models of the population of ``cfg`` (see the module docstring), in id order."""
    if n < 1:
        raise ConfigError(f"a population needs at least 1 model per role, got {n}")
    attacks = cfg.build_attacks()
    if not attacks:
        raise ConfigError("the population config names no attack: list at least one under attacks")
    gen = make_generator(seed)
    archs = cfg.models
    seeds = torch.randint(0, SEED_RANGE, (2 * n,), generator=gen).tolist()
    trigger_seeds = torch.randint(0, SEED_RANGE, (n,), generator=gen).tolist()
    targets = tdc_targets(n, num_classes, gen)
    ids = [f"id-{int(k):04d}" for k in torch.randperm(2 * n, generator=gen)]
    planned = [PlannedModel(ids[i], False, archs[i % len(archs)], seeds[i]) for i in range(n)]
    pairs = [(a, lab, atk) for a in archs for lab, atk in attacks]
    for i in range(n):
        arch, label, attack = pairs[i % len(pairs)]
        drawn = with_draws(attack, targets[i], trigger_seeds[i])
        planned.append(PlannedModel(ids[n + i], True, arch, seeds[n + i], label, drawn))
    return sorted(planned, key=lambda p: p.id)


def _trigger_type(backdoor: Backdoor | None, label: str | None) -> str | None:
    if backdoor is None:
        return None
    params = backdoor.trigger.describe() if backdoor.trigger is not None else {}
    return str(params.get("trigger_type") or label or backdoor.attack)


def model_info(
    planned: PlannedModel, dataset: str, model: nn.Module, backdoor: Backdoor | None, measured: dict, attempts: int
) -> dict[str, Any]:
    """The ``info.json`` of a model: the ground truth a detection benchmark scores against, and how it was made."""
    trigger = backdoor.trigger.describe() if backdoor is not None and backdoor.trigger is not None else None
    return {
        "id": planned.id,
        "trojaned": planned.trojaned,
        "target_label": single_target(backdoor),
        "trigger_type": _trigger_type(backdoor, planned.attack_label),
        "attack": planned.attack.name if planned.attack is not None else None,
        "attack_params": planned.attack.model_dump(mode="json") if planned.attack is not None else None,
        "trigger": trigger,
        "architecture": planned.architecture,
        "dataset": dataset,
        "seed": planned.seed,
        "attempts": attempts,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        **{k: round(float(v), 6) for k, v in measured.items()},
    }


def write_model_files(model: nn.Module, folder: Path, input_shape: Sequence[int], formats: Sequence[str]) -> None:
    """``model.pt`` (the whole pickled module) and each of ``formats`` (torchscript, onnx) into ``folder``."""
    model = model.cpu().eval()
    torch.save(model, folder / FILE_NAMES["pickle"])
    example = torch.rand(2, *input_shape, generator=make_generator(0))
    if "torchscript" in formats:
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(model, example), str(folder / FILE_NAMES["torchscript"]))
    if "onnx" in formats:
        torch.onnx.export(
            model,
            (example,),
            str(folder / FILE_NAMES["onnx"]),
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
            dynamo=False,
        )


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(
            f"unknown model format {bad[0]!r}; model.pt is always written, add any of {', '.join(FORMATS)}"
        )
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ConfigError("writing ONNX files needs the onnx package: pip install onnx") from None
    return tuple(dict.fromkeys(formats))


def _claim(out: Path, manifest: dict) -> None:
    """Write ``population.json`` in ``out``, or check that the one there describes the same population."""
    path = out / MANIFEST
    if path.is_file():
        if json.loads(path.read_text()) != json.loads(json.dumps(manifest)):
            raise ConfigError(
                f"{out} holds another population (its {MANIFEST} differs: config, size, seed or formats); "
                "choose another output folder"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not a population folder; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(manifest, indent=2))


def write_population(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    n: int | None = None,
    seed: int = 0,
    formats: Sequence[str] = (),
    min_asr: float = 0.5,
    attempts: int = 3,
    device: str | None = None,
    progress: bool | None = None,
    log: Log | None = None,
) -> list[dict[str, Any]]:
    """Write (or complete) the population of ``cfg`` in ``out`` and return every model's info, in id order.

    ``n`` defaults to ``cfg.population.k`` (5 without a population section). Models already in ``out`` are kept.
    """
    log = log or (lambda _msg: None)
    if len(cfg.datasets) != 1:
        raise ConfigError(f"a population is of one dataset; the config names {len(cfg.datasets)}")
    if not 0 <= min_asr <= 1 or attempts < 1:
        raise ConfigError(f"min_asr must lie in [0, 1] and attempts be >= 1, got {min_asr} and {attempts}")
    formats = _check_formats(formats)
    n = n if n is not None else (cfg.population.k if cfg.population is not None else 5)
    data = cfg.datasets[0]
    ds = data.load()
    plan = plan_population(cfg, n, ds.num_classes, seed)  # fails on bad parameters before anything is written
    out = Path(out)
    manifest = {"config": cfg.model_dump(mode="json"), "n": n, "seed": seed, "formats": list(formats)}
    manifest |= {"min_asr": min_asr, "attempts": attempts}
    _claim(out, manifest)
    source = ModelSource(None, device=device or cfg.device, progress=False, log=log)
    fingerprint = dataset_fingerprint(data.name, data.data_dir)
    infos = []
    for planned in track(plan, "writing models", enabled=progress):
        folder = out / planned.id
        if (folder / "info.json").is_file():
            infos.append(json.loads((folder / "info.json").read_text()))
            continue
        setting = Setting(ds, planned.architecture, cfg.training, fingerprint)
        for attempt in range(attempts):
            drawn = planned.redrawn(attempt)
            backdoor = source.backdoor(setting, drawn.attack, drawn.seed) if drawn.attack is not None else None
            model = backdoor.model if backdoor is not None else source.clean(setting, drawn.seed)
            measured = measure_model(model, backdoor, ds.test, device=source.device)
            if backdoor is None or measured.get("asr", 1.0) >= min_asr:
                break
            log(f"  {planned.id}: ASR {measured['asr']:.2f} below {min_asr}; drawn again")
        info = model_info(drawn, data.name, model, backdoor, measured, attempt + 1)
        tmp = out / f".{planned.id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write_model_files(model, tmp, ds.input_shape, formats)
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        tmp.rename(folder)
        aim = (
            f"target {info['target_label']}, {info['trigger_type']}, ASR {info.get('asr', 0):.2f}, "
            if drawn.trojaned
            else ""
        )
        log(f"  {planned.id}: {planned.architecture}, {aim}clean accuracy {info['clean_accuracy']:.3f}")
        infos.append(info)
    return infos
