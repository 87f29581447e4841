"""Issue 22: model-level detection over a TDC-style population, scored the way TDC 2022 and TrojAI score it.

Two populations of the same config (``BENCH_POP_CONFIG``, default ``configs/digits-tdc-population.yaml``: 8x8
digits, ``tdc_cnn`` and ``badnet_cnn``, TDC patch and blended triggers, random targets), written by the generator
(``backdoorlab population``) with different seeds, so they share no model:

- the **calibration** population, ``BENCH_POP_CALIB_N`` (default 10) clean + as many trojaned, seed 1, on which
  the map from model score to P(trojaned) is fitted (logistic regression on the score, Platt's method);
- the **scored** population, ``BENCH_POP_N`` (default 20) clean + as many trojaned, seed 2, on which every figure
  is measured.

Every model is scanned once (``scan-population``, TorchScript files, the defender's clean ``val`` split of the
dataset) with each inspector of ``BENCH_POP_INSPECTORS`` (default: the scan's inspectors, plus ``tabor`` and
``k_arm`` when they are registered; not ``bti_dbf``, which masks an inner layer and so needs an eager module). Per
inspector, and for ``scan`` (the scan's default inspectors combined by weighted Bonferroni, from the same
verdicts): ROC-AUC with a bootstrap 95% interval, PR-AUC, FPR at 95% TPR, flagged clean / trojaned models at
``alpha`` 0.05 (p <= alpha; the scan's p = min p_i / share_i), target-label accuracy
(the most suspicious label is the target, over trojaned models), seconds per model (the scan: the sum of its
inspectors'; STRIP's calibration is not counted), and the cross-entropy (eps 1e-12, TrojAI's) and Brier score of
the calibrated probability on the scored population (a constant 0.5 gives 0.693 and 0.25). ROC curves go to
``BENCH_POP_OUT``/roc.png (default ``runs/bench-population``), beside the populations and the scan CSVs, which a
rerun reuses.

CPU cost (2 cores): about 8 s of training per digits model, then the inspectors (Neural Cleanse and DeepInspect
at their defaults take tens of seconds each per model); the default 2 x 20 + 2 x 10 models take hours. Targets
(the issue's, set for MNIST): scan ROC-AUC >= 0.90 and clean models flagged at alpha <= 0.10.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from backdoorlab.audit.scan import INSPECTORS, SCAN_WEIGHTS
from backdoorlab.audit.scan_population import scan_population, scan_score
from backdoorlab.defenses import DEFENSES
from backdoorlab.defenses.inspection.null import alpha_shares, combine_p_values
from backdoorlab.experiments.config import load_config
from backdoorlab.experiments.model_files import write_population
from backdoorlab.metrics import model_detection_metrics, roc_auc

from .common import check, print_table

ALPHA = 0.05
EPS = 1e-12
ROOT = Path(__file__).resolve().parents[1]


def inspectors() -> list[str]:
    named = os.environ.get("BENCH_POP_INSPECTORS")
    if named:
        return [n.strip() for n in named.split(",") if n.strip()]
    field = ("tabor", "k_arm")  # not bti_dbf: it needs the layers of an eager module, the files are TorchScript
    return [*INSPECTORS, *(n for n in field if n in DEFENSES and n not in INSPECTORS)]


def presets() -> list[str]:
    """The scan presets measured: ``BENCH_POP_PRESETS`` (default ``default,verdicts``), the first one the headline."""
    named = os.environ.get("BENCH_POP_PRESETS", "default,verdicts")
    return [n.strip() for n in named.split(",") if n.strip()]


def build_and_scan(cfg, out: Path, name: str, n: int, seed: int, names: list[str], preset: str) -> list[dict]:
    """Write the population ``name`` (n per role; reused when it exists) and scan it with ``preset``; rows without
    errors, with their info.json."""
    device = os.environ.get("BENCH_DEVICE", "auto")
    folder = out / name
    infos = write_population(cfg, folder, n=n, seed=seed, formats=["torchscript"], device=device, progress=False)
    data = cfg.datasets[0]
    csv_path = out / f"{name}-{preset}.csv"
    rows = scan_population(
        folder, csv_path, data=data.name, data_dir=data.data_dir, inspectors=names, device=device, preset=preset
    )
    by_id = {i["id"]: i for i in infos}
    good = [r | {"info": by_id[r["id"]]} for r in rows if r["verdict"] != "error"]
    if len(good) < len(rows):
        print(f"{name}: {len(rows) - len(good)} models failed to scan (see {csv_path})")
    return good


def method_scores(rows: list[dict], method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(score, p-value, top label, seconds) per row for an inspector, or for ``scan`` from the scan's inspectors."""
    if method != "scan":
        cols = [f"{method}_{c}" for c in ("score", "p_value", "top_label", "seconds")]
        return tuple(np.array([float(r[c]) for r in rows]) for c in cols)  # type: ignore[return-value]
    p = np.array([[float(r[f"{n}_p_value"]) for n in INSPECTORS] for r in rows])
    shares = list(alpha_shares(INSPECTORS, SCAN_WEIGHTS).values())
    score = np.array([scan_score(list(ps), shares) for ps in p])
    first = p.argmin(axis=1)
    top = np.array([float(r[f"{INSPECTORS[j]}_top_label"]) for r, j in zip(rows, first, strict=True)])
    seconds = np.array([sum(float(r[f"{n}_seconds"]) for n in INSPECTORS) for r in rows])
    return score, np.array([combine_p_values(list(ps), shares) for ps in p]), top, seconds


