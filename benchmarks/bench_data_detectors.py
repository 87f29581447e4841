"""Data detectors, filter-and-retrain, DPA and ABL (issue 20): MNIST-5k, ``badnet_cnn`` (TrainingConfig defaults),
BadNets 3x3 white square, all-to-one -> 0, at the poison rates of ``BENCH_RATES`` (default 0.01,0.1).

Per rate and seed: each detector (AC, SS, SPECTRE, SCAn; their defaults) is fitted on the backdoored model, the
poisoned training set and the clean val split; TPR / FPR / ROC-AUC / PR-AUC against the true poison, then CA / ASR
of a network retrained on the kept samples. Then DPA (k = ``BENCH_DPA_K``, default 50) on the same poisoned set:
CA of the vote, ASR, certified accuracy and the median certified radius, with its time; and ABL (paper defaults).
Targets (issue 20, for SCAn, the detector ``scan-data`` uses, chosen before measuring): ROC-AUC >= 0.95 and ASR
after retraining <= 10% at 1%. The leaderboard's AC / SS ASR after filtering (BackdoorBench, CIFAR-10, PreAct-ResNet18)
are printed beside ours: they are not ours. Seeds from BENCH_SEEDS (default 1 here: CPU time).
"""

from __future__ import annotations

import json
import os
import time

import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.data import load_dataset
from backdoorlab.defenses import DEFENSES
from backdoorlab.experiments.evaluation import EvaluationContext, evaluate_defense, measure_model
from backdoorlab.experiments.model_source import ModelSource, Setting
from backdoorlab.models import TrainingConfig

from .common import bench_seeds

LEADERBOARD_ASR = {  # BackdoorBench, BadNets, ASR left after filter + retrain (field.md)
    "activation_clustering": {0.005: 2.3, 0.01: 27.2, 0.1: 86.2},
    "spectral_signatures": {0.005: 7.9, 0.01: 74.2, 0.1: 92.4},
}
DETECTORS = ("scan", "spectral_signatures", "spectre", "activation_clustering")


def main() -> bool:
    ds = load_dataset("mnist5k")
    training = TrainingConfig()
    setting = Setting(ds, "badnet_cnn", training)
    source = ModelSource(os.environ.get("BENCH_CACHE", ".bench_cache"), device="auto", progress=False)
    rates = [float(r) for r in os.environ.get("BENCH_RATES", "0.01,0.1").split(",")]
    methods = os.environ.get("BENCH_METHODS", ",".join(DETECTORS) + ",dpa,abl").split(",")
    k = int(os.environ.get("BENCH_DPA_K", 50))
    met = True
    for seed in bench_seeds(1):
        for rate in rates:
            bd = source.backdoor(setting, ATTACKS.build("badnets", {"poison_rate": rate}), seed)
            before = measure_model(bd.model, bd, ds.test)
            print(f"rate {rate} seed {seed}: backdoored CA {before['clean_accuracy']:.4f} ASR {before['asr']:.4f}")
            ctx = EvaluationContext(ds, seed=seed, device="auto", architecture="badnet_cnn", training=training)
            for name in methods:
                params = {"partitions": k} if name == "dpa" else {}
                start = time.perf_counter()
                out = evaluate_defense(DEFENSES.build(name, params), bd.model, bd, ctx)
                row = {"method": name, "rate": rate, "seed": seed, "seconds": time.perf_counter() - start}
                row |= {m: round(float(v), 4) for m, v in out.metrics.items()}
                if name in LEADERBOARD_ASR:
                    row["leaderboard_asr_pct_not_ours"] = LEADERBOARD_ASR[name].get(rate)
                print(json.dumps(row), flush=True)
                if name == "scan" and rate == 0.01:
                    ok = row["roc_auc"] >= 0.95 and row["asr"] <= 0.10
                    met &= ok
                    print(f"target (SCAn at 1%: ROC-AUC >= 0.95, ASR <= 10%): {'met' if ok else 'NOT met'}")
    return met


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    main()
