"""Feature Squeezing against adversarial examples: the study's detection-rate table (Xu, Evans, Qi, NDSS 2018).

The protocol of EvadeML-Zoo (``main.py``, ``detections/base.py``; docs/methods.md section 5), on the model given:

1. the first ``n`` correctly classified test inputs are attacked by every attack of the study's table;
2. the detection set is the first M test inputs (legitimate, M = number of adversarial examples, at most the test
   split) plus every adversarial example, failed ones included; it is split at random into two halves;
3. each squeezer configuration's threshold is set on the legitimate inputs of the first half only, so that a
   fraction ``fpr`` of them score above it (EvadeML's rule, :func:`~backdoorlab.metrics.threshold_for_rate`);
4. on the second half: detection rate per attack on its successful adversarial examples (a targeted attack succeeds
   only when it hits its target), overall detection rate on all of them together, FPR on the legitimate inputs,
   and ROC-AUC of legitimate inputs against successful adversarial examples (failed ones left out).

Scores come from the Feature Squeezing detector
(:class:`~backdoorlab.defenses.input_detectors.feature_squeezing.FeatureSqueezing`: L1 distance between the softmax
of an input and of its squeezed version; a configuration of several squeezers takes the maximum).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from ..adversarial import SQUEEZERS, AdversarialExamples, StudyAttack, preset_for_channels, study_attacks
from ..data import Split
from ..defenses.input_detectors.feature_squeezing import FeatureSqueezing
from ..defenses.input_detectors.squeezers import parse_squeezer
from ..metrics import flag_rate, roc_auc, threshold_for_rate
from ..models import predict
from ..utils.progress import track
from ..utils.seeding import make_generator
from .base import STUDIES, Study, StudyModels, StudyOutcome


def configuration_name(squeezers: list[str]) -> str:
    """``bit_depth_1+median_2x2``: the name of a squeezer configuration in metric names and tables."""
    return "+".join(squeezers)


def select_correct(model, split: Split, n: int, order: torch.Tensor, *, device="cpu") -> torch.Tensor:
    """Indices (at most ``n``,) into ``split`` of the first inputs, in ``order``, that ``model`` classifies right."""
    correct = predict(model, split.x[order], device=device) == split.y[order]
    return order[correct][:n]


def split_halves(size: int, generator: torch.Generator) -> torch.Tensor:
    """A random mask (size,) with ``size // 2`` entries True: the half whose legitimate inputs set the threshold
    (EvadeML: ``random.sample(range(size), int(0.5 * size))`` with seed 1234; we use the run's generator)."""
    mask = torch.zeros(size, dtype=torch.bool)
    mask[torch.randperm(size, generator=generator)[: size // 2]] = True
    return mask


@dataclass
class DetectionSet:
    """Legitimate inputs and adversarial examples, one row each: ``attack`` (N,) is -1 for legitimate inputs, else
    the attack's index; ``success`` (N,) is True for successful adversarial examples; ``first_half`` (N,) marks
    the half whose legitimate inputs set thresholds."""

    attack: torch.Tensor
    success: torch.Tensor
    first_half: torch.Tensor

    @property
    def legitimate(self) -> torch.Tensor:
        return self.attack < 0


def configuration_results(scores: torch.Tensor, dset: DetectionSet, n_attacks: int, fpr: float) -> dict[str, Any]:
    """One configuration's row of the table from its scores (N,) on the detection set.

    Returns ``threshold`` (from the first half's legitimate scores only), ``detection`` (list of n_attacks rates on
    the second half's successful examples of each attack; NaN where there are none), ``overall``, ``fpr`` (second
    half's legitimate inputs) and ``roc_auc`` (second half: legitimate vs successful adversarial).
    """
    legit, second = dset.legitimate, ~dset.first_half
    threshold = threshold_for_rate(scores[legit & dset.first_half], fpr, "empirical")
    saes = second & dset.success
    clean_test = scores[legit & second]
    detection = [flag_rate(scores[saes & (dset.attack == i)], threshold) for i in range(n_attacks)]
    auc = roc_auc(clean_test, scores[saes]) if bool(saes.any()) and len(clean_test) else float("nan")
    return {
        "threshold": threshold,
        "detection": detection,
        "overall": flag_rate(scores[saes], threshold),
        "fpr": flag_rate(clean_test, threshold),
        "roc_auc": auc,
    }


@STUDIES.register("fs_adversarial")
class FSAdversarial(Study):
    """Feature Squeezing's detection-rate table against adversarial examples, on the clean model of each setting
    and seed (the study needs no backdoor).

    ``run(model, None, ctx)`` attacks ``model`` with the study's attacks (:mod:`backdoorlab.adversarial`, ART)
    and runs the protocol of the module doc for each single squeezer and the joint detector. Rows:
    ``detection_rate[<configuration>][<attack>]``, ``overall_detection_rate[...]``, ``fpr[...]``, ``roc_auc[...]``,
    ``threshold[...]`` per configuration (``bit_depth_1+median_2x2``); the joint detector's figures also as plain
    ``tpr`` (its overall detection rate), ``fpr``, ``roc_auc``, ``threshold``; per attack ``success_rate[...]``,
    ``successful_test[...]`` (successful examples in the measured half), ``mean_l2[...]``, ``mean_linf[...]``,
    ``mean_l0[...]`` (fraction of changed values) and ``attack_seconds[...]``; and ``attacked``, ``legitimate``.
    The artifact ``table`` holds the whole table.

    Defaults are the study's: ``n`` 100 is its ``nb_examples``, ``fpr`` 0.05 its rate, and the attacks, their
    parameters and the squeezers those of its preset (:mod:`backdoorlab.adversarial.study`). Departure (``order``):
    MNIST-5k's test split is sorted by class, so its first 100 inputs are all zeros; the study's MNIST test set is
    not sorted, hence ``shuffled`` by default.

    Departure (protocol): thresholds come from legitimate *test* inputs (the first half), as in the study, not from
    the ``val`` split the other detectors use; they never see the half they are measured on.
    """

    name: ClassVar[str] = "fs_adversarial"
    runs_on: ClassVar[tuple[StudyModels, ...]] = ("clean",)

    n: int = Field(100, ge=2, le=100_000, description="correctly classified test inputs to attack")
    preset: Literal["auto", "mnist", "cifar10"] = Field(
        "auto",
        description="whose attacks, attack parameters and squeezers: mnist, cifar10 or auto (mnist for 1-channel "
        "images, else cifar10)",
    )
    attacks: list[str] | None = Field(
        None, min_length=1, description="column keys to run, e.g. [fgsm, bim, cw2_next]; None: all of the preset's"
    )
    attack_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="parameter overrides per column key or attack name, e.g. {cw2: {max_iter: 100}}",
    )
    squeezers: list[str] | None = Field(
        None, min_length=1, description="the single squeezers measured; None: the preset's"
    )
    joint: list[str] | None = Field(
        None, min_length=2, description="the squeezers of the joint detector; None: the preset's"
    )
    fpr: float = Field(0.05, ge=0, lt=1, description="target false-positive rate on the legitimate first half")
    order: Literal["shuffled", "as_is"] = Field(
        "shuffled",
        description="shuffled: 'the first' inputs of the test split in a random order drawn from the run's seed; "
        "as_is: in stored order",
    )
    batch_size: int = Field(256, ge=1, description="inputs per forward pass when scoring")

    @field_validator("squeezers", "joint")
    @classmethod
    def _parsable(cls, names: list[str] | None) -> list[str] | None:
        for name in names or []:
            parse_squeezer(name)  # ConfigError naming the valid forms
        return names

    @model_validator(mode="after")
    def _attacks_valid(self) -> FSAdversarial:
        presets = ["mnist", "cifar10"] if self.preset == "auto" else [self.preset]
        errors = []
        for preset in presets:
            try:
                study_attacks(preset, self.attacks, self.attack_params)  # type: ignore[arg-type]
                return self
            except ValueError as err:  # ConfigError is a ValueError
                errors.append(str(err))
        raise ValueError(errors[0])

    def configurations(self, preset: str) -> list[list[str]]:
        """The squeezer configurations measured: each single squeezer, then the joint detector."""
        singles, joint = SQUEEZERS[preset]
        return [[s] for s in dict.fromkeys(self.squeezers or singles)] + [list(dict.fromkeys(self.joint or joint))]

    def run(self, model, backdoor, ctx) -> StudyOutcome:
        """The table on the clean ``model`` (see the class doc); ``backdoor`` is unused (always None here)."""
        ds = ctx.dataset
        preset = self.preset if self.preset != "auto" else preset_for_channels(ds.input_shape[0])
        columns = study_attacks(preset, self.attacks, self.attack_params)  # type: ignore[arg-type]
        gen = make_generator(ctx.seed)
        test = ds.test
        order = torch.randperm(len(test), generator=gen) if self.order == "shuffled" else torch.arange(len(test))
        chosen = select_correct(model, test, self.n, order, device=ctx.device)
        x, y = test.x[chosen], test.y[chosen]
        results: list[AdversarialExamples] = []
        for column in track(columns, "adversarial examples", enabled=ctx.progress):
            results.append(column.attack.run(model, x, y, num_classes=ds.num_classes, device=ctx.device))

        legit_index = order[: min(len(test), len(x) * len(columns))]
        all_x = torch.cat([test.x[legit_index], *(r.x for r in results)])
        sizes = torch.tensor([len(legit_index)] + [len(x)] * len(columns))
        dset = DetectionSet(
            attack=torch.arange(-1, len(columns)).repeat_interleave(sizes),
            success=torch.cat([torch.zeros(len(legit_index), dtype=torch.bool), *(r.success for r in results)]),
            first_half=split_halves(len(all_x), gen),
        )
        start = time.perf_counter()
        configs = self.configurations(preset)
        names = list(dict.fromkeys(s for c in configs for s in c))
        first_legit = dset.legitimate & dset.first_half
        scorer = FeatureSqueezing(squeezers=names, fpr=self.fpr, batch_size=self.batch_size)
        scorer.fit(
            model,
            Split(all_x[first_legit], test.y[legit_index][first_legit[: len(legit_index)]]),
            device=ctx.device,
            num_classes=ds.num_classes,
        )
        per_squeezer = scorer.squeezer_scores(all_x)  # (N, S)
        rows = {}
        for config in configs:
            scores = per_squeezer[:, [names.index(s) for s in config]].max(dim=1).values
            rows[configuration_name(config)] = configuration_results(scores, dset, len(columns), self.fpr)
        scoring_seconds = time.perf_counter() - start
        return self._outcome(columns, results, x, dset, rows, configs, scoring_seconds, per_squeezer, names)

    def _outcome(
        self,
        columns: list[StudyAttack],
        results: list[AdversarialExamples],
        x: torch.Tensor,
        dset: DetectionSet,
        rows: dict[str, dict[str, Any]],
        configs: list[list[str]],
        scoring_seconds: float,
        per_squeezer: torch.Tensor,
        names: list[str],
    ) -> StudyOutcome:
        metrics: dict[str, float] = {"attacked": float(len(x)), "legitimate": float(int(dset.legitimate.sum()))}
        measured = ~dset.first_half & dset.success
        for i, (column, result) in enumerate(zip(columns, results, strict=True)):
            key = column.key
            dist = result.distortion(x)
            metrics |= {
                f"success_rate[{key}]": float(result.success.float().mean()) if len(x) else float("nan"),
                f"successful_test[{key}]": float(int((measured & (dset.attack == i)).sum())),
                f"mean_l2[{key}]": dist["l2"],
                f"mean_linf[{key}]": dist["linf"],
                f"mean_l0[{key}]": dist["l0"],
                f"attack_seconds[{key}]": result.seconds,
            }
        for config, row in rows.items():
            for column, rate in zip(columns, row["detection"], strict=True):
                metrics[f"detection_rate[{config}][{column.key}]"] = rate
            metrics |= {
                f"overall_detection_rate[{config}]": row["overall"],
                f"fpr[{config}]": row["fpr"],
                f"roc_auc[{config}]": row["roc_auc"],
                f"threshold[{config}]": row["threshold"],
            }
        joint = rows[configuration_name(configs[-1])]
        metrics |= {
            "tpr": joint["overall"],
            "fpr": joint["fpr"],
            "roc_auc": joint["roc_auc"],
            "threshold": joint["threshold"],
            "attack_seconds_total": sum(r.seconds for r in results),
            "scoring_seconds": scoring_seconds,
        }
        table = {
            "attacks": [c.key for c in columns],
            "labels": [c.label for c in columns],
            "methods": [type(c.attack).__name__ for c in columns],
            "configurations": list(rows),
            "joint": configuration_name(configs[-1]),
            "rows": rows,
        }
        artifacts = {
            "table": table,
            "squeezer_scores": per_squeezer,
            "squeezers": names,
            "attack": dset.attack,
            "success": dset.success,
            "first_half": dset.first_half,
        }
        return StudyOutcome(metrics, artifacts)
