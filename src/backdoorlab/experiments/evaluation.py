"""The evaluator: the only code that holds both the attack and the defense, to measure one against the other.

Every family of defense is measured by one function here, with the same protocol:

- the defense receives the model and the defender's clean data (:func:`defender_data`: the ``val`` split, plus
  the fraction of the clean training split a defense declares it holds), never the attack nor the test split;
- the evaluator then measures on the ``test`` split: the triggered inputs are the test inputs whose true label
  differs from their target (:class:`Probes`);
- input detectors (:func:`evaluate_input_detector`): FPR on clean test inputs, detection rate, ROC-AUC, PR-AUC
  and TPR at 1% / 5% FPR on triggered ones (:func:`~backdoorlab.metrics.detection_metrics`);
- repairs (:func:`evaluate_repair`): clean accuracy, ASR and robust accuracy after the repair, and against the
  input model's, DER and RIR (BackdoorBench's definitions, :mod:`backdoorlab.metrics`);
- inspectors (:func:`evaluate_inspector`): the verdict's rows, checked against the true target
  (:func:`verdict_metrics`).

Method-specific figures come back through the hooks of :mod:`backdoorlab.defenses.base`, which receive labelled
probe inputs and never the :class:`~backdoorlab.attacks.Backdoor`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import Backdoor
from ..data import Dataset, Split
from ..defenses import Defense, InputDetector, Repair
from ..defenses.inspection.base import Inspector
from ..defenses.inspection.finetune import TriggerRepair
from ..defenses.inspection.verdict import Verdict
from ..metrics import (
    backdoor_metrics,
    clean_accuracy,
    defense_effectiveness_rate,
    detection_metrics,
    robust_improvement_rate,
)
from ..models import TrainingConfig, predict, train_model
from ..utils.seeding import make_generator

_DER_ROWS = ("clean_accuracy", "asr", "robust_accuracy")


@dataclass
class DefenseOutcome:
    """Figures measured for one (model, defense) cell, plus artifacts for the report (arrays, curves, verdicts)."""

    metrics: dict[str, float]
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationContext:
    """What the evaluator needs besides the defense and the model: the data, a seed, a device, progress on/off.

    ``verdicts``: inspections already run on this same model with this seed, by :func:`verdict_key`, shared by
    the cells of one model so that a repair built on an inspection (Neural Cleanse unlearning, DeepInspect
    patching) reuses the inspector cell's verdict instead of recomputing it; None keeps nothing.
    ``undefended``: the figures of :func:`measure_model` on this same model, shared by its cells (the repairs'
    DER and RIR need them once per model, not once per repair); an empty dict is filled on first use, None keeps
    nothing.
    ``retune``: also measure each repair's ``retuned_asr`` (:func:`retuned_asr`; off by default, it costs a
    fine-tuning per cell).
    """

    dataset: Dataset
    seed: int = 0
    device: torch.device | str = "cpu"
    progress: bool | None = None
    verdicts: dict[str, Verdict] | None = None
    undefended: dict[str, float] | None = None
    retune: bool = False
    architecture: str | None = None  # the setting's network and recipe: data defenses retrain with them
    training: TrainingConfig | None = None


@dataclass(frozen=True)
class Probes:
    """The labelled test inputs a model is measured on: ``test`` (clean, true labels) and, for a backdoor with a
    trigger, ``triggered``: the eligible test inputs with the trigger stamped, labelled with the attacker's
    targets, and ``triggered_true`` their true labels (for robust accuracy)."""

    test: Split
    triggered: Split | None = None
    triggered_true: torch.Tensor | None = None

    def as_mapping(self) -> dict[str, Split]:
        """``{"test": ..., "triggered": ...}`` (no ``triggered`` for a clean model): what the hooks receive."""
        return {"test": self.test} | ({"triggered": self.triggered} if self.triggered is not None else {})


def trigger_rules(backdoor: Backdoor) -> list[tuple[Any, Any]]:
    """(trigger, target rule) of each trigger of ``backdoor``: one pair, or for an attack with several triggers
    (TrojanNet: trigger i -> class ``mapping[i]``) one pair per trigger (``trigger.select(i)``,
    ``rule.for_trigger(i)``)."""
    trigger, rule = backdoor.trigger, backdoor.target_rule
    if rule.num_triggers == 1 or not hasattr(trigger, "select"):
        return [(trigger, rule)]
    return [(trigger.select(i), rule.for_trigger(i)) for i in range(rule.num_triggers)]


def make_probes(backdoor: Backdoor | None, test: Split) -> Probes:
    """The probes of ``test`` for ``backdoor`` (None, or a backdoor without trigger: clean inputs only). With
    several triggers, test input j carries trigger j mod m, so every trigger is probed and the count stays N."""
    if backdoor is None or backdoor.trigger is None or backdoor.target_rule is None:
        return Probes(test)
    pairs = trigger_rules(backdoor)
    xs, targets, trues = [], [], []
    for i, (trigger, rule) in enumerate(pairs):
        keep = rule.eligible(test.y) & (torch.arange(len(test.y)) % len(pairs) == i)
        y = test.y[keep]
        xs.append(trigger(test.x[keep]))
        targets.append(rule.targets(y))
        trues.append(y)
    y = torch.cat(trues)
    return Probes(test, Split(torch.cat(xs), torch.cat(targets)), y)


def measure_model(model: nn.Module, backdoor: Backdoor | None, test: Split, *, device="cpu") -> dict[str, float]:
    """``clean_accuracy``, and with a trigger ``asr`` and ``robust_accuracy``, of ``model`` on ``test``.

    With several triggers (TrojanNet) every trigger is measured: ``asr_trigger_i`` / ``robust_accuracy_trigger_i``
    per trigger, and ``asr`` / ``robust_accuracy`` their mean."""
    if backdoor is None or backdoor.trigger is None:
        return {"clean_accuracy": clean_accuracy(model, test, device=device)}
    pairs = trigger_rules(backdoor)
    if len(pairs) == 1:
        return backdoor_metrics(model, test, backdoor.trigger, backdoor.target_rule, device=device)
    metrics = {"clean_accuracy": clean_accuracy(model, test, device=device)}
    for i, (trigger, rule) in enumerate(pairs):
        keep = rule.eligible(test.y)
        pred = predict(model, trigger(test.x[keep]), device=device)
        metrics[f"asr_trigger_{i}"] = float((pred == rule.targets(test.y[keep])).float().mean())
        metrics[f"robust_accuracy_trigger_{i}"] = float((pred == test.y[keep]).float().mean())
    for name in ("asr", "robust_accuracy"):
        metrics[name] = sum(metrics[f"{name}_trigger_{i}"] for i in range(len(pairs))) / len(pairs)
    return metrics


def defender_data(defense: Defense, dataset: Dataset, seed: int) -> Split:
    """The defender's clean data: ``dataset.val``, plus ``defense.train_fraction_held`` of the clean training
    split drawn by ``seed``. Never the test split."""
    fraction = defense.train_fraction_held
    if fraction == 0:
        return dataset.val
    count = round(fraction * len(dataset.train))
    extra = dataset.train.subset(torch.randperm(len(dataset.train), generator=make_generator(seed))[:count])
    return Split(torch.cat([dataset.val.x, extra.x]), torch.cat([dataset.val.y, extra.y]))


def evaluate_defense(defense: Defense, model: nn.Module, backdoor: Backdoor | None, ctx: EvaluationContext):
    """Measure ``defense`` on ``model`` (which carries ``backdoor``, or None for a clean model): the function of
    its family. Returns a :class:`DefenseOutcome`."""
    if backdoor is not None and backdoor.trigger is None:
        backdoor = None  # label-flip poisoning: no trigger to measure against
    if isinstance(defense, InputDetector):
        return evaluate_input_detector(defense, model, backdoor, ctx)
    if isinstance(defense, Repair):
        return evaluate_repair(defense, model, backdoor, ctx)
    if isinstance(defense, Inspector):
        return evaluate_inspector(defense, model, backdoor, ctx)
    if defense.kind in ("data_detector", "training_defense"):
        from . import data_evaluation  # the data family's evaluator (it imports this module)

        return data_evaluation.evaluate(defense, model, backdoor, ctx)
    raise TypeError(f"{type(defense).__name__} is of no defense family the evaluator knows ({defense.kind})")


def evaluate_input_detector(
    detector: InputDetector, model: nn.Module, backdoor: Backdoor | None, ctx: EvaluationContext
) -> DefenseOutcome:
    """Fit on the defender's data; FPR on the clean test inputs; detection figures on the triggered ones."""
    ds = ctx.dataset
    detector.fit(
        model, defender_data(detector, ds, ctx.seed), seed=ctx.seed, device=ctx.device, num_classes=ds.num_classes
    )
    probes = make_probes(backdoor, ds.test)
    clean = detector.score(ds.test.x)
    attacked = detector.score(probes.triggered.x) if probes.triggered is not None else None
    metrics = {**detection_metrics(clean, attacked, detector.threshold_), **detector.calibration_metrics()}
    return DefenseOutcome(metrics, {"clean_scores": clean, "attacked_scores": attacked})


