"""The evaluator of the data family: data detectors and training-time defenses, measured against the attack.

- The **training set** the defender receives is the attack's poisoned training set (:func:`training_set`,
  rebuilt from the attack's parameters and seed and checked against the Backdoor's poisoned indices), or the clean
  training split for a clean model; the defender never receives the poison indices or the rate.
- A **data detector** (:func:`evaluate_data_detector`) is fitted on the model trained on that set, the set, and
  the defender's clean ``val`` split; its scores and decision are measured against the true poison indices (TPR,
  FPR, ROC-AUC, PR-AUC, precision), then the flagged samples are removed and a new network is trained on the rest
  by the one recipe (:func:`~backdoorlab.models.train_new_model`, same architecture, recipe and seed): its CA / ASR
  / RA, and DER / RIR against the backdoored model.
- A **training-time defense** (:func:`evaluate_training_defense`) trains on that set; CA / ASR / RA of its model,
  DER / RIR against the backdoored model, and its own figures (DPA's certified accuracy).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..attacks import ATTACKS, Backdoor, PoisoningAttack
from ..data import Dataset, Split
from ..defenses.data_detectors import DataDetector, TrainingDefense
from ..errors import ConfigError
from ..metrics import pr_auc, roc_auc
from ..models import TrainingConfig, train_new_model
from .evaluation import DefenseOutcome, EvaluationContext, make_probes, measure_model, repair_effect


def training_set(backdoor: Backdoor | None, dataset: Dataset, seed: int) -> tuple[Split, torch.Tensor]:
    """The training set the model was trained on and a bool (N,) mask of its poisoned rows.

    A clean model (None): the clean training split, no poison. A poisoning attack: its poisoned split rebuilt from
    its parameters and ``seed`` (the attack's own ``poison``), checked against ``backdoor.poisoned_indices``.
    Attacks that poison per batch or plant no poisoned rows have no such set: ConfigError.
    """
    if backdoor is None or backdoor.poisoned_indices is None:
        if backdoor is not None:
            raise ConfigError(f"attack {backdoor.attack} leaves no poisoned training set for a data defense")
        return dataset.train, torch.zeros(len(dataset.train), dtype=torch.bool)
    attack = ATTACKS.build(backdoor.attack, backdoor.params)
    if not isinstance(attack, PoisoningAttack):
        raise ConfigError(f"attack {backdoor.attack} is not a poisoning attack: no training set to scan")
    trigger = attack.train_trigger(attack.make_trigger(dataset))
    poisoned = attack.poison(dataset.train, trigger, attack.target_rule(dataset), seed)
    if not torch.equal(poisoned.poisoned_indices.sort().values, backdoor.poisoned_indices.sort().values):
        raise ConfigError(f"attack {backdoor.attack}: its poisoned training set could not be rebuilt for seed {seed}")
    mask = torch.zeros(len(poisoned.split), dtype=torch.bool)
    mask[poisoned.poisoned_indices] = True
    return poisoned.split, mask


def detection_rows(scores: torch.Tensor, flagged: torch.Tensor, poison: torch.Tensor) -> dict[str, float]:
    """Rates of a data detector against the true poison mask (all (N,)): ``removed`` (count), ``removed_fraction``,
    ``fpr`` (clean samples removed), and with poison ``tpr``, ``precision``, ``roc_auc``, ``pr_auc`` and
    ``poison_count``."""
    clean = ~poison
    rows = {
        "removed": float(flagged.sum()),
        "removed_fraction": float(flagged.float().mean()),
        "fpr": float(flagged[clean].float().mean()) if clean.any() else float("nan"),
    }
    if poison.any():
        rows |= {
            "poison_count": float(poison.sum()),
            "tpr": float(flagged[poison].float().mean()),
            "precision": float((flagged & poison).sum() / flagged.sum()) if flagged.any() else float("nan"),
            "roc_auc": roc_auc(scores[clean], scores[poison]),
            "pr_auc": pr_auc(scores[clean], scores[poison]),
        }
    return rows


def defender_dataset(dataset: Dataset, train: Split) -> Dataset:
    """What a training-time defense may read: ``train`` as the training split, the clean ``val``, the classes and
    the normalization; the test split is left empty."""
    empty = Split(dataset.val.x[:0], dataset.val.y[:0])
    return Dataset(dataset.name, train, dataset.val, empty, dataset.classes, dataset.mean, dataset.std)


def _setting(ctx: EvaluationContext, backdoor: Backdoor | None) -> tuple[str, TrainingConfig]:
    architecture = ctx.architecture or (backdoor.architecture if backdoor is not None else None)
    if architecture is None or ctx.training is None:
        raise ConfigError("a data defense needs the setting's architecture and training recipe to retrain")
    return architecture, ctx.training


def _against(model: nn.Module, after: dict[str, float], backdoor: Backdoor | None, ctx) -> dict[str, float]:
    """``after`` plus DER / RIR against ``model`` when it carries a backdoor."""
    if backdoor is None:
        return dict(after)
    before = measure_model(model, backdoor, ctx.dataset.test, device=ctx.device)
    return dict(after) | repair_effect(before, after)


def evaluate_data_detector(
    detector: DataDetector,
    model: nn.Module,
    backdoor: Backdoor | None,
    ctx: EvaluationContext,
    *,
    retrain: bool = True,
) -> DefenseOutcome:
    """Detection rates against the true poison, then filter and retrain: CA / ASR / RA / DER / RIR.

    ``retrain=False`` stops after the detection rates (a benchmark's detection-only cells: no network is trained).
    """
    ds = ctx.dataset
    train, poison = training_set(backdoor, ds, ctx.seed)
    start = time.perf_counter()
    detection = detector.fit(model, train, ds.val, seed=ctx.seed, device=ctx.device).detection_
    metrics = detection_rows(detection.scores, detection.flagged, poison)
    metrics |= {"detect_seconds": time.perf_counter() - start, "suspicious_classes": len(detection.suspicious_classes)}
    if detector.has_dataset_test:
        metrics["poison_found"] = float(bool(detection.suspicious_classes))
    artifacts = {
        "scores": detection.scores,
        "flagged": detection.flagged,
        "poisoned": poison,
        "class_statistics": {k: v.tolist() for k, v in detection.class_statistics.items()},
    }
    if not retrain:
        return DefenseOutcome(metrics, artifacts)
    architecture, training = _setting(ctx, backdoor)
    kept = train.subset((~detection.flagged).nonzero().flatten())
    retrained = train_new_model(
        architecture, ds, training, split=kept, seed=ctx.seed, device=str(ctx.device), progress=ctx.progress
    )
    metrics |= _against(model, measure_model(retrained, backdoor, ds.test, device=ctx.device), backdoor, ctx)
    return DefenseOutcome(metrics, artifacts)


def evaluate_training_defense(
    defense: TrainingDefense, model: nn.Module, backdoor: Backdoor | None, ctx: EvaluationContext
) -> DefenseOutcome:
    """Train through the poisoned set; CA / ASR / RA of the result, DER / RIR against the backdoored model, and
    the defense's own figures on the probes."""
    ds = ctx.dataset
    train, poison = training_set(backdoor, ds, ctx.seed)
    architecture, training = _setting(ctx, backdoor)
    start = time.perf_counter()
    trained = defense.train(
        train,
        defender_dataset(ds, train),
        architecture,
        training,
        seed=ctx.seed,
        device=ctx.device,
        progress=ctx.progress,
    )
    seconds = time.perf_counter() - start
    metrics = _against(model, measure_model(trained, backdoor, ds.test, device=ctx.device), backdoor, ctx)
    isolated = getattr(defense, "isolated_", None)  # ABL's isolated samples, measured against the true poison
    if isolated is not None:
        rows = detection_rows(isolated.float(), isolated, poison)
        metrics |= {f"isolation_{k}": v for k, v in rows.items() if k in ("tpr", "fpr", "precision", "removed")}
    figures, artifacts = defense.figures(trained, make_probes(backdoor, ds.test).as_mapping(), device=ctx.device)
    return DefenseOutcome({**metrics, "train_seconds": seconds, **figures}, {"model": trained, **artifacts})


def evaluate(defense, model: nn.Module, backdoor: Backdoor | None, ctx: EvaluationContext) -> DefenseOutcome:
    """The function of ``defense``'s family: :func:`evaluate_data_detector` or :func:`evaluate_training_defense`."""
    if isinstance(defense, DataDetector):
        return evaluate_data_detector(defense, model, backdoor, ctx)
    return evaluate_training_defense(defense, model, backdoor, ctx)
