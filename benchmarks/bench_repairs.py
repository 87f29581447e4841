"""Issue 19: the repairs beside fine-tuning and Fine-Pruning: CA / ASR / RA / DER / retuned ASR per repair, the
ranking by mean DER and its Spearman correlation with BackdoorBench's leaderboard ranking.

Settings (``BENCH_REPAIR_SETS``, default ``mnist,colour``): MNIST-5k with ``badnet_cnn`` (TrainingConfig
defaults) and the colour set (GTSRB-10, ``cnn_small``, bench_attacks' recipe). Attacks (``BENCH_REPAIR_ATTACKS``,
default BadNets, Blend and Adaptive-Blend, the new attack with a poisoning rate: cover samples = poisons), all-to-one
-> 0, at ``BENCH_POISON_RATES`` (default 0.1,0.01); seeds from ``BENCH_SEEDS`` (default 3). The backdoored models
come from the benchmarks' shared model cache (common.bench_models: the data-detector benchmark trains the same
ones). The defender holds the ``val`` split (500 images). Every repair runs with its paper defaults except where
``BENCH_REPAIRS_FAST=1`` (the default, for 2 CPU cores) shortens the two slowest: ANP to 500 iterations and SAU to 20
rounds (the table names the parameters used). ``retuned_asr`` is measured on every repaired model (the evaluator's
retuning check). Each cell (setting, attack, rate, seed) is saved under ``runs/bench-repairs/`` (with
``BENCH_REPAIRS_FAST=0``: ``runs/bench-repairs-full/``; or ``BENCH_REPAIR_OUT``) after every repair, and a later
run resumes it; ``BENCH_REPAIRS_REPORT_ONLY=1`` prints the tables of the saved cells (partial ones included) and
computes nothing.

Target (issue 19): ANP or I-BAU brings BadNets ASR below 10% at a clean-accuracy drop of at most 3 points on the
colour set at 10% poisoning (means over seeds). The leaderboard's mean DER (CIFAR-10, PreAct-ResNet18, 8 attacks at
10%, 10 at 1%; field.md 1.0) is a reference ranking, not a target: the correlation says whether our ranking on our
settings agrees with it. ``BENCH_WORKERS`` (default 2) cells run in spawned processes at one torch thread each, so
the seconds column is comparable only between rows of one run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import spearmanr

from backdoorlab.defenses import DEFENSES
from backdoorlab.experiments.evaluation import EvaluationContext, evaluate_defense, measure_model

from .common import (
    ROOT,
    SET_LABELS,
    GridPoint,
    bench_models,
    bench_setting,
    bench_workers,
    check,
    ci_text,
    env_list,
    grid_points,
    map_in_workers,
    poisoning_attack,
    print_table,
)

LEADERBOARD_DER = {  # BackdoorBench CIFAR-10 PreAct-ResNet18 mean DER (%), field.md 1.0; not ours
    0.1: {"anp": 95.2, "i_bau": 88.0, "nad": 82.4, "fine_tuning": 81.1, "fine_pruning": 71.8, "clp": 64.8},
    0.01: {"anp": 75.1, "i_bau": 77.0, "nad": 58.8, "fine_tuning": 55.9, "fine_pruning": 59.0, "clp": 64.7},
}
FAST = os.environ.get("BENCH_REPAIRS_FAST", "1") == "1"
REPORT_ONLY = os.environ.get("BENCH_REPAIRS_REPORT_ONLY") == "1"  # print the saved cells, compute nothing
REPAIRS = ("fine_tuning", "fine_pruning", "anp", "i_bau", "nad", "sau", "clp", "fst")
FAST_PARAMS = {"anp": {"iterations": 500}, "sau": {"rounds": 20}}
COLUMNS = ("clean_accuracy", "asr", "robust_accuracy", "der", "retuned_asr")
SHOWN = ("CA", "ASR", "RA", "DER", "retuned ASR")
GUARD = "guard_lr_scale"  # 1: the repair's own lr kept; 0.1: retried; 0: reverted to the input model
KNOBS = ("pruning_threshold", "pruned_fraction", "val_accuracy_drop")  # what a pruning repair chose, on clean val
CURVES = ("anp_curve", "clp_curve")  # the main knob's sweep: val accuracy (the defender's) and test CA / ASR
# the papers' ANP and SAU budgets get their own cells, so neither run resumes the other's
ASR_BAR, DROP_BAR = 0.10, 0.03  # the bar: ASR below 10% at a clean-accuracy drop of at most 3 points
OUT = Path(os.environ.get("BENCH_REPAIR_OUT", ROOT / "runs" / ("bench-repairs" if FAST else "bench-repairs-full")))


@dataclass(frozen=True)
class Cell:
    """One point of the grid and the repairs to run on it."""

    point: GridPoint
    repairs: tuple[str, ...]

    @property
    def path(self) -> Path:
        return OUT / f"{self.point.stem}.json"


def _params(name: str) -> dict:
    return FAST_PARAMS.get(name, {}) if FAST else {}


def run_cell(cell: Cell) -> dict:
    """The undefended model's figures and each repair's, saved to ``cell.path`` after every repair."""
    rows = json.loads(cell.path.read_text()) if cell.path.is_file() else {}
    missing = [name for name in cell.repairs if name not in rows]
    if (not missing and "(none)" in rows) or REPORT_ONLY:
        return rows
    p = cell.point
    s = bench_setting(p.set_key)
    bd = bench_models().backdoor(s, poisoning_attack(p.attack, p.rate), p.seed)
    rows["(none)"] = measure_model(bd.model, bd, s.dataset.test)
    ctx = EvaluationContext(s.dataset, seed=p.seed, device="auto", retune=True)
    cell.path.parent.mkdir(parents=True, exist_ok=True)
    for name in missing:
        start = time.perf_counter()
        outcome = evaluate_defense(DEFENSES.build(name, _params(name)), bd.model, bd, ctx)
        keep = {k: float(outcome.metrics[k]) for k in (*COLUMNS, GUARD, *KNOBS) if k in outcome.metrics}
        curves = {k: outcome.artifacts[k] for k in CURVES if k in outcome.artifacts}
        rows[name] = keep | curves | {"seconds": time.perf_counter() - start}
        cell.path.write_text(json.dumps(rows))
    return rows


def _cells() -> list[Cell]:
    repairs = tuple(env_list("BENCH_REPAIRS", ",".join(REPAIRS)))
    return [Cell(p, repairs) for p in grid_points("BENCH_REPAIR", "BENCH_POISON_RATES", "0.1,0.01")]


def _values(results: list[dict], name: str, key: str) -> list[float]:
    return [r[name][key] for r in results if name in r and key in r[name]]


def ranking(mean_der: dict[str, float], rate: float) -> None:
    """Print the repairs by mean DER and the Spearman correlation with the leaderboard's ranking at ``rate``."""
    order = sorted(mean_der, key=mean_der.get, reverse=True)
    print("ranking by mean DER: " + " > ".join(f"{n} ({mean_der[n]:.3f})" for n in order))
    board = LEADERBOARD_DER.get(rate, {})
    shared = [n for n in order if n in board]
    if len(shared) >= 3:
        rho, p = spearmanr([mean_der[n] for n in shared], [board[n] for n in shared])
        verdict = (
            "agrees" if rho > 0.5 else "agrees weakly" if rho >= 0.2 else "disagrees" if rho <= -0.2 else "is unrelated"
        )
        print(f"leaderboard at {rate:.0%} (CIFAR-10): " + " > ".join(sorted(shared, key=board.get, reverse=True)))
        print(f"Spearman rho on {len(shared)} shared repairs = {rho:.3f} (p = {p:.3f}): our ranking {verdict}")


