"""Model inspection targets (issue 6): Neural Cleanse and DeepInspect on MNIST-5k, badnet_cnn, BadNets 3x3 square.

- a population of K = 5 clean + 5 BadNets models (targets 0, 2, 4, 6, 8; seeds 0..4): each inspector flags all
  backdoored models with the true target ranked first, and at most 1 of the clean ones (DeepInspect without
  clean data: model inversion);
- Neural Cleanse's reversed mask L1 at the true target within 2x of the true trigger's area (9 pixels);
- time to inspect one model (10 labels): Neural Cleanse <= 60 s, DeepInspect <= 120 s; Neural Cleanse batched
  at least 3x faster than label by label, both run back to back on the same model;
- Neural Cleanse unlearning and DeepInspect patching: ASR <= 5% with clean accuracy within 2 points (means over
  the backdoored models; they reuse the population's verdicts instead of inspecting again);
- TrojanNet and Blend models, when those attacks are registered: indices reported as measured (both are known to
  evade Neural Cleanse), no target.

Models are trained with ``TrainingConfig()`` and cached under ``runs/bench-cache`` (``BENCH_CACHE``), so reruns
only inspect. ``BENCH_K`` changes the population size. Times are wall-clock seconds of this process and, beside
them, its CPU seconds (the machine may be shared; the load average is printed).
"""

from __future__ import annotations

import os
import time

import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.data import load_dataset
from backdoorlab.defenses.inspection.deepinspect import DeepInspect
from backdoorlab.defenses.inspection.neural_cleanse import NeuralCleanse
from backdoorlab.defenses.repair.deepinspect_patching import DeepInspectPatching
from backdoorlab.defenses.repair.nc_unlearning import NCUnlearning
from backdoorlab.experiments.cache import ModelCache
from backdoorlab.experiments.population import inspect_members, population_models
from backdoorlab.metrics import attack_success_rate, backdoor_metrics
from backdoorlab.models import TrainingConfig, build_model, train_model
from backdoorlab.report.inspection import population_table
from backdoorlab.triggers import MaskedTrigger

from .common import check, print_table

ARCH = "badnet_cnn"
TRIGGER_AREA = 9.0