def evaluate_repair(
    repair: Repair, model: nn.Module, backdoor: Backdoor | None, ctx: EvaluationContext
) -> DefenseOutcome:
    """Repair a copy with the defender's data; CA / ASR / RA of the result on ``test``; DER and RIR against the
    input model; the repair's own figures (:meth:`~backdoorlab.defenses.Repair.figures`)."""
    ds = ctx.dataset
    clean = defender_data(repair, ds, ctx.seed)
    kwargs = {"seed": ctx.seed, "device": ctx.device, "progress": ctx.progress}
    if isinstance(repair, TriggerRepair):
        verdict = shared_verdict(repair.inspector(), model, clean, ctx)
        repaired = repair.repair_with_verdict(copy.deepcopy(model), clean, verdict, **kwargs)
    else:
        repaired = repair.repair(copy.deepcopy(model), clean, **kwargs)
    after = measure_model(repaired, backdoor, ds.test, device=ctx.device)
    metrics = dict(after)
    if backdoor is not None:
        metrics |= repair_effect(undefended_figures(model, backdoor, ctx), after)
        if ctx.retune:
            metrics["retuned_asr"] = retuned_asr(repaired, backdoor, ds, seed=ctx.seed, device=ctx.device)
    probes = make_probes(backdoor, ds.test)
    figures, artifacts = repair.figures(model, probes.as_mapping(), device=ctx.device)
    return DefenseOutcome({**metrics, **figures}, {"model": repaired, **artifacts})


