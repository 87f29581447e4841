"""Fine-Pruning (issue 4): pruning, fine-tuning, fine-pruning and the pruning-aware attack, measured.

Settings:

- MNIST-5k with ``badnet_cnn``, 40 epochs (the toolkit's default training);
- a 32x32 colour set from ``../shared/data`` with ``cnn_small``: GTSRB (``gtsrb.npz``), random subsets of
  4,000 train / 500 val / 2,000 test images, ``COLOUR_EPOCHS`` epochs, to keep the bench affordable on 2 cores.
  (CIFAR-10's ``cifar10_png5k.npz`` was tried first: after 12 epochs ``cnn_small`` reached 47% clean accuracy
  and BadNets only 20% ASR, too weak a baseline.)

Attacks: BadNets (3x3 white square bottom-right, 10%, target 0) and the pruning-aware attack (the same BadNets,
steps 2-4 on top of the clean model, retrained for ``retrain_epochs``). Defenses: pruning (last conv layer, stop
at 4 points of validation accuracy), fine-tuning and fine-pruning with SGD at each learning rate of ``LRS``
(10 epochs on the validation images).

Printed: Table 1 (one per learning rate), CA/ASR vs pruned fraction, pruning alone, the pruning-aware attack's
decoys against the pruning threshold, the search for a setting where pruning alone halves the ASR before
clean accuracy falls 4 points, and the wall time of each defense. Targets (issue 4): the pruning-aware attack
keeps ASR >= 0.90 undefended and after pruning, its re-instated channels are dormant (mean activation on clean
and triggered test inputs at or below the defender's pruning threshold), and the search finds a setting.
The paper's numbers are not typed in: everything here is measured.

``BENCH_SEEDS`` (default 3) sets the seeds of the main tables; the search runs seed 0 and repeats a setting
where the mechanism shows on the other seeds.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backdoorlab.attacks import Backdoor, BadNets
from backdoorlab.attacks.pruning_aware import PruningAware
from backdoorlab.data import Dataset, Split, load_dataset
from backdoorlab.defenses import Repair
from backdoorlab.defenses.repair.fine_pruning import FinePruning
from backdoorlab.defenses.repair.fine_tuning import FineTuning
from backdoorlab.defenses.repair.pruning import Pruning, PruningCurve
from backdoorlab.experiments.evaluation import EvaluationContext, evaluate_defense
from backdoorlab.experiments.store import ResultRow
from backdoorlab.metrics import backdoor_metrics, mean_ci
from backdoorlab.models import TrainingConfig, build_model, train_model
from backdoorlab.report.section_fine_pruning import fine_pruning_table
from backdoorlab.triggers import Trigger, blend_trigger
from backdoorlab.utils.seeding import make_generator

from .common import bench_seeds, check, print_table

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the repository root
COLOUR_FILE = "gtsrb.npz"
COLOUR_SIZES = (4000, 500, 2000)  # train / val / test images drawn from the file's splits
COLOUR_EPOCHS = 10
LRS = (1e-3, 1e-2, 5e-2)
CURVE_POINTS = 9  # pruned fractions shown per curve: 0, 1/8, ..., 1


@dataclass(frozen=True)
class Setting:
    """A dataset + architecture + training recipe (and the pruning-aware attack's retraining epochs)."""

    name: str
    kind: str  # "mnist" or "colour"
    dataset: Dataset
    architecture: str
    training: TrainingConfig
    retrain_epochs: int


def settings() -> list[Setting]:
    out = [Setting("MNIST-5k", "mnist", load_dataset("mnist5k"), "badnet_cnn", TrainingConfig(), 20)]
    path = DATA_DIR / COLOUR_FILE
    if path.is_file():
        full = load_dataset(f"npz:{path}")
        parts = [
            subset(split, n, seed)
            for seed, (split, n) in enumerate(zip((full.train, full.val, full.test), COLOUR_SIZES, strict=True))
        ]
        ds = Dataset("gtsrb-4k", *parts, full.classes)
        training = TrainingConfig(epochs=COLOUR_EPOCHS)
        out.append(Setting(ds.name, "colour", ds, "cnn_small", training, COLOUR_EPOCHS // 2))
    else:
        print(f"colour set skipped: {path} not found (it lives in ../shared/data beside the repository)\n")
    return out


def subset(split: Split, n: int, seed: int) -> Split:
    """``n`` rows of ``split`` drawn at random (fixed by ``seed``)."""
    return split.subset(torch.randperm(len(split), generator=make_generator(seed))[:n])


def defenses() -> list[tuple[str, Repair]]:
    out: list[tuple[str, Repair]] = [("pruning", Pruning())]
    out += [(f"fine_tuning[lr={lr:g}]", FineTuning(lr=lr)) for lr in LRS]
    out += [(f"fine_pruning[lr={lr:g}]", FinePruning(lr=lr)) for lr in LRS]
    return out


@dataclass
class Measured:
    """Everything the bench keeps: result rows, pruning curves, defense wall times, decoy checks."""

    rows: list[ResultRow] = field(default_factory=list)
    curves: dict[tuple[str, str], list[PruningCurve]] = field(default_factory=lambda: defaultdict(list))
    seconds: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    decoys: dict[str, list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, s: Setting, attack: str, defense: str, seed: int, metrics: dict[str, float]) -> None:
        self.rows += [
            ResultRow("bench", s.name, s.architecture, attack, defense, seed, k, float(v)) for k, v in metrics.items()
        ]


def train_clean(s: Setting, seed: int) -> nn.Module:
    model = build_model(
        s.architecture, s.dataset.input_shape, s.dataset.num_classes, s.dataset.mean, s.dataset.std, seed=seed
    )
    return train_model(model, s.dataset.train.x, s.dataset.train.y, s.training, seed=seed, progress=False)


def decoy_check(bd: Backdoor, metrics: dict[str, float], activations: dict) -> dict[str, float]:
    """The re-instated channels' largest mean activation (clean / triggered test) against the pruning threshold."""
    decoys = bd.info["reinstated_channels"]
    clean, triggered = np.array(activations["clean"]), np.array(activations["triggered"])
    return {
        "decoy_fraction": bd.info["reinstated_fraction"],
        "clean": float(clean[decoys].max(initial=0.0)),
        "triggered": float(triggered[decoys].max(initial=0.0)),
        "threshold": metrics["pruning_threshold"],
        "kept_min": float(np.delete(clean, decoys).min(initial=np.inf)),
        "defender_pruned": metrics["pruned_fraction"],
    }


def run_setting(s: Setting, seeds: list[int], out: Measured) -> dict[int, Backdoor]:
    """Train, attack and defend ``s`` for each seed; returns the BadNets backdoor of each seed (for the search)."""
    baselines = {}
    for seed in seeds:
        start = time.perf_counter()
        clean = train_clean(s, seed)
        out.seconds[(s.name, "train clean")].append(time.perf_counter() - start)
        start = time.perf_counter()
        baselines[seed] = BadNets().run(s.dataset, s.architecture, s.training, seed=seed, progress=False)
        out.seconds[(s.name, "attack badnets")].append(time.perf_counter() - start)
        start = time.perf_counter()
        attack = PruningAware(retrain_epochs=s.retrain_epochs)
        aware = attack.implant(clean, s.dataset, s.training, architecture=s.architecture, seed=seed)
        out.seconds[(s.name, "attack pruning_aware (steps 2-4)")].append(time.perf_counter() - start)
        ctx = EvaluationContext(s.dataset, seed=seed, device="cpu", progress=False)
        for attack, bd in (("badnets", baselines[seed]), ("pruning_aware", aware)):
            out.add(s, attack, "none", seed, backdoor_metrics(bd.model, s.dataset.test, bd.trigger, bd.target_rule))
            for label, defense in defenses():
                start = time.perf_counter()
                outcome = evaluate_defense(defense, bd.model, bd, ctx)
                out.seconds[(s.name, label.split("[")[0])].append(time.perf_counter() - start)
                out.add(s, attack, label, seed, outcome.metrics)
                if label == "pruning":
                    out.curves[(s.name, attack)].append(PruningCurve(**outcome.artifacts["pruning"]))
                    if attack == "pruning_aware":
                        out.decoys[s.name].append(decoy_check(bd, outcome.metrics, outcome.artifacts["activations"]))
        print(
            f"  {s.name} seed {seed} done ({sum(v[-1] for k, v in out.seconds.items() if k[0] == s.name):.0f} s)",
            flush=True,
        )
    return baselines


def pct(values: list[float]) -> str:
    mean, ci = mean_ci(values)
    return "–" if np.isnan(mean) else (f"{mean * 100:.1f}" if ci == 0 else f"{mean * 100:.1f} ± {ci * 100:.1f}")


def halving_text(points: list[tuple[float, float] | None]) -> str:
    """Per seed: the pruned fraction where ASR first fell below half its start, and the test CA drop there."""
    return "; ".join("never" if h is None else f"{h[0]:.0%} (CA -{h[1] * 100:.1f})" for h in points)


def values(rows: list[ResultRow], dataset: str, attack: str, defense: str, metric: str) -> list[float]:
    return [r.value for r in rows if (r.dataset, r.attack, r.defense, r.metric) == (dataset, attack, defense, metric)]


def print_tables(out: Measured, setting_names: list[str]) -> None:
    for lr in LRS:
        table = fine_pruning_table(
            out.rows, defenses=[("None", "none"), ("FT", f"fine_tuning[lr={lr:g}]"), ("FP", f"fine_pruning[lr={lr:g}]")]
        )
        print(f"\nTable 1, fine-tuning SGD lr {lr:g} (cl = clean accuracy, bd = ASR; test split, %, mean ± 95% CI)")
        print_table(table.headers, table.rows)

    print("\nPruning alone (last conv layer, stop before validation accuracy falls > 4 points); test split, %")
    body = []
    for name in setting_names:
        for attack in ("badnets", "pruning_aware"):
            cells = [
                pct(values(out.rows, name, attack, d, m))
                for d, m in (
                    ("none", "clean_accuracy"),
                    ("none", "asr"),
                    ("pruning", "pruned_fraction"),
                    ("pruning", "clean_accuracy"),
                    ("pruning", "asr"),
                )
            ]
            body.append([name, attack, *cells, halving_text([c.asr_halving() for c in out.curves[(name, attack)]])])
    print_table(
        ["setting", "attack", "CA", "ASR", "pruned", "CA pruned", "ASR pruned", "ASR < half of start at (per seed)"],
        body,
    )

    print("\nCA / ASR (test, %, mean over seeds) against the fraction of the last conv layer pruned")
    body = []
    for (name, attack), curves in out.curves.items():
        ratios = np.array(curves[0].ratios)
        picks = [int(np.argmin(np.abs(ratios - f))) for f in np.linspace(0, 1, CURVE_POINTS)]
        for what in ("test_accuracy", "asr"):
            mean = np.mean([getattr(c, what) for c in curves], axis=0)
            title = "CA" if what == "test_accuracy" else "ASR"
            body.append([name, attack, title, *(f"{mean[i] * 100:.0f}" for i in picks)])
    print_table(["setting", "attack", "curve", *(f"{f:.3g}" for f in np.linspace(0, 1, CURVE_POINTS))], body)

    print(
        "\nPruning-aware attack: re-instated channels (decoys) vs the defender's pruning threshold "
        "(mean activation per channel on test inputs; max over the decoys)"
    )
    body = []
    for name, checks in out.decoys.items():
        for seed, c in enumerate(checks):
            body.append(
                [
                    name,
                    seed,
                    f"{c['decoy_fraction']:.2f}",
                    f"{c['clean']:.4f}",
                    f"{c['triggered']:.4f}",
                    f"{c['threshold']:.4f}",
                    f"{c['kept_min']:.4f}",
                    f"{c['defender_pruned']:.2f}",
                ]
            )
    print_table(
        [
            "setting",
            "seed",
            "decoy fraction",
            "decoy clean max",
            "decoy triggered max",
            "threshold",
            "min clean act. of other channels",
            "defender pruned",
        ],
        body,
    )

    print("\nWall time per call, seconds (1 thread, shared 2-core machine); defenses include their test measurement")
    body = [[name, what, f"{np.mean(v):.1f}", len(v)] for (name, what), v in out.seconds.items()]
    print_table(["setting", "what", "mean s", "calls"], body)


@dataclass(frozen=True)
class Candidate:
    """One setting of the search: how the model is trained and attacked, and which layer is pruned."""

    name: str
    kind: str  # the Setting kind it runs on
    attack: BadNets  # poisoning, target and (unless ``trigger`` is given) the trigger
    layer: str | None = None
    widen: int | None = None
    trigger: Callable[[Dataset], Trigger] | None = None

    @property
    def default_model(self) -> bool:
        """True when the model is the main tables' BadNets model (only the pruned layer may differ)."""
        return self.widen is None and self.trigger is None and self.attack == BadNets()


def blended_noise(ds: Dataset) -> Trigger:
    """Chen et al. (2017)'s blended random-noise pattern (uniform, seed 0) at alpha 0.2, over the whole image."""
    return blend_trigger(torch.rand(*ds.input_shape, generator=make_generator(0)), 0.2)


CANDIDATES = [
    Candidate("MNIST badnet_cnn, 3x3 white 10% (the bench default)", "mnist", BadNets()),
    Candidate("MNIST badnet_cnn, prune the 512-unit fc layer instead", "mnist", BadNets(), layer="net.2"),
    Candidate("MNIST badnet_cnn, 128 channels in the last conv", "mnist", BadNets(), widen=128),
    Candidate("MNIST badnet_cnn, 3x3 white 1%", "mnist", BadNets(poison_rate=0.01)),
    Candidate("MNIST badnet_cnn, BadNets pattern trigger 10%", "mnist", BadNets(trigger="pattern")),
    Candidate("MNIST badnet_cnn, blended noise trigger (alpha 0.2) 10%", "mnist", BadNets(), trigger=blended_noise),
    Candidate("GTSRB cnn_small, 3x3 white 10% (the bench default)", "colour", BadNets()),
    Candidate("GTSRB cnn_small, blended noise trigger (alpha 0.2) 10%", "colour", BadNets(), trigger=blended_noise),
]


def widened(model: nn.Sequential, width: int, input_shape: tuple[int, int, int]) -> nn.Sequential:
    """``badnet_cnn`` with ``width`` channels in its last conv (and the fc layer after it resized to match)."""
    features = model.net[0]
    old = features[3]
    features[3] = nn.Conv2d(old.in_channels, width, old.kernel_size, padding=old.padding)
    with torch.no_grad():
        flat = features(torch.zeros(1, *input_shape)).flatten(1).shape[1]
    model.net[2] = nn.Linear(flat, model.net[2].out_features)
    return model


def candidate_backdoor(c: Candidate, s: Setting, seed: int) -> Backdoor:
    ds = s.dataset
    trigger = c.trigger(ds) if c.trigger is not None else c.attack.make_trigger(ds)
    rule = c.attack.target_rule(ds)
    poisoned = c.attack.poison(ds.train, trigger, rule, seed)
    model = build_model(s.architecture, ds.input_shape, ds.num_classes, ds.mean, ds.std, seed=seed)
    if c.widen:
        torch.manual_seed(seed)
        widened(model, c.widen, ds.input_shape)
    train_model(model, poisoned.split.x, poisoned.split.y, s.training, seed=seed, progress=False)
    return Backdoor(model, trigger, rule, "badnets", c.attack.model_dump(), s.architecture)


def search(by_kind: dict[str, Setting], baselines: dict[str, dict[int, Backdoor]], seeds: list[int]) -> list[str]:
    """Pruning alone on each candidate (seed 0, then the other seeds where the mechanism shows); returns the names
    of the candidates where it shows on every seed: the backdoor works (ASR >= 0.8) and ASR falls below half of
    that while test clean accuracy has fallen at most 4 points."""
    print("\nSearch: pruning alone lowers ASR below half its start before test CA drops 4 points?")
    body, found = [], []
    for c in CANDIDATES:
        s = by_kind.get(c.kind)
        if s is None:
            continue
        results = []
        for seed in seeds:
            if seed != seeds[0] and not (results and all(r[0] for r in results)):
                break
            bd = baselines[s.name][seed] if c.default_model else candidate_backdoor(c, s, seed)
            outcome = evaluate_defense(
                Pruning(layer=c.layer), bd.model, bd, EvaluationContext(s.dataset, seed=seed, device="cpu")
            )
            curve = PruningCurve(**outcome.artifacts["pruning"])
            halving = curve.asr_halving()
            shows = curve.asr[0] >= 0.8 and halving is not None and halving[1] <= 0.04
            results.append((shows, curve, outcome.metrics, halving))
        ok = all(r[0] for r in results)
        if ok:
            found.append(c.name)
        shown = halving_text([h for *_, h in results])
        body.append(
            [
                c.name,
                len(results),
                pct([r[1].asr[0] for r in results]),
                pct([r[2]["pruned_fraction"] for r in results]),
                pct([r[2]["asr"] for r in results]),
                shown,
                "yes" if ok else "no",
            ]
        )
    print_table(["setting", "seeds", "ASR", "pruned", "ASR after pruning", "ASR < half at (CA drop)", "shows"], body)
    return found


def main() -> bool:
    seeds = bench_seeds()
    all_settings = settings()
    out = Measured()
    baselines: dict[str, dict[int, Backdoor]] = {}
    for s in all_settings:
        print(
            f"{s.name}: {s.dataset.summary()}; {s.architecture}, {s.training.epochs} epochs "
            f"({s.training.optimizer} lr {s.training.lr}); pruning-aware retraining {s.retrain_epochs} epochs",
            flush=True,
        )
        baselines[s.name] = run_setting(s, seeds, out)
    names = [s.name for s in all_settings]
    print_tables(out, names)
    found = search({s.kind: s for s in all_settings}, baselines, seeds)
    print(
        "\nSettings where pruning alone halves the ASR before clean accuracy drops 4 points: "
        + (", ".join(found) if found else "none found on these sets (see the curves above)")
    )

    targets = []
    for name in names:
        asr = np.mean(values(out.rows, name, "pruning_aware", "none", "asr"))
        pruned = np.mean(values(out.rows, name, "pruning_aware", "pruning", "asr"))
        dormant = all(max(c["clean"], c["triggered"]) <= c["threshold"] for c in out.decoys[name])
        worst = max(max(c["clean"], c["triggered"]) - c["threshold"] for c in out.decoys[name])
        targets += [
            check(f"{name}: pruning-aware ASR undefended", asr, ">= 0.90", asr >= 0.90),
            check(f"{name}: pruning-aware ASR after pruning", pruned, ">= 0.90", pruned >= 0.90),
            check(f"{name}: decoy activation - threshold (max)", worst, "<= 0 (dormant)", dormant),
        ]
    targets.append(check("settings where pruning halves ASR within 4 CA points", len(found), ">= 1", bool(found)))
    print()
    print_table(["target", "measured", "required", "status"], targets)
    return all(t[-1] == "ok" for t in targets)
