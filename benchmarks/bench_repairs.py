"""The repairs of issue 19 beside fine-tuning and Fine-Pruning: CA / ASR / RA / DER / retuned ASR per repair, the
ranking by mean DER and its Spearman correlation with BackdoorBench's leaderboard ranking.

Setting: MNIST-5k, ``badnet_cnn`` with the toolkit's default training, BadNets (3x3 square, target 0) at
``POISON_RATES`` (default 10%); the defender holds the 500-image validation split. Every repair runs with its
paper defaults except where ``BENCH_REPAIRS_FAST=1`` (the default here, for 2 CPU cores) shortens the two
slowest: ANP to 500 iterations and SAU to 20 rounds (the printed table names the parameters used).
``retuned_asr`` is measured on every repaired model (the evaluator's retuning check).

The leaderboard's mean DER at 10% poisoning (CIFAR-10, PreAct-ResNet18, 8 attacks; field.md 1.0) is a reference
ranking, not a target: the correlation says whether our ranking on our setting agrees with it.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

from scipy.stats import spearmanr

from backdoorlab.attacks import BadNets
from backdoorlab.data import load_dataset
from backdoorlab.defenses import DEFENSES
from backdoorlab.experiments.evaluation import EvaluationContext, evaluate_defense, measure_model
from backdoorlab.models import TrainingConfig

from .common import bench_seeds, fmt, print_table

LEADERBOARD_DER_10 = {"anp": 95.2, "i_bau": 88.0, "nad": 82.4, "fine_tuning": 81.1, "fine_pruning": 71.8, "clp": 64.8}
POISON_RATES = tuple(float(r) for r in os.environ.get("BENCH_POISON_RATES", "0.1").split(","))
FAST = os.environ.get("BENCH_REPAIRS_FAST", "1") == "1"
REPAIRS = ("fine_tuning", "fine_pruning", "anp", "i_bau", "nad", "sau", "clp", "fst")
FAST_PARAMS = {"anp": {"iterations": 500}, "sau": {"rounds": 20}}
COLUMNS = ("clean_accuracy", "asr", "robust_accuracy", "der", "retuned_asr")
GUARD = ("guard_lr_scale",)  # 1: the repair's own lr kept; 0.1: retried; 0: reverted to the input model


def main() -> bool:
    ds = load_dataset("mnist5k")
    seeds = bench_seeds(1)
    names = [n for n in os.environ.get("BENCH_REPAIRS", ",".join(REPAIRS)).split(",") if n]
    for rate in POISON_RATES:
        values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for seed in seeds:
            bd = BadNets(poison_rate=rate).run(ds, "badnet_cnn", TrainingConfig(), seed=seed, progress=False)
            for k, v in measure_model(bd.model, bd, ds.test).items():
                values["(none)"][k].append(v)
            ctx = EvaluationContext(ds, seed=seed, retune=True)
            for name in names:
                params = FAST_PARAMS.get(name, {}) if FAST else {}
                start = time.perf_counter()
                metrics = evaluate_defense(DEFENSES.build(name, params), bd.model, bd, ctx).metrics
                values[name]["seconds"].append(time.perf_counter() - start)
                for k in (*COLUMNS, *GUARD):
                    if k in metrics:  # the guard's figures exist for the repairs that train
                        values[name][k].append(metrics[k])
                print(f"  seed {seed} {name}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in COLUMNS), flush=True)
        print(f"\nMNIST-5k, badnet_cnn, BadNets {rate:.0%}, seeds {seeds} (mean ± 95% CI where >1 seed)")
        rows = []
        for name, cols in values.items():
            params = FAST_PARAMS.get(name, {}) if FAST else {}
            label = name + (f" {params}" if params else "")
            rows.append([label, *(fmt(cols[k]) if cols.get(k) else "-" for k in (*COLUMNS, *GUARD, "seconds"))])
        print_table(["repair", *COLUMNS, *GUARD, "seconds"], rows)
        ranking(values)
    return True


def ranking(values) -> None:
    mean_der = {n: sum(v["der"]) / len(v["der"]) for n, v in values.items() if v.get("der")}
    order = sorted(mean_der, key=mean_der.get, reverse=True)
    print("\nranking by mean DER: " + " > ".join(f"{n} ({mean_der[n]:.3f})" for n in order))
    shared = [n for n in order if n in LEADERBOARD_DER_10]
    if len(shared) >= 3:
        rho, p = spearmanr([mean_der[n] for n in shared], [LEADERBOARD_DER_10[n] for n in shared])
        board = " > ".join(sorted(shared, key=LEADERBOARD_DER_10.get, reverse=True))
        verdict = "agrees" if rho > 0.5 else "disagrees" if rho < 0 else "agrees weakly"
        print(f"leaderboard (CIFAR-10 10%): {board}")
        print(f"Spearman rho on {len(shared)} shared repairs = {rho:.3f} (p = {p:.3f}): our ranking {verdict}")