RETUNING = TrainingConfig(optimizer="sgd", lr=0.01, epochs=5, batch_size=16, schedule="none", augment_shift=0)


def retuned_asr(
    repaired: nn.Module,
    backdoor: Backdoor,
    dataset: Dataset,
    *,
    seed: int = 0,
    device="cpu",
    fraction: float = 0.01,
    poisoned_fraction: float = 0.1,
    training: TrainingConfig = RETUNING,
) -> float:
    """The ASR that comes back when ``repaired`` is fine-tuned on a small, slightly poisoned set: the retuning
    attack of "superficial safety" (Min et al., NeurIPS 2024), a post-repair robustness check.

    ``fraction`` of the training split is drawn by ``seed``; ``poisoned_fraction`` of it (at least one image)
    is drawn among the images the target rule applies to and carries the trigger with the target label. A copy
    of ``repaired`` is fine-tuned on that set (SGD lr 0.01, momentum 0.9, 5 epochs; batch 16, our choice, so a
    set of a few dozen images still gives several steps) and its ASR on the test split is returned. The
    repaired model is not changed. This needs the attack, so it lives here and never in a repair.
    """
    gen = make_generator(seed + 7919)
    train = dataset.train
    count = max(2, round(fraction * len(train)))
    picked = torch.randperm(len(train), generator=gen)[:count]
    x, y = train.x[picked].clone(), train.y[picked].clone()
    rule = backdoor.target_rule
    eligible = torch.where(rule.eligible(y))[0]
    n_poison = min(len(eligible), max(1, round(poisoned_fraction * count)))
    chosen = eligible[torch.randperm(len(eligible), generator=gen)[:n_poison]]
    x[chosen] = backdoor.trigger(x[chosen])
    y[chosen] = rule.targets(y[chosen])
    retuned = train_model(copy.deepcopy(repaired), x, y, training, seed=seed, device=device, progress=False)
    return measure_model(retuned, backdoor, dataset.test, device=device)["asr"]


def undefended_figures(model: nn.Module, backdoor: Backdoor | None, ctx: EvaluationContext) -> dict[str, float]:
    """:func:`measure_model` of the undefended ``model`` on the test split, kept in ``ctx.undefended`` when the
    context shares it between the cells of one model."""
    if ctx.undefended:
        return ctx.undefended
    figures = measure_model(model, backdoor, ctx.dataset.test, device=ctx.device)
    if ctx.undefended is not None:
        ctx.undefended.update(figures)
    return figures