def _fmt(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def _population_rows(result) -> list[list[object]]:
    rows = []
    for r in result.records:
        m = r.metrics
        target = "–" if r.target is None else r.target
        rows.append(
            [
                r.inspector,
                r.role,
                r.seed,
                target,
                "yes" if r.verdict.infected else "no",
                ",".join(map(str, r.verdict.suspected)) or "–",
                _fmt(r.verdict.score),
                _fmt(m["target_anomaly_index"]) if "target_anomaly_index" in m else "–",
                ("yes" if m["target_ranked_first"] else "no") if "target_ranked_first" in m else "–",
                _fmt(m["target_statistic"], 1) if "target_statistic" in m else "–",
                _fmt(r.verdict.seconds, 1),
                _fmt(r.verdict.details["cpu_seconds"], 1),
            ]
        )
    return rows


def _speed(model, ds) -> dict[str, float]:
    """Neural Cleanse batched then label by label on one model, back to back: wall and CPU seconds, L1s."""
    out = {}
    for mode in ("batched", "per_label"):
        v = NeuralCleanse(mode=mode).inspect(model, ds.val, seed=0, device="cpu")
        out[mode] = v.seconds
        out[f"{mode}_cpu"] = v.details["cpu_seconds"]
        out[f"{mode}_top"] = v.ranking[0]
        out[f"{mode}_stat"] = v.statistic
    return out


def _partial_triggers(bd, ds) -> list[list[object]]:
    """ASR of parts of the real 3x3 trigger (same place, white): how small a patch the model still obeys."""
    rows = bd.trigger.mask[0].nonzero()
    top, left = (int(v) for v in rows.min(dim=0).values)
    parts = [
        ("3x3 (the trigger)", 0, 3, 0, 3),
        ("2x2 bottom-right of it", 1, 3, 1, 3),
        ("1x3 bottom row", 2, 3, 0, 3),
        ("1x1 centre", 1, 2, 1, 2),
    ]
    out = []
    for name, r0, r1, c0, c1 in parts:
        mask = torch.zeros_like(bd.trigger.mask)
        mask[0, top + r0 : top + r1, left + c0 : left + c1] = 1
        trigger = MaskedTrigger(mask, torch.ones_like(bd.trigger.pattern))
        out.append([name, int(mask.sum()), _fmt(attack_success_rate(bd.model, ds.test, trigger, bd.target_rule), 4)])
    return out


def _digits_speed() -> dict[str, float]:
    """The same comparison on 8x8 digits, where a step is cheap and per-step overhead dominates."""
    ds = load_dataset("digits")
    model = build_model(ARCH, ds.input_shape, ds.num_classes, ds.mean, ds.std, seed=0)
    train_model(model, ds.train.x, ds.train.y, TrainingConfig(epochs=10, augment_shift=0), seed=0, progress=False)
    return _speed(model, ds)


def _repairs(result, ds) -> list[list[object]]:
    rows = []
    verdicts = {(r.inspector, r.seed): r.verdict for r in result.records if r.role == "backdoored"}
    for member in [m for m in result.members if m.role == "backdoored"]:
        bd = member.backdoor
        for name, repair in (("nc_unlearning", NCUnlearning()), ("deepinspect_patching", DeepInspectPatching())):
            inspector = "neural_cleanse" if name == "nc_unlearning" else "deepinspect"
            start = time.perf_counter()
            repaired = repair.repair_with_verdict(
                bd.model, ds.val, verdicts[(inspector, member.seed)], seed=member.seed, device="cpu"
            )
            m = backdoor_metrics(repaired, ds.test, bd.trigger, bd.target_rule)
            rows.append(
                [
                    name,
                    member.seed,
                    member.target,
                    member.clean_accuracy,
                    member.asr,
                    m["clean_accuracy"],
                    m["asr"],
                    time.perf_counter() - start,
                ]
            )
    return rows


def _other_attacks(ds, training, cache) -> list[list[object]]:
    """TrojanNet and Blend (one model each, target 0): both inspectors' verdicts."""
    rows = []
    for name in ("trojannet", "blend"):
        if name not in ATTACKS:
            print(f"{name}: not available yet (the attacks issue has not registered it)")
            continue
        members = population_models(
            ds, ARCH, training, {"name": name}, k=1, targets=[0], cache=cache, device="cpu", progress=False
        )[1:]
        result = inspect_members(
            ds,
            members,
            [("neural_cleanse", NeuralCleanse()), ("deepinspect", DeepInspect())],
            attack=name,
            device="cpu",
        )
        for r in result.records:
            m = r.metrics
            rows.append(
                [
                    name,
                    r.inspector,
                    _fmt(members[0].clean_accuracy, 4),
                    _fmt(members[0].asr or 0, 4),
                    "yes" if r.verdict.infected else "no",
                    ",".join(map(str, r.verdict.suspected)) or "–",
                    _fmt(r.verdict.score),
                    _fmt(m.get("target_anomaly_index", float("nan"))),
                    "yes" if m.get("target_ranked_first") else "no",
                    _fmt(m.get("target_statistic", 0), 1),
                    _fmt(m.get("true_trigger_l1", float("nan")), 1),
                ]
            )
    return rows


def main() -> bool:
    k = int(os.environ.get("BENCH_K", 5))
    ds = load_dataset("mnist5k")
    training = TrainingConfig()
    cache = ModelCache(os.environ.get("BENCH_CACHE", "runs/bench-cache"))
    print(
        f"{ds.summary()}; {ARCH}, {training.epochs} epochs; BadNets 3x3 white square bottom-right, 10% poisoned; "
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}\n"
    )
    members = population_models(ds, ARCH, training, {"name": "badnets"}, k=k, cache=cache, device="cpu", progress=False)
    print_table(
        ["model", "seed", "target", "clean accuracy", "ASR"],
        [
            [
                m.role,
                m.seed,
                "–" if m.target is None else m.target,
                _fmt(m.clean_accuracy, 4),
                "–" if m.asr is None else _fmt(m.asr, 4),
            ]
            for m in members
        ],
    )
    print()
    inspectors = [("neural_cleanse", NeuralCleanse()), ("deepinspect", DeepInspect())]
    result = inspect_members(ds, members, inspectors, attack="badnets", device="cpu")
    print_table(
        [
            "inspector",
            "model",
            "seed",
            "target",
            "infected",
            "flagged",
            "score",
            "target index",
            "target first",
            "target L1",
            "wall s",
            "cpu s",
        ],
        _population_rows(result),
    )
    print()
    table = population_table(result)
    print_table(table.headers, table.rows)
    summary = result.summary()

    backdoored = [r for r in result.records if r.role == "backdoored" and r.inspector == "neural_cleanse"]
    l1 = [r.metrics["target_statistic"] for r in backdoored]
    mean_l1 = sum(l1) / len(l1)
    print(
        f"\nNeural Cleanse reversed mask L1 at the true target: {', '.join(_fmt(v, 1) for v in l1)} "
        f"(mean {mean_l1:.1f}; true trigger area {TRIGGER_AREA:.0f})"
    )

    bd0 = next(m for m in members if m.role == "backdoored")
    print(f"\nParts of the real trigger on backdoored seed {bd0.seed} (why a reversed mask can be smaller than 9):")
    print_table(["patch", "pixels", "ASR"], _partial_triggers(bd0.backdoor, ds))
    speed = _speed(bd0.model, ds)
    small = _digits_speed()
    print("\nNeural Cleanse, batched vs label by label, back to back on the same model (10 labels):")
    speed_rows = []
    for title, s in ((f"MNIST-5k backdoored seed {bd0.seed}", speed), ("digits 8x8 clean", small)):
        same = s["batched_top"] == s["per_label_top"]
        diff = float((s["batched_stat"] - s["per_label_stat"]).abs().max() / s["per_label_stat"].abs().max())
        speed_rows.append(
            [
                title,
                _fmt(s["batched"], 1),
                _fmt(s["per_label"], 1),
                _fmt(s["batched_cpu"], 1),
                _fmt(s["per_label_cpu"], 1),
                _fmt(s["per_label"] / s["batched"]),
                "yes" if same else "no",
                _fmt(diff, 3),
            ]
        )
    print_table(
        [
            "model",
            "batched wall s",
            "per-label wall s",
            "batched cpu s",
            "per-label cpu s",
            "speed-up",
            "same top label",
            "max rel. L1 diff",
        ],
        speed_rows,
    )

    repairs = _repairs(result, ds)
    print("\nRepairs (reusing the population verdicts; one epoch over the 500 clean val images, 20% stamped):")
    print_table(
        ["repair", "seed", "target", "CA before", "ASR before", "CA after", "ASR after", "seconds"],
        [
            [r[0], r[1], r[2], _fmt(r[3], 4), _fmt(r[4], 4), _fmt(r[5], 4), _fmt(r[6], 4), _fmt(r[7], 1)]
            for r in repairs
        ],
    )
    print()
    others = _other_attacks(ds, training, cache)
    if others:
        print_table(
            [
                "attack",
                "inspector",
                "CA",
                "ASR",
                "infected",
                "flagged",
                "score",
                "target index",
                "target first",
                "target stat",
                "true trigger L1",
            ],
            others,
        )
    print()

    nc, di = summary["neural_cleanse"], summary["deepinspect"]
    nc_secs = [r.verdict.seconds for r in result.records if r.inspector == "neural_cleanse"]
    di_secs = [r.verdict.seconds for r in result.records if r.inspector == "deepinspect"]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    ratio = speed["per_label"] / speed["batched"]
    l1_ratio = mean_l1 / TRIGGER_AREA
    targets = [
        check("NC: backdoored models flagged (TPR)", nc["tpr"], "= 1", nc["tpr"] == 1),
        check("NC: true target ranked first", nc["target_ranked_first"], "= 1", nc["target_ranked_first"] == 1),
        check("NC: clean models flagged (of K)", nc["fpr"] * k, "<= 1", nc["fpr"] * k <= 1),
        check("NC: ROC-AUC (info)", nc["roc_auc"], "–", True),
        check("DeepInspect: TPR", di["tpr"], "= 1", di["tpr"] == 1),
        check(
            "DeepInspect: true target ranked first", di["target_ranked_first"], "= 1", di["target_ranked_first"] == 1
        ),
        check("DeepInspect: clean models flagged (of K)", di["fpr"] * k, "<= 1", di["fpr"] * k <= 1),
        check("DeepInspect: ROC-AUC (info)", di["roc_auc"], "–", True),
        check("NC mask L1 / trigger area (mean)", l1_ratio, "0.5 .. 2", 0.5 <= l1_ratio <= 2),
        check("NC seconds per model (mean wall)", mean(nc_secs), "<= 60", mean(nc_secs) <= 60),
        check("DeepInspect seconds per model (mean wall)", mean(di_secs), "<= 120", mean(di_secs) <= 120),
        check("NC batched speed-up vs per label (MNIST)", ratio, ">= 3", ratio >= 3),
    ]
    for name in ("nc_unlearning", "deepinspect_patching"):
        rs = [r for r in repairs if r[0] == name]
        asr = mean([r[6] for r in rs])
        drop = mean([r[3] - r[5] for r in rs])
        targets += [
            check(f"{name}: ASR after (mean)", asr, "<= 0.05", asr <= 0.05),
            check(f"{name}: CA drop (mean)", drop, "<= 0.02", drop <= 0.02),
        ]
    print_table(["target", "measured", "required", "status"], targets)
    return all(t[-1] == "ok" for t in targets)
