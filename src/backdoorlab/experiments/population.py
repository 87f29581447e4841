"""Model-level detection over a population: K clean and K backdoored models of one setting, each inspected.

An inspector (Neural Cleanse, DeepInspect) decides per *model*; its error rates only mean something over many
models. :func:`inspect_population` trains (or loads from a :class:`ModelCache`) K clean models and K backdoored
ones whose seeds and targets differ, runs each inspector on every model and summarises:

- ``tpr``: backdoored models flagged; ``fpr``: clean models flagged;
- ``roc_auc`` of the model score (the largest anomaly index among labels below the median; backdoored =
  positive class);
- ``target_ranked_first``: backdoored models whose true target has the smallest reversed trigger;
- ``target_flagged``: backdoored models whose true target is among the flagged labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..attacks import ATTACKS, Attack, Backdoor
from ..data import Dataset
from ..defenses.inspection.base import Inspector
from ..defenses.inspection.verdict import Verdict
from ..errors import ConfigError
from ..metrics import clean_accuracy, model_detection_metrics
from ..models import TrainingConfig
from ..utils.device import resolve_device
from .cache import ModelCache
from .evaluation import EvaluationContext, evaluate_inspector, measure_model, single_target
from .model_source import ModelSource, Setting
from .store import ResultRow

Role = Literal["clean", "backdoored"]
Log = Callable[[str], None]


@dataclass
class Member:
    """One model of the population: its role, seed, target (None when clean), the model and its quality."""

    role: Role
    seed: int
    target: int | None
    model: nn.Module
    backdoor: Backdoor | None
    clean_accuracy: float
    asr: float | None = None


@dataclass
class InspectionRecord:
    """One (model, inspector) result: the inspector's label, the member's role/seed/target, verdict and rows."""

    inspector: str
    role: Role
    seed: int
    target: int | None
    verdict: Verdict
    metrics: dict[str, float]


@dataclass
class PopulationResult:
    """The population's members, every inspection record, and the attack's label."""

    attack: str
    members: list[Member]
    records: list[InspectionRecord] = field(default_factory=list)

    def inspectors(self) -> list[str]:
        return list(dict.fromkeys(r.inspector for r in self.records))

    def summary(self) -> dict[str, dict[str, float]]:
        """{inspector label: detection figures} (see :func:`detection_summary`)."""
        return {name: detection_summary([r for r in self.records if r.inspector == name]) for name in self.inspectors()}

    def result_rows(self, run: str, dataset: str, model: str) -> list[ResultRow]:
        """Rows for the results store: every per-model metric (attack ``none`` for clean models, the attack label
        otherwise; seed = the model's seed), then the summary as attack ``population:<attack>`` with seed -1."""
        rows = []
        for r in self.records:
            attack = "none" if r.role == "clean" else self.attack
            rows += [
                ResultRow(run, dataset, model, attack, r.inspector, r.seed, k, float(v)) for k, v in r.metrics.items()
            ]
        for name, figures in self.summary().items():
            rows += [
                ResultRow(run, dataset, model, f"population:{self.attack}", name, -1, k, float(v))
                for k, v in figures.items()
            ]
        return rows


def detection_summary(records: Sequence[InspectionRecord]) -> dict[str, float]:
    """Model-level detection figures of one inspector over clean and backdoored records (rates in [0, 1]).

    ``tpr``, ``fpr``, then ``roc_auc``, ``pr_auc`` and ``fpr_at_95pct_tpr`` of the model scores
    (:func:`~backdoorlab.metrics.model_detection_metrics`; NaN unless both roles are present),
    ``target_ranked_first`` and ``target_flagged`` (over backdoored models with one target), mean ``score`` per
    role, mean ``seconds``, and the counts ``n_clean``/``n_backdoored``.
    """
    clean = [r for r in records if r.role == "clean"]
    bad = [r for r in records if r.role == "backdoored"]
    mean = lambda v: sum(v) / len(v) if v else math.nan  # noqa: E731
    scores = lambda rs: torch.tensor([r.verdict.score for r in rs], dtype=torch.float64)  # noqa: E731
    with_target = [r for r in bad if "target_ranked_first" in r.metrics]
    return {
        "tpr": mean([float(r.verdict.infected) for r in bad]),
        "fpr": mean([float(r.verdict.infected) for r in clean]),
        **model_detection_metrics(scores(clean), scores(bad)),  # roc_auc, pr_auc, fpr_at_95pct_tpr
        "target_ranked_first": mean([r.metrics["target_ranked_first"] for r in with_target]),
        "target_flagged": mean([r.metrics["target_flagged"] for r in with_target]),
        "score_clean": mean([r.verdict.score for r in clean]),
        "score_backdoored": mean([r.verdict.score for r in bad]),
        "seconds": mean([r.verdict.seconds for r in records]),
        "n_clean": float(len(clean)),
        "n_backdoored": float(len(bad)),
    }


def attack_with_target(attack: Attack, target: int) -> Attack:
    """A copy of ``attack`` aimed at ``target``: its ``target`` parameter, or ``targets = [target]`` for attacks
    with one trigger per class (TrojanNet); ConfigError for an attack with neither."""
    fields = type(attack).model_fields
    if "target" in fields:
        return type(attack).model_validate({**attack.model_dump(), "target": target})
    if "targets" in fields:
        return type(attack).model_validate({**attack.model_dump(), "targets": [target]})
    raise ConfigError(f"attack {attack.name!r} has no target parameter, so a population cannot vary its target")


def spread_targets(k: int, num_classes: int) -> list[int]:
    """``k`` distinct labels spread over ``num_classes`` (k = 5 of 10: 0, 2, 4, 6, 8); repeats when k > classes."""
    return [(i * num_classes // k) % num_classes if k <= num_classes else i % num_classes for i in range(k)]


def _resolve_attack(attack: Attack | str | dict[str, Any]) -> Attack:
    if isinstance(attack, Attack):
        return attack
    if isinstance(attack, str):
        return ATTACKS.build(attack)
    spec = dict(attack)
    name = spec.pop("name", None)
    if name is None:
        raise ConfigError(f"attack spec needs a name; valid names: {', '.join(ATTACKS.names())}")
    spec.pop("label", None)
    return ATTACKS.build(name, spec)


class PopulationBuilder:
    """The population's members from the one :class:`~.model_source.ModelSource`: cache keys are the runner's
    (data, model, training, attack, params, seed), so pass the runner's ``data_fingerprint`` to share its cache."""

    def __init__(
        self,
        dataset: Dataset,
        architecture: str,
        training: TrainingConfig,
        cache: ModelCache | None,
        *,
        data_fingerprint: dict | None = None,
        device: str | torch.device = "auto",
        progress: bool | None = None,
        log: Log | None = None,
    ) -> None:
        self.setting = Setting(dataset, architecture, training, data_fingerprint)
        self.source = ModelSource(cache, device=device, progress=progress, log=log)

    def clean(self, seed: int) -> Member:
        model = self.source.clean(self.setting, seed)
        test = self.setting.dataset.test
        return Member("clean", seed, None, model, None, clean_accuracy(model, test, device=self.source.device))

    def backdoored(self, attack: Attack, seed: int) -> Member:
        bd = self.source.backdoor(self.setting, attack, seed)
        m = measure_model(bd.model, bd, self.setting.dataset.test, device=self.source.device)
        return Member("backdoored", seed, single_target(bd), bd.model, bd, m["clean_accuracy"], m.get("asr"))


def population_models(
    dataset: Dataset,
    architecture: str,
    training: TrainingConfig,
    attack: Attack | str | dict[str, Any],
    *,
    k: int = 5,
    seeds: Sequence[int] | None = None,
    targets: Sequence[int] | None = None,
    cache: ModelCache | str | Path | None = None,
    data_fingerprint: dict | None = None,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    log: Log | None = None,
) -> list[Member]:
    """K clean models (seeds ``seeds``) then K backdoored ones (seed ``seeds[i]``, target ``targets[i]``).

    Args:
        attack: an Attack, a registered name, or ``{name: ..., <params>}``; its ``target`` is replaced per model.
        k: models per role (>= 1). ``seeds`` default 0..k-1; ``targets`` default :func:`spread_targets`.
        cache: a :class:`ModelCache` or its folder; models found there are loaded instead of trained.
    """
    if k < 1:
        raise ConfigError(f"population size k must be >= 1, got {k}")
    seeds = list(range(k)) if seeds is None else [int(s) for s in seeds]
    targets = spread_targets(k, dataset.num_classes) if targets is None else [int(t) for t in targets]
    if len(seeds) != k or len(targets) != k:
        raise ConfigError(f"a population of k={k} needs {k} seeds and {k} targets, got {len(seeds)} and {len(targets)}")
    base = _resolve_attack(attack)
    attacks = [attack_with_target(base, t) for t in targets]
    for a in attacks:
        a.check(dataset)
    store = ModelCache(cache) if isinstance(cache, str | Path) else cache
    builder = PopulationBuilder(
        dataset,
        architecture,
        training,
        store,
        data_fingerprint=data_fingerprint,
        device=device,
        progress=progress,
        log=log,
    )
    return [builder.clean(s) for s in seeds] + [builder.backdoored(a, s) for a, s in zip(attacks, seeds, strict=True)]


def inspect_members(
    dataset: Dataset,
    members: Sequence[Member],
    inspectors: Sequence[Inspector | tuple[str, Inspector]],
    *,
    attack: str,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    log: Log | None = None,
) -> PopulationResult:
    """Run every inspector on every member (inspection seed = the member's seed) and collect the records."""
    named = [i if isinstance(i, tuple) else (i.method_name, i) for i in inspectors]
    for label, inspector in named:
        if not isinstance(inspector, Inspector):
            raise ConfigError(f"{label!r} is not a model inspector (kind {getattr(inspector, 'kind', '?')})")
    labels = [label for label, _ in named]
    for label in labels:
        if labels.count(label) > 1:
            raise ConfigError(f"two inspectors share the label {label!r}; give each a distinct label")
    log = log or (lambda _: None)
    dev = resolve_device(device)
    result = PopulationResult(attack, list(members))
    for member in members:
        ctx = EvaluationContext(dataset, seed=member.seed, device=dev, progress=progress)
        for label, inspector in named:
            outcome = evaluate_inspector(inspector, member.model, member.backdoor, ctx)
            verdict = outcome.artifacts["verdict"]
            result.records.append(
                InspectionRecord(label, member.role, member.seed, member.target, verdict, outcome.metrics)
            )
            aim = f", target {member.target}" if member.target is not None else ""
            log(f"  {label} on {member.role} seed {member.seed}{aim}: {verdict}")
    return result


def inspect_population(
    dataset: Dataset,
    architecture: str,
    training: TrainingConfig,
    attack: Attack | str | dict[str, Any],
    inspectors: Sequence[Inspector | tuple[str, Inspector]],
    *,
    k: int = 5,
    seeds: Sequence[int] | None = None,
    targets: Sequence[int] | None = None,
    cache: ModelCache | str | Path | None = None,
    data_fingerprint: dict | None = None,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    log: Log | None = None,
) -> PopulationResult:
    """Train or load K clean and K backdoored models (:func:`population_models`) and inspect each with every
    inspector (given as objects or ``(label, object)`` pairs); ``result.summary()`` gives TPR, FPR, ROC-AUC and
    the target-ranked-first rate per inspector."""
    members = population_models(
        dataset,
        architecture,
        training,
        attack,
        k=k,
        seeds=seeds,
        targets=targets,
        cache=cache,
        data_fingerprint=data_fingerprint,
        device=device,
        progress=progress,
        log=log,
    )
    label = _resolve_attack(attack).name
    return inspect_members(dataset, members, inspectors, attack=label, device=device, progress=progress, log=log)