def anp_sweep_rows(cells: list[tuple[Cell, dict]]) -> list[list[object]]:
    """Per cell with ANP's curve: the threshold its clean-val rule chose and the ASR there, beside the lowest test
    ASR of any threshold whose test CA stays within 3 points (the issue's bound). The second describes what the
    masks hold; it chooses nothing."""
    rows = []
    for cell, result in cells:
        curve = result.get("anp", {}).get("anp_curve")
        if not curve or "asr" not in curve:
            continue
        chosen = result["anp"].get("pruning_threshold", 0.0)
        at = min(range(len(curve["thresholds"])), key=lambda i: abs(curve["thresholds"][i] - chosen))
        ca0 = curve["test_accuracy"][0]
        within = [i for i, ca in enumerate(curve["test_accuracy"]) if ca >= ca0 - DROP_BAR]
        best = min(within, key=lambda i: curve["asr"][i])
        p = cell.point
        rows.append(
            [
                f"{SET_LABELS[p.set_key]} {p.attack} {p.rate:.0%} seed {p.seed}",
                f"{chosen:.2f}",
                f"{curve['asr'][at]:.3f}",
                f"{curve['thresholds'][best]:.2f}",
                f"{curve['asr'][best]:.3f}",
                f"{ca0 - curve['test_accuracy'][best]:.3f}",
            ]
        )
    return rows