def truth(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(trojaned 0/1, target or -1) per row."""
    targets = [-1 if r["target"] == "" else int(r["target"]) for r in rows]
    return np.array([int(r["trojaned"]) for r in rows]), np.array(targets)


def bootstrap_auc(y: np.ndarray, s: np.ndarray, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the ROC-AUC, resampling clean and trojaned models separately."""
    rng = np.random.default_rng(seed)
    neg, pos = s[y == 0], s[y == 1]
    aucs = [
        roc_auc(torch.from_numpy(rng.choice(neg, len(neg))), torch.from_numpy(rng.choice(pos, len(pos))))
        for _ in range(rounds)
    ]
    return float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))


def calibrated(cal_scores: np.ndarray, cal_y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """P(trojaned) of ``scores`` from a logistic regression fitted on the calibration population only."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression().fit(cal_scores[:, None], cal_y)
    return fit.predict_proba(scores[:, None])[:, 1]


def figures(method: str, rows: list[dict], calibration: list[dict]) -> dict[str, float]:
    score, p, top, seconds = method_scores(rows, method)
    y, target = truth(rows)
    det = model_detection_metrics(score[y == 0], score[y == 1])
    prob = np.clip(calibrated(method_scores(calibration, method)[0], truth(calibration)[0], score), EPS, 1 - EPS)
    return {
        **det,
        "auc_ci": bootstrap_auc(y, score),
        "fpr_alpha": float((p[y == 0] <= ALPHA).mean()),
        "tpr_alpha": float((p[y == 1] <= ALPHA).mean()),
        "target_acc": float((top[y == 1] == target[y == 1]).mean()),
        "seconds": float(seconds.mean()),
        "cross_entropy": float(-(y * np.log(prob) + (1 - y) * np.log(1 - prob)).mean()),
        "brier": float(((prob - y) ** 2).mean()),
        "curve": (score[y == 0], score[y == 1]),
    }


def plot_roc(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for method, f in results.items():
        neg, pos = f["curve"]
        fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
        ax.plot(fpr, tpr, label=f"{method} (AUC {f['roc_auc']:.2f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false-positive rate (clean models)", ylabel="true-positive rate (trojaned models)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def describe_population(rows: list[dict]) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        info = r["info"]
        groups.setdefault((info["architecture"], info["trigger_type"] or "clean"), []).append(info)
    print_table(
        ["architecture", "trigger", "models", "clean acc", "ASR (min)", "ASR (mean)"],
        [
            [
                arch,
                kind,
                len(g),
                f"{np.mean([i['clean_accuracy'] for i in g]):.3f}",
                f"{min(i['asr'] for i in g):.3f}" if kind != "clean" else "-",
                f"{np.mean([i['asr'] for i in g]):.3f}" if kind != "clean" else "-",
            ]
            for (arch, kind), g in sorted(groups.items())
        ],
    )


def print_results(results: dict[str, dict]) -> None:
    print_table(
        ["method", "ROC-AUC [95% CI]", "PR-AUC", "FPR@95TPR", "FPR@a", "TPR@a", "target acc", "s/model", "CE", "Brier"],
        [
            [
                m,
                f"{f['roc_auc']:.3f} [{f['auc_ci'][0]:.2f}, {f['auc_ci'][1]:.2f}]",
                f"{f['pr_auc']:.3f}",
                f"{f['fpr_at_95pct_tpr']:.3f}",
                f"{f['fpr_alpha']:.3f}",
                f"{f['tpr_alpha']:.3f}",
                f"{f['target_acc']:.3f}",
                f"{f['seconds']:.1f}",
                f"{f['cross_entropy']:.3f}",
                f"{f['brier']:.3f}",
            ]
            for m, f in results.items()
        ],
    )


def speed_checks(by_preset: dict[str, dict[str, dict]]) -> list[list]:
    """The scan's speed-up of the first preset over ``verdicts`` (seconds per model of the scan's inspectors, the
    same models in this run) and its ROC-AUC against the ``verdicts`` bootstrap interval."""
    first, *_ = by_preset
    if first == "verdicts" or "verdicts" not in by_preset:
        return []
    fast, slow = by_preset[first]["scan"], by_preset["verdicts"]["scan"]
    speedup = slow["seconds"] / fast["seconds"]
    low = slow["auc_ci"][0]
    print(
        f"\nscan with --preset {first}: {fast['seconds']:.1f} s per model, ROC-AUC {fast['roc_auc']:.3f}; "
        f"--preset verdicts: {slow['seconds']:.1f} s, ROC-AUC {slow['roc_auc']:.3f} "
        f"[{slow['auc_ci'][0]:.2f}, {slow['auc_ci'][1]:.2f}]; speed-up {speedup:.2f}x"
    )
    return [
        check(f"scan speed-up, {first} vs verdicts", speedup, ">= 3", speedup >= 3),
        check(f"scan ROC-AUC ({first}) in verdicts' CI", fast["roc_auc"], f">= {low:.3f}", fast["roc_auc"] >= low),
    ]


COLOUR_FILE = Path("runs/data/gtsrb10.npz")  # the colour population's data, a benchmark fixture


def write_colour_file(path: Path = COLOUR_FILE) -> None:
    """GTSRB-10 (bench_attacks' colour set: 3,000 train and 2,000 test images of GTSRB's 10 most frequent classes)
    as an ``.npz`` with ``x_train, y_train, x_test, y_test, classes`` (uint8 NHWC), for ``npz:`` configs."""
    from backdoorlab.data import load_dataset

    from .common import COLOUR_FILE as SOURCE
    from .common import frequent_classes

    ds = frequent_classes(load_dataset(f"npz:{SOURCE}"), 10, (3000, 500, 2000))
    as_bytes = lambda x: (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        x_train=as_bytes(ds.train.x),
        y_train=ds.train.y.numpy(),
        x_test=as_bytes(ds.test.x),
        y_test=ds.test.y.numpy(),
        classes=np.array(ds.classes),
    )


def main() -> bool:
    start = time.perf_counter()
    config_path = Path(os.environ.get("BENCH_POP_CONFIG", ROOT / "configs" / "digits-tdc-population.yaml"))
    if str(COLOUR_FILE) in config_path.read_text() and not COLOUR_FILE.exists():
        write_colour_file()
    cfg = load_config(config_path)
    out = Path(os.environ.get("BENCH_POP_OUT", "runs/bench-population"))
    names = inspectors()
    calib_n, scored_n = int(os.environ.get("BENCH_POP_CALIB_N", 10)), int(os.environ.get("BENCH_POP_N", 20))
    by_preset: dict[str, dict[str, dict]] = {}
    for preset in presets():
        calibration = build_and_scan(cfg, out, "calibration", calib_n, 1, names, preset)
        scored = build_and_scan(cfg, out, "scored", scored_n, 2, names, preset)
        if not by_preset:
            describe_population(scored)
        print(f"\n--preset {preset}")
        by_preset[preset] = {m: figures(m, scored, calibration) for m in [*names, "scan"]}
        print_results(by_preset[preset])
    first = next(iter(by_preset))
    results = by_preset[first]
    plot_roc(results, out / "roc.png")
    n_clean = sum(int(r["trojaned"]) == 0 for r in scored)
    print(
        f"\nscored: {n_clean} clean + {len(scored) - n_clean} trojaned; calibration: {len(calibration)} models; "
        f"alpha {ALPHA}; ROC curves (--preset {first}): {out / 'roc.png'}; {time.perf_counter() - start:.0f} s"
    )
    scan = results["scan"]
    checks = [
        check("scan ROC-AUC", scan["roc_auc"], ">= 0.90", scan["roc_auc"] >= 0.90),
        check("scan clean models flagged at alpha", scan["fpr_alpha"], "<= 0.10", scan["fpr_alpha"] <= 0.10),
        *speed_checks(by_preset),
    ]
    print()
    print_table(["figure", "value", "target", "status"], checks)
    return all(c[-1] == "ok" for c in checks) and not math.isnan(scan["roc_auc"])
