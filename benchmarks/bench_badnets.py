"""Foundation targets (issue 2): BadNets on MNIST-5k with badnet_cnn, 3x3 white square bottom-right, 10%, target 0.

- all-to-one: clean accuracy >= 0.97, ASR >= 0.99, clean accuracy within 1 point of the clean model's;
- all-to-all: ASR >= 0.95.

Means over seeds (BENCH_SEEDS, default 3). No peer library with a comparable BadNets pipeline is installed
(ART's PoisoningAttackBackdoor poisons numpy arrays but does not train), so no peer ratio is printed.
"""

from __future__ import annotations

import time

from backdoorlab.attacks import BadNets
from backdoorlab.data import load_dataset
from backdoorlab.metrics import backdoor_metrics, clean_accuracy
from backdoorlab.models import TrainingConfig, build_model, train_model

from .common import bench_seeds, check, fmt, print_table


def main() -> bool:
    ds = load_dataset("mnist5k")
    training = TrainingConfig()
    seeds = bench_seeds()
    per_seed, clean_acc, one, every = [], [], [], []
    for seed in seeds:
        start = time.perf_counter()
        clean = build_model("badnet_cnn", ds.input_shape, ds.num_classes, ds.mean, ds.std, seed=seed)
        train_model(clean, ds.train.x, ds.train.y, training, seed=seed, progress=False)
        ca = clean_accuracy(clean, ds.test)
        results = []
        for attack in (BadNets(), BadNets(mode="all_to_all")):
            bd = attack.run(ds, "badnet_cnn", training, seed=seed, progress=False)
            results.append(backdoor_metrics(bd.model, ds.test, bd.trigger, bd.target_rule))
        clean_acc.append(ca)
        one.append(results[0])
        every.append(results[1])
        per_seed.append(
            [
                seed,
                f"{ca:.4f}",
                f"{results[0]['clean_accuracy']:.4f}",
                f"{results[0]['asr']:.4f}",
                f"{results[1]['clean_accuracy']:.4f}",
                f"{results[1]['asr']:.4f}",
                f"{time.perf_counter() - start:.0f}",
            ]
        )
    print(f"MNIST-5k ({ds.summary()}), badnet_cnn, {training.epochs} epochs; 3x3 white square, 10% poisoned\n")
    print_table(
        ["seed", "clean model CA", "all2one CA", "all2one ASR", "all2all CA", "all2all ASR", "seconds"], per_seed
    )
    mean = lambda key, rs: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    ca_clean, ca_one = sum(clean_acc) / len(clean_acc), mean("clean_accuracy", one)
    targets = [
        check("all-to-one clean accuracy", ca_one, ">= 0.97", ca_one >= 0.97),
        check("all-to-one ASR", mean("asr", one), ">= 0.99", mean("asr", one) >= 0.99),
        check("clean accuracy drop vs clean model", ca_clean - ca_one, "<= 0.01", ca_clean - ca_one <= 0.01),
        check("all-to-all ASR", mean("asr", every), ">= 0.95", mean("asr", every) >= 0.95),
    ]
    print(
        f"\nmeans over seeds {seeds}: clean model CA {fmt(clean_acc)}, all2one ASR {fmt([r['asr'] for r in one])}, "
        f"all2all ASR {fmt([r['asr'] for r in every])}\n"
    )
    print_table(["target", "measured", "required", "status"], targets)
    return all(t[-1] == "ok" for t in targets)
