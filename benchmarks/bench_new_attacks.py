"""Issue 18 targets: the field's attacks (WaNet, BPP, TrojanNN dirty-label; SIG, label-consistent clean-label;
Adaptive-Blend / Adaptive-Patch) on MNIST-5k (badnet_cnn, the default recipe) and on the colour set (GTSRB-10 with
cnn_small and the recipe of bench_attacks), each at its paper's defaults.

- every poison-label attack (WaNet, BPP, TrojanNN, Input-aware): ASR >= 0.95 on MNIST-5k, >= 0.90 on the colour
  set, clean accuracy within 0.015 of the clean model of the same seed;
- clean-label (SIG, LC at 5%) and adaptive attacks (0.3% poisons): reported as measured, beside BackdoorBench's
  CIFAR-10 PreAct-ResNet18 figure where one exists (theirs, not ours).

Stealth of each trigger on 500 test images (PSNR, SSIM, L-inf and L2 of triggered vs clean) is printed too.

Environment: ``BENCH_SEEDS`` (default 3), ``BENCH_WORKERS`` (default 1), ``BENCH_ATTACK_SETS`` (default
``mnist,colour``), ``BENCH_NEW_ATTACKS`` (comma-separated names; default all eight).
"""

from __future__ import annotations

import os
import time
from functools import cache

from backdoorlab.attacks import ATTACKS
from backdoorlab.metrics import backdoor_metrics, clean_accuracy
from backdoorlab.models import train_new_model
from backdoorlab.stealth import stealth_metrics

from .bench_attacks import settings
from .common import bench_seeds, bench_workers, check, fmt, map_in_workers, print_table

POISON_LABEL = ("wanet", "bpp", "trojannn", "input_aware")
REPORTED = ("sig", "label_consistent", "adaptive_blend", "adaptive_patch")
# BackdoorBench's CIFAR-10 PreAct-ResNet18 CA / ASR (%), from the issue: published, not measured here.
PUBLISHED = {
    "wanet": "91.25 / 89.73",
    "input_aware": "90.67 / 98.26",
    "bpp": "90.69 / 99.78",
    "trojannn": "93.42 / 100.0",
    "sig": "93.64 / 97.09 (5%)",
    "label_consistent": "93.53 / 99.80 (5%)",
}


@cache
def settings_by_key():
    return {s.key: s for s in settings()}


def chosen_attacks() -> list[str]:
    names = os.environ.get("BENCH_NEW_ATTACKS")
    return names.split(",") if names else [*POISON_LABEL, *REPORTED]


def run_job(job: tuple[str, int]) -> dict:
    key, seed = job
    s = settings_by_key()[key]
    ds, arch, tr = s.dataset, s.architecture, s.training
    start = time.perf_counter()
    clean_model = train_new_model(arch, ds, tr, seed=seed, progress=False)
    out = {"clean": clean_accuracy(clean_model, ds.test), "attacks": {}}
    for name in chosen_attacks():
        t = time.perf_counter()
        attack = ATTACKS.build(name, {})
        bd = attack.run(ds, arch, tr, seed=seed, progress=False, clean_model=clean_model)
        m = backdoor_metrics(bd.model, ds.test, bd.trigger, bd.target_rule)
        x = ds.test.x[:500]
        m |= stealth_metrics(x, bd.trigger(x))
        m["seconds"] = time.perf_counter() - t
        out["attacks"][name] = m
    out["seconds"] = time.perf_counter() - start
    return out


def report(key: str, results: list[tuple[int, dict]]) -> list[list[object]]:
    s = settings_by_key()[key]
    tag = s.label.split(" ")[0]
    print(f"\n## {s.label}: {s.dataset.summary()}, {s.architecture}, {s.training.epochs} epochs\n")
    rows, targets = [], []
    names = list(results[0][1]["attacks"])
    for name in names:
        per = [r["attacks"][name] for _, r in results]
        gap = [r["clean"] - r["attacks"][name]["clean_accuracy"] for _, r in results]
        rows.append(
            [
                name,
                fmt([m["clean_accuracy"] for m in per]),
                fmt([m["asr"] for m in per]),
                fmt(gap),
                f"{sum(m['psnr'] for m in per) / len(per):.1f}",
                f"{sum(m['ssim'] for m in per) / len(per):.3f}",
                f"{sum(m['linf'] for m in per) / len(per):.3f}",
                f"{sum(m['l2'] for m in per) / len(per):.2f}",
                PUBLISHED.get(name, "-"),
                f"{sum(m['seconds'] for m in per) / len(per):.0f}",
            ]
        )
        asr = sum(m["asr"] for m in per) / len(per)
        if name in POISON_LABEL:
            bound = 0.95 if key == "mnist" else 0.90
            targets.append(check(f"{tag} {name} ASR", asr, f">= {bound}", asr >= bound))
            targets.append(check(f"{tag} {name} CA drop", max(gap), "<= 0.015", max(gap) <= 0.015))
        else:
            targets.append(check(f"{tag} {name} ASR (reported)", asr, "reported", True))
    print(f"clean model CA: {fmt([r['clean'] for _, r in results])} ({len(results)} seed(s))\n")
    print_table(
        ["attack", "CA", "ASR", "CA drop", "PSNR", "SSIM", "L-inf", "L2", "published CIFAR-10 CA / ASR", "s"], rows
    )
    return targets


def main() -> bool:
    seeds = bench_seeds()
    chosen = os.environ.get("BENCH_ATTACK_SETS", "mnist,colour").split(",")
    targets = []
    for key in settings_by_key():
        if key not in chosen:
            continue
        done = map_in_workers(run_job, [(key, seed) for seed in seeds], bench_workers())
        targets += report(key, list(zip(seeds, done, strict=True)))
    print()
    print_table(["target", "measured", "required", "status"], targets)
    return all(t[-1] == "ok" for t in targets)