def repair_effect(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``der`` and ``rir`` of a repair from the ``clean_accuracy`` / ``asr`` / ``robust_accuracy`` of the model
    before and after it (:func:`~backdoorlab.metrics.defense_effectiveness_rate`,
    :func:`~backdoorlab.metrics.robust_improvement_rate`)."""
    ca, asr, ra = (before[k] for k in _DER_ROWS)
    ca2, asr2, ra2 = (after[k] for k in _DER_ROWS)
    return {"der": defense_effectiveness_rate(ca, ca2, asr, asr2), "rir": robust_improvement_rate(ca, ca2, ra, ra2)}


def verdict_key(inspector: Inspector) -> str:
    """What identifies an inspection of one model at one seed: the inspector's class and parameters."""
    return f"{type(inspector).__name__}:{inspector.model_dump_json()}"


def shared_verdict(inspector: Inspector, model: nn.Module, clean: Split, ctx: EvaluationContext) -> Verdict:
    """``inspector``'s verdict on ``model``: the one already computed for this model and seed when the context
    keeps them, else a new inspection on ``clean`` (then kept)."""
    key = verdict_key(inspector)
    if ctx.verdicts is not None and key in ctx.verdicts:
        return ctx.verdicts[key]
    verdict = inspector.inspect(
        model,
        clean if inspector.needs_clean_data else None,
        input_shape=ctx.dataset.input_shape,
        seed=ctx.seed,
        device=ctx.device,
        progress=ctx.progress,
    )
    if ctx.verdicts is not None:
        ctx.verdicts[key] = verdict
    return verdict


def evaluate_inspector(
    inspector: Inspector, model: nn.Module, backdoor: Backdoor | None, ctx: EvaluationContext
) -> DefenseOutcome:
    """Inspect ``model`` with the defender's data; rows from :func:`verdict_metrics`; the Verdict in artifacts,
    with the true trigger and target for the report."""
    verdict = shared_verdict(inspector, model, defender_data(inspector, ctx.dataset, ctx.seed), ctx)
    artifacts: dict[str, Any] = {"verdict": verdict, "summary": verdict.summary()}
    if backdoor is not None:
        c, h, w = ctx.dataset.input_shape
        artifacts["true_trigger_image"] = backdoor.trigger(torch.zeros(1, c, h, w))[0]
        if backdoor.trigger.mask is not None:
            artifacts["true_mask"] = backdoor.trigger.mask
    artifacts["true_target"] = single_target(backdoor)
    return DefenseOutcome(verdict_metrics(verdict, backdoor), artifacts)


def single_target(backdoor: Backdoor | None) -> int | None:
    """The one target label of a backdoor: all-to-one, or one trigger with one class (TrojanNet aimed at a single
    class); None for a clean model, all-to-all, several triggers, or no target rule."""
    rule = backdoor.target_rule if backdoor is not None else None
    if rule is None:
        return None
    if rule.mode == "all_to_one" or (rule.mode == "per_trigger" and len(set(rule.mapping)) == 1):
        return int(rule.target)
    return None


def verdict_metrics(verdict: Verdict, backdoor: Backdoor | None) -> dict[str, float]:
    """The rows an inspection contributes for one model.

    Always: ``flagged`` (0/1), ``anomaly_index_max`` (the model score: largest index below the median),
    ``suspected_labels`` (count), ``top_label`` (smallest statistic), ``seconds``. For a backdoor with one target
    (:func:`single_target`) also: ``target_anomaly_index`` (signed: negative when the target lies above the
    median), ``target_flagged`` (0/1), ``target_ranked_first`` (0/1), ``target_statistic`` (e.g. the reversed
    mask's L1) and, for masked triggers, ``true_trigger_l1`` (the real mask's L1 = its area for a 0/1 patch).
    """
    ranking = verdict.ranking
    metrics = {
        "flagged": float(verdict.infected),
        "anomaly_index_max": verdict.score,
        "suspected_labels": float(len(verdict.suspected)),
        "top_label": float(ranking[0]),
        "seconds": verdict.seconds,
    }
    target = single_target(backdoor)
    if target is not None and target < verdict.num_classes:
        index = abs(float(verdict.anomaly_index[target]))
        metrics |= {
            "target_anomaly_index": index if bool(verdict.below_median[target]) else -index,
            "target_flagged": float(target in verdict.suspected),
            "target_ranked_first": float(ranking[0] == target),
            "target_statistic": float(verdict.statistic[target]),
        }
        mask = backdoor.trigger.mask if backdoor is not None and backdoor.trigger is not None else None
        if mask is not None:
            metrics["true_trigger_l1"] = float(mask.sum())
    return metrics
