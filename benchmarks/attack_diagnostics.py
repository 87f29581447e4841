"""Where an attack that misses issue 18's ASR target loses its backdoor: a diagnostic, not a benchmark.

The attack at its defaults in one setting and seed, then with one thing changed at a time, to locate the miss (not
to tune it away: the benchmark's figures stay the defaults'):

- its negative / noise samples off (WaNet ``cross_ratio`` 0, BPP ``neg_ratio`` 0), which teach the network that
  trigger-like perturbations are not the trigger;
- the recipe's shift augmentation off (``augment_shift`` 0);
- four times the recipe's epochs.

Run: ``python -m benchmarks.attack_diagnostics`` with ``BENCH_DIAG_ATTACKS`` (default ``wanet,bpp``),
``BENCH_DIAG_SET`` (``colour`` by default, or ``mnist``), ``BENCH_DIAG_SEED`` (default 0) and ``BENCH_DIAG_PROBES``
(default all: ``defaults,negatives,shifts,epochs``; two processes can split them). The models go to the benchmarks'
shared cache (common.bench_models), so a second run only measures.
"""

from __future__ import annotations

import os
import time

import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.experiments.evaluation import measure_model
from backdoorlab.experiments.model_source import Setting

from .common import bench_models, bench_setting, env_list, print_table

NEGATIVES = {"wanet": "cross_ratio", "bpp": "neg_ratio", "input_aware": "cross_rate"}


PROBES = ("defaults", "negatives", "shifts", "epochs")


def variants(name: str, setting: Setting, probes: tuple[str, ...] = PROBES) -> list[tuple[str, dict, Setting]]:
    """(label, attack parameters, setting) of the defaults and each one-change probe named in ``probes``."""
    tr = setting.training

    def retrained(**update) -> Setting:
        return Setting(setting.dataset, setting.architecture, tr.model_copy(update=update))

    out = {"defaults": ("defaults", {}, setting)}
    if name in NEGATIVES:
        out["negatives"] = (f"{NEGATIVES[name]} = 0", {NEGATIVES[name]: 0.0}, setting)
    out["shifts"] = ("no shift augmentation", {}, retrained(augment_shift=0))
    out["epochs"] = (f"{4 * tr.epochs} epochs", {}, retrained(epochs=4 * tr.epochs))
    return [out[p] for p in probes if p in out]


def main() -> bool:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    key = os.environ.get("BENCH_DIAG_SET", "colour")
    seed = int(os.environ.get("BENCH_DIAG_SEED", 0))
    setting, source = bench_setting(key), bench_models()
    probes = tuple(env_list("BENCH_DIAG_PROBES", ",".join(PROBES)))
    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        raise SystemExit(f"BENCH_DIAG_PROBES: unknown {', '.join(unknown)}; choose from {', '.join(PROBES)}")
    rows = []
    for name in env_list("BENCH_DIAG_ATTACKS", "wanet,bpp"):
        for label, params, s in variants(name, setting, probes):
            start = time.perf_counter()
            bd = source.backdoor(s, ATTACKS.build(name, params), seed)
            m = measure_model(bd.model, bd, s.dataset.test)
            rows.append(
                [name, label, f"{m['clean_accuracy']:.3f}", f"{m['asr']:.3f}", f"{time.perf_counter() - start:.0f}"]
            )
            print_table(["attack", "probe", "CA", "ASR", "s"], rows[-1:])
    print(f"\n{key}, seed {seed}: one change at a time from the defaults\n")
    print_table(["attack", "probe", "CA", "ASR", "s"], rows)
    return True


if __name__ == "__main__":
    main()