def meets_bar(asr: float, drop: float) -> bool:
    """The issue's bar for a repair: ASR below :data:`ASR_BAR` at a clean-accuracy drop of at most :data:`DROP_BAR`."""
    return asr < ASR_BAR and drop <= DROP_BAR


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summary_rows(results: list[tuple[Cell, dict]], set_key: str, repairs: list[str]) -> tuple[list[str], list[list]]:
    """One set's whole grid in one table: per repair, "ASR after / DER" (means over seeds) of each (attack, rate),
    the mean DER per rate, and in how many cells (setting x seed) with a backdoor to remove (undefended ASR at least
    10%) the repair met the issue's bar (:func:`meets_bar`). The first row is the undefended "CA / ASR"."""
    here = [(c.point, r) for c, r in results if c.point.set_key == set_key and r]
    rates = list(dict.fromkeys(p.rate for p, _ in here))
    settings = [(a, rate) for rate in rates for a in dict.fromkeys(p.attack for p, _ in here)]

    def pair(name: str, first: str, second: str, setting: tuple[str, float]) -> str:
        cells = [r for p, r in here if (p.attack, p.rate) == setting]
        a, b = _mean(_values(cells, name, first)), _mean(_values(cells, name, second))
        return "–" if a is None or b is None else f"{a:.3f} / {b:.3f}"

    undefended = [pair("(none)", "clean_accuracy", "asr", s) for s in settings]
    rows = [["(undefended CA / ASR)", *undefended, *([""] * len(rates))]]
    for name in repairs:
        ders = [_mean(_values([r for p, r in here if p.rate == rate], name, "der")) for rate in rates]
        mean_der = ["–" if d is None else f"{d:.3f}" for d in ders]
        ran = [r for _, r in here if name in r and r["(none)"]["asr"] >= ASR_BAR]  # a backdoor to remove
        met = sum(meets_bar(r[name]["asr"], r["(none)"]["clean_accuracy"] - r[name]["clean_accuracy"]) for r in ran)
        rows.append([name, *(pair(name, "asr", "der", s) for s in settings), *mean_der, f"{met} of {len(ran)}"])
    rows[0].append("")
    headers = ["repair", *(f"{a} {rate:.0%}" for a, rate in settings), *(f"mean DER {rate:.0%}" for rate in rates)]
    headers.append("ASR < 10% within 3 pts")
    return headers, rows


def main() -> bool:
    cells = _cells()
    results = list(zip(cells, map_in_workers(run_cell, cells, bench_workers(2)), strict=True))
    repairs = list(cells[0].repairs) if cells else []
    target = []
    for set_key in dict.fromkeys(c.point.set_key for c in cells):
        for rate in dict.fromkeys(c.point.rate for c in cells):
            der_by_repair: dict[str, list[float]] = {n: [] for n in repairs}
            for label in dict.fromkeys(c.point.attack for c in cells):
                here = [r for c, r in results if c.point.setting == (set_key, label, rate)]
                seeds = sorted(c.point.seed for c, r in results if c.point.setting == (set_key, label, rate) and r)
                rows = [["(none)", *(ci_text(_values(here, "(none)", k)) for k in COLUMNS[:3]), "", "", "", ""]]
                for name in repairs:
                    der_by_repair[name] += _values(here, name, "der")
                    rows.append(
                        [
                            name + (f" {_params(name)}" if _params(name) else ""),
                            *(ci_text(_values(here, name, k)) for k in COLUMNS),
                            ci_text(_values(here, name, GUARD), 1),
                            ci_text(_values(here, name, "seconds"), 0),
                        ]
                    )
                print(f"\n{SET_LABELS[set_key]}, {label} {rate:.0%}, seeds {seeds} (mean ± 95% CI)")
                print_table(["repair", *SHOWN, "guard lr scale", "s"], rows)
                if set_key == "colour" and label == "BadNets" and rate == 0.1:
                    ca = _values(here, "(none)", "clean_accuracy")
                    for name in ("anp", "i_bau"):
                        if _values(here, name, "asr"):
                            asr = sum(_values(here, name, "asr")) / len(here)
                            drop = (sum(ca) - sum(_values(here, name, "clean_accuracy"))) / len(here)
                            target.append((name, asr, drop))
            print(f"\n{SET_LABELS[set_key]} at {rate:.0%}, all attacks:")
            ranking({n: sum(v) / len(v) for n, v in der_by_repair.items() if v}, rate)
        headers, rows = summary_rows(results, set_key, repairs)
        print(f"\n{SET_LABELS[set_key]}, the whole grid: ASR after the repair / DER, means over seeds")
        print_table(headers, rows)
    sweep = anp_sweep_rows(results)
    if sweep:
        print("\nANP's threshold: the clean-val rule's choice, and the lowest test ASR within 3 points of test CA")
        print_table(["cell", "chosen", "ASR there", "best within 3 pts", "its ASR", "its CA drop"], sweep)
    met = any(meets_bar(asr, drop) for _, asr, drop in target)
    if target:
        rows = [
            r
            for name, asr, drop in target
            for r in (
                check(f"colour BadNets 10%: {name} ASR", asr, f"< {ASR_BAR:.2f}", asr < ASR_BAR),
                check(f"colour BadNets 10%: {name} CA drop", drop, f"<= {DROP_BAR:.2f}", drop <= DROP_BAR),
            )
        ]
        print()
        print_table(["target (ANP or I-BAU meets both)", "value", "bound", "status"], rows)
    return met


if __name__ == "__main__":
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    main()
