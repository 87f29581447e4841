"""Helpers shared by the benchmarks: seeds from the environment, a plain-text table, target checks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path

import torch

from backdoorlab.attacks import ATTACKS, Attack
from backdoorlab.data import Dataset, Split, load_dataset
from backdoorlab.experiments.model_source import ModelSource, Setting
from backdoorlab.metrics import mean_ci
from backdoorlab.models import TrainingConfig
from backdoorlab.utils.seeding import make_generator

ROOT = Path(__file__).resolve().parents[1]
COLOUR_FILE = ROOT.parent / "shared" / "data" / "gtsrb.npz"
POISONING_ATTACKS = {"BadNets": "badnets", "Blend": "blend", "Adaptive-Blend": "adaptive_blend"}
SET_LABELS = {"mnist": "MNIST-5k", "colour": "GTSRB-10"}


def bench_seeds(default: int = 3) -> list[int]:
    """Seeds 0..N-1, N from ``BENCH_SEEDS`` (default 3); ``BENCH_SEED_LIST`` (e.g. ``2`` or ``1,2``) names them
    instead, so two processes can share one grid's seeds."""
    if os.environ.get("BENCH_SEED_LIST"):
        return [int(s) for s in env_list("BENCH_SEED_LIST", "")]
    return list(range(int(os.environ.get("BENCH_SEEDS", default))))


def env_list(name: str, default: str) -> list[str]:
    """The comma-separated values of the environment variable ``name`` (``default`` when unset), empty ones dropped."""
    return [v for v in os.environ.get(name, default).split(",") if v]


def bench_workers(default: int = 1) -> int:
    """Worker processes from ``BENCH_WORKERS`` (default ``default``)."""
    return max(1, int(os.environ.get("BENCH_WORKERS", default)))


def _one_thread_then(fn: Callable, arg):
    import torch

    torch.set_num_threads(1)
    return fn(arg)


def map_in_workers(fn: Callable, args: Sequence, workers: int) -> list:
    """``[fn(a) for a in args]``, in ``workers`` spawned processes at one torch thread each when ``workers`` > 1.

    ``fn`` must be a module-level function and its arguments and results picklable.
    """
    if workers <= 1 or len(args) <= 1:
        return [fn(a) for a in args]
    with ProcessPoolExecutor(min(workers, len(args)), mp_context=get_context("spawn")) as pool:
        return list(pool.map(_one_thread_then, [fn] * len(args), args))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def fmt(values: Sequence[float]) -> str:
    mean, ci = mean_ci(list(values))
    return f"{mean:.4f} ± {ci:.4f}" if ci else f"{mean:.4f}"


def check(name: str, value: float, target: str, ok: bool) -> list[object]:
    return [name, f"{value:.4f}", target, "ok" if ok else "MISSED"]


def ci_text(values: Sequence[float], digits: int = 3) -> str:
    """Mean ± 95% CI of ``values`` (one value alone; "-" for none)."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean, ci = mean_ci(list(values))
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def saved_json(path: Path, compute: Callable[[], dict]) -> dict:
    """The JSON at ``path`` when it exists, else ``compute()`` written there (a benchmark cell, resumable)."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def frequent_classes(full: Dataset, k: int, sizes: tuple[int, int, int], seed: int = 0) -> Dataset:
    """The ``k`` classes of ``full`` with most training images, relabelled 0..k-1, with ``sizes`` (train, val, test)
    images drawn at random from each split."""
    top = torch.bincount(full.train.y, minlength=full.num_classes).argsort(descending=True)[:k].sort().values
    remap = torch.full((full.num_classes,), -1)
    remap[top] = torch.arange(k)

    def pick(split: Split, n: int, offset: int) -> Split:
        rows = (remap[split.y] >= 0).nonzero().flatten()
        rows = rows[torch.randperm(len(rows), generator=make_generator(seed + offset))[:n]].sort().values
        return Split(split.x[rows], remap[split.y[rows]])

    splits = (full.train, full.val, full.test)
    parts = [pick(split, n, i) for i, (split, n) in enumerate(zip(splits, sizes, strict=True))]
    return Dataset(f"{full.name}[{k} classes]", *parts, tuple(full.classes[i] for i in top.tolist()))


