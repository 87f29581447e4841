"""Issue 17 part A: the scan's false-alarm rate at alpha, its true-positive rate, and DeepInspect as the paper runs it.

Population, per dataset (``BENCH_DATASETS``, default ``digits,mnist5k``), all ``badnet_cnn``. Two populations of
the same make with disjoint seeds (``BENCH_POPULATION``): ``scored`` (the default, the figures of the issue) and
``dev``, the one on which the decision rule's choices were made (the leave-one-out index, DeepInspect's
straight-through clip); no choice was made on ``scored``.

- ``BENCH_CLEAN`` (default 20) clean models, seeds 4000.. (``dev``: 1000..; disjoint from every seed used to
  calibrate: the normal null is simulated, the reference models use seeds 9100.., ``dev`` 9000..);
- ``BENCH_BACKDOORED`` (default 10) BadNets models: a white square of 3 to 5 px (2 px on the 8x8 digits) at a
  random position, a random target, 10% poisoning; and as many Blend models (random-noise pattern, alpha drawn in
  [0.1, 0.2], random target, 10% poisoning);
- ``BENCH_REFS`` (default 3) reference clean models that the defender trains on its own clean ``val`` split (the
  reference mode).

Every model is inspected once by Neural Cleanse and by DeepInspect with default settings (not ``lite``; the GAN
term on) on the defender's ``val`` split; the decisions are then taken from the per-label statistics: each
inspector alone at alpha 0.05, and the scan (each inspector at its share of alpha, weighted Bonferroni: Neural
Cleanse 0.04, DeepInspect 0.01, ``backdoorlab.audit.scan.SCAN_WEIGHTS``), under the normal null and
under the normal null of the statistic's logarithm (``index_scale: log``) and under the reference null; the
per-model statistics are saved to ``BENCH_CALIB_OUT``/records.pt (default ``runs/bench-calibration``). Printed per
mode and decision: clean models flagged k / n with the Clopper-Pearson 95%
interval, TPR on BadNets and on Blend, ROC-AUC of the model score ``-log10 p`` (clean vs backdoored). The normal
null is decided with the papers' indices (``normal``: linear scale, ``normal-log``: log scale) and with the
leave-one-out index on the log scale (``normal-log-loo``, the scan's default). Targets (the default): at most 3
flagged among at least 40 clean models, TPR on BadNets >= 0.9.

``BENCH_WORKERS`` runs models in parallel processes; ``BENCH_DEVICE`` (default auto) picks the device.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.audit.scan import SCAN_WEIGHTS
from backdoorlab.data import load_dataset
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.inspection.null import (
    ReferenceNull,
    alpha_shares,
    combine_p_values,
    decide,
    decide_reference,
)
from backdoorlab.metrics import backdoor_metrics, clean_accuracy, roc_auc
from backdoorlab.models import TrainingConfig, train_new_model

from .common import bench_workers, check, map_in_workers, print_table

ALPHA = 0.05
INSPECTORS = {"neural_cleanse": "mad", "deepinspect": "left_tail"}
TRAINING = {
    "digits": TrainingConfig(epochs=10, lr=3e-3, batch_size=64, augment_shift=0),
    "mnist5k": TrainingConfig(epochs=10, lr=2e-3, batch_size=64, augment_shift=0),
}
SEEDS = {  # clean, attack, reference, trigger draws
    "scored": (4000, 5000, 9100, 71),
    "dev": (1000, 2000, 9000, 17),
}
MODES = {  # decision under the normal null: (scale, index); "reference" is the reference null
    "normal": ("linear", "paper"),
    "normal-log": ("log", "paper"),
    "normal-log-loo": ("log", "loo"),
}
DEFAULT_MODE = "normal-log-loo"


def population_seeds() -> tuple[int, int, int, int]:
    name = os.environ.get("BENCH_POPULATION", "scored")
    if name not in SEEDS:
        raise SystemExit(f"BENCH_POPULATION must be one of {sorted(SEEDS)}, got {name!r}")
    return SEEDS[name]


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def specs() -> list[dict]:
    """One dict per model to build: dataset, kind (clean / badnets / blend / reference), seed, attack params."""
    out = []
    clean_seed, attack_seed, ref_seed, draws = population_seeds()
    for ds_name in os.environ.get("BENCH_DATASETS", "digits,mnist5k").split(","):
        side = load_dataset(ds_name).input_shape[-1]
        rng = torch.Generator().manual_seed(draws + side)
        for i in range(_env("BENCH_CLEAN", 20)):
            out.append({"dataset": ds_name, "kind": "clean", "seed": clean_seed + i})
        for i in range(_env("BENCH_REFS", 3)):
            out.append({"dataset": ds_name, "kind": "reference", "seed": ref_seed + i})
        for i in range(_env("BENCH_BACKDOORED", 10)):
            size = 2 if side <= 8 else int(torch.randint(3, 6, (1,), generator=rng))
            row, col = (int(v) for v in torch.randint(0, side - size + 1, (2,), generator=rng))
            target = int(torch.randint(0, 10, (1,), generator=rng))
            params = {"size": size, "position": [row, col], "target": target, "poison_rate": 0.1}
            out.append({"dataset": ds_name, "kind": "badnets", "seed": attack_seed + i, "params": params})
            blend = {
                "alpha": round(0.1 + 0.1 * float(torch.rand(1, generator=rng)), 3),
                "target": int(torch.randint(0, 10, (1,), generator=rng)),
                "noise_seed": i,
                "poison_rate": 0.1,
            }
            blend["test_alpha"] = blend["alpha"]
            out.append({"dataset": ds_name, "kind": "blend", "seed": attack_seed + 500 + i, "params": blend})
    return out


def build_and_inspect(spec: dict) -> dict:
    """Train the model of ``spec``, measure it, inspect it with both inspectors; plain data back."""
    device = os.environ.get("BENCH_DEVICE", "auto")
    ds = load_dataset(spec["dataset"])
    training = TRAINING[spec["dataset"]]
    start = time.perf_counter()
    if spec["kind"] in ("clean", "reference"):
        split = ds.val if spec["kind"] == "reference" else None  # the defender trains on its own clean data
        model = train_new_model("badnet_cnn", ds, training, split=split, seed=spec["seed"], device=device)
        figures = {"clean_accuracy": clean_accuracy(model, ds.test, device=device)}
    else:
        attack = ATTACKS.build(spec["kind"], spec["params"])
        bd = attack.run(ds, "badnet_cnn", training, seed=spec["seed"], device=device, progress=False)
        model = bd.model
        figures = backdoor_metrics(model, ds.test, bd.trigger, bd.target_rule, device=device)
    result = {**spec, **figures, "train_s": time.perf_counter() - start}
    for name in INSPECTORS:
        verdict = DEFENSES.build(name).inspect(model, ds.val, seed=spec["seed"], device=device, progress=False)
        result[name] = {
            "statistic": verdict.statistic,
            "reached": verdict.reached,
            "seconds": verdict.seconds,
        }
    return result


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def p_values(record: dict, mode: str, references: dict, alpha: float) -> dict[str, tuple[float, bool]]:
    """Per inspector: (model p-value, flagged at ``alpha``) under the ``mode`` null: one of :data:`MODES` (the
    normal null on a scale with an index) or ``reference``."""
    out = {}
    for name, kind in INSPECTORS.items():
        r = record[name]
        if mode in MODES:
            scale, index = MODES[mode]
            used = kind if index == "paper" else index
            d = decide(r["statistic"], used, alpha, reached=r["reached"], scale=scale)
        else:
            d = decide_reference(r["statistic"], references[(record["dataset"], name)], alpha, reached=r["reached"])
        out[name] = (d.p_value, bool(d.suspected))
    return out


def decisions(records: list[dict], mode: str, references: dict) -> dict[str, list[tuple[float, bool]]]:
    """(p-value, flagged) per record for each inspector alone (alpha) and for the scan (each inspector at its share
    of alpha, :data:`SCAN_WEIGHTS`)."""
    shares = alpha_shares(list(INSPECTORS), SCAN_WEIGHTS)
    out: dict[str, list[tuple[float, bool]]] = {name: [] for name in INSPECTORS} | {"scan": []}
    for rec in records:
        alone = p_values(rec, mode, references, ALPHA)
        for name in INSPECTORS:
            out[name].append(alone[name])
        combined = combine_p_values([alone[name][0] for name in INSPECTORS], list(shares.values()))
        out["scan"].append((combined, combined <= ALPHA))
    return out


def _unreached(record: dict) -> int:
    reached = record["deepinspect"]["reached"]
    return 0 if reached is None else int((~reached).sum())


def main() -> bool:
    start = time.perf_counter()
    records = map_in_workers(build_and_inspect, specs(), bench_workers())
    saved = Path(os.environ.get("BENCH_CALIB_OUT", "runs/bench-calibration")) / "records.pt"
    saved.parent.mkdir(parents=True, exist_ok=True)
    torch.save(records, saved)  # per-model statistics, for deciding again under other rules without retraining
    tested = [r for r in records if r["kind"] != "reference"]
    references = {
        (ds, name): ReferenceNull.from_statistics(
            [r[name]["statistic"] for r in records if r["kind"] == "reference" and r["dataset"] == ds]
        )
        for ds in {r["dataset"] for r in records}
        for name in INSPECTORS
    }
    print_table(
        ["dataset", "kind", "models", "clean acc", "ASR (min)", "NC s", "DI s", "DI unreached labels / model"],
        [
            [
                ds,
                kind,
                len(rs),
                f"{sum(r['clean_accuracy'] for r in rs) / len(rs):.3f}",
                f"{min(r['asr'] for r in rs):.3f}" if "asr" in rs[0] else "-",
                f"{sum(r['neural_cleanse']['seconds'] for r in rs) / len(rs):.1f}",
                f"{sum(r['deepinspect']['seconds'] for r in rs) / len(rs):.1f}",
                f"{sum(_unreached(r) for r in rs) / len(rs):.2f}",
            ]
            for ds in sorted({r["dataset"] for r in records})
            for kind in ("clean", "reference", "badnets", "blend")
            if (rs := [r for r in records if r["dataset"] == ds and r["kind"] == kind])
        ],
    )
    print()
    rows, checks = [], []
    for mode in (*MODES, "reference"):
        decided = decisions(tested, mode, references)
        for name, values in decided.items():
            by_kind = {
                k: [v for v, r in zip(values, tested, strict=True) if r["kind"] == k]
                for k in ("clean", "badnets", "blend")
            }
            k = sum(f for _, f in by_kind["clean"])
            n = len(by_kind["clean"])
            low, high = clopper_pearson(k, n)
            tpr = {kind: sum(f for _, f in by_kind[kind]) / max(1, len(by_kind[kind])) for kind in ("badnets", "blend")}
            score = lambda vs: torch.tensor([-math.log10(max(p, 1e-12)) for p, _ in vs])  # noqa: E731
            auc = roc_auc(score(by_kind["clean"]), score(by_kind["badnets"] + by_kind["blend"]))
            rows.append(
                [
                    mode,
                    name,
                    f"{k}/{n}",
                    f"[{low:.3f}, {high:.3f}]",
                    f"{tpr['badnets']:.3f}",
                    f"{tpr['blend']:.3f}",
                    f"{auc:.3f}",
                ]
            )
            if mode == DEFAULT_MODE and name == "scan":  # the default decision (log scale, leave-one-out index)
                checks.append(check("scan false alarms (normal null)", k, "<= 3 of >= 40", k <= 3 and n >= 40))
                checks.append(check("scan TPR BadNets (normal null)", tpr["badnets"], ">= 0.9", tpr["badnets"] >= 0.9))
    print_table(["null", "decision", "clean flagged", "CP 95%", "TPR BadNets", "TPR Blend", "ROC-AUC"], rows)
    print()
    print_table(["figure", "value", "target", "status"], checks)
    print(f"\n{len(records)} models in {time.perf_counter() - start:.0f} s; alpha {ALPHA}")
    return all(c[-1] == "ok" for c in checks)