@cache
def _gtsrb10() -> Dataset:
    """GTSRB-10, loaded once per process (a benchmark worker builds many cells on it)."""
    return frequent_classes(load_dataset(f"npz:{COLOUR_FILE}"), 10, (3000, 500, 2000))


def colour_set(epochs: int = 15) -> tuple[Dataset, str, TrainingConfig] | None:
    """The colour set of the method issues: GTSRB-10 (the 10 most frequent classes of ``COLOUR_FILE``, 3,000
    train / 500 val / 2,000 test images, seed 0), ``cnn_small``, bench_attacks' recipe (Adam lr 1e-3, weight
    decay 5e-4, ``epochs`` epochs); None when the shared data file is absent."""
    if not COLOUR_FILE.is_file():
        return None
    return _gtsrb10(), "cnn_small", TrainingConfig(epochs=epochs, lr=1e-3, weight_decay=5e-4)


def bench_sets(variable: str) -> list[str]:
    """The setting keys named by ``variable`` (default ``mnist,colour``); ``colour`` only when its file is there."""
    return [k for k in env_list(variable, "mnist,colour") if k == "mnist" or COLOUR_FILE.is_file()]


def bench_setting(key: str) -> Setting:
    """The method issues' settings: ``mnist`` (MNIST-5k, ``badnet_cnn``, TrainingConfig defaults) or ``colour``."""
    if key == "mnist":
        return Setting(load_dataset("mnist5k"), "badnet_cnn", TrainingConfig())
    colour = colour_set()
    if colour is None:
        raise FileNotFoundError(f"the colour set needs {COLOUR_FILE}")
    return Setting(*colour)


def bench_models(path: str | Path | None = None) -> ModelSource:
    """The benchmarks' shared model cache (``BENCH_MODELS``, default runs/bench-models): a backdoored model of the
    same setting, attack, parameters and seed is trained once for every benchmark that uses it."""
    folder = path or os.environ.get("BENCH_MODELS") or ROOT / "runs" / "bench-models"
    return ModelSource(folder, device="auto", progress=False)


def poisoning_attack(label: str, rate: float) -> Attack:
    """``label``'s attack (a key of POISONING_ATTACKS) at poison rate ``rate``; Adaptive-Blend with as many cover
    samples as poisons (its paper's 1:1 regime)."""
    params = {"poison_rate": rate}
    if label == "Adaptive-Blend":
        params["cover_rate"] = rate
    return ATTACKS.build(POISONING_ATTACKS[label], params)


@dataclass(frozen=True)
class GridPoint:
    """One backdoored model of a method issue's grid: setting key, attack label, poison rate, seed."""

    set_key: str
    attack: str
    rate: float
    seed: int

    @property
    def setting(self) -> tuple[str, str, float]:
        """(set key, attack, rate): the point without its seed, what a table row averages over."""
        return self.set_key, self.attack, self.rate

    @property
    def stem(self) -> str:
        """The file stem of the point's saved cell."""
        return f"{self.set_key}-{self.attack}-{self.rate}-{self.seed}"


def grid_points(prefix: str, rates_variable: str, default_rates: str) -> list[GridPoint]:
    """The grid picked by ``{prefix}_SETS`` (default ``mnist,colour``; colour only when its file is there),
    ``{prefix}_ATTACKS`` (default every POISONING_ATTACKS label), ``rates_variable`` (default ``default_rates``)
    and ``BENCH_SEEDS`` (default 3), seed-major: a run cut short still covers every setting, attack and rate."""
    sets = bench_sets(f"{prefix}_SETS")
    attacks = env_list(f"{prefix}_ATTACKS", ",".join(POISONING_ATTACKS))
    rates = [float(r) for r in env_list(rates_variable, default_rates)]
    return [GridPoint(k, a, r, s) for s in bench_seeds(3) for k in sets for a in attacks for r in rates]
