"""Report section of the study ``fs_adversarial`` (:mod:`backdoorlab.studies.fs_adversarial`): Feature Squeezing's
detection-rate table against adversarial examples.

The layout of the source's table (Xu et al., NDSS 2018, Table 4 as in ``reference/slides.txt``): one row per squeezer
configuration with its threshold, then the best attack-specific single squeezer (per attack, the best of the single
squeezers) and the joint detector; one column per attack (Next / LL split); the overall detection rate last, then
FPR and ROC-AUC. A second table says what each attack achieved: success rate, successful examples in the measured
half, mean distortion and time. Both are built from the stored metrics alone (means over seeds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..adversarial import COLUMN_ORDER, COLUMNS
from ..defenses.input_detectors.squeezers import BitDepth, Median, parse_squeezer
from .detectors import mean_metrics
from .render import Section
from .sections import SECTION_BUILDERS
from .tables import Table

_DETECTION = re.compile(r"detection_rate\[(.+)\]\[(.+)\]")
_THRESHOLD = re.compile(r"threshold\[(.+)\]")
NAN = float("nan")


def fraction(value: float, digits: int = 3) -> str:
    """``0.982``; ``–`` for NaN (no successful example to measure on)."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def describe_squeezer(name: str) -> tuple[str, str]:
    """(squeezer, parameters) as the source writes them: ``("Bit Depth", "1-bit")``, ``("Median Smoothing",
    "2x2")``, ``("Non-local Means", "13-3-2")``."""
    sq = parse_squeezer(name)
    if isinstance(sq, BitDepth):
        return "Bit Depth", f"{sq.bits}-bit"
    if isinstance(sq, Median):
        return "Median Smoothing", f"{sq.height}x{sq.width}"
    return "Non-local Means", f"{sq.search}-{sq.template}-{sq.strength:g}"


def table_layout(metrics: Mapping[str, float]) -> tuple[list[str], list[str]]:
    """(attack keys in the source's column order, configurations in stored order) found in ``metrics``."""
    attacks, configs = set(), []
    for key in metrics:
        if m := _DETECTION.fullmatch(key):
            attacks.add(m[2])
        elif (m := _THRESHOLD.fullmatch(key)) and m[1] not in configs:
            configs.append(m[1])
    ordered = [a for a in COLUMN_ORDER if a in attacks] + sorted(attacks - set(COLUMN_ORDER))
    return ordered, configs


def detection_rate_table(metrics: Mapping[str, float]) -> Table:
    """The source's table from one model's ``fs_adversarial`` metrics (or their means over seeds)."""
    nan = float("nan")
    attacks, configs = table_layout(metrics)
    singles = [c for c in configs if "+" not in c]
    body = []

    def row(squeezer: str, params: str, threshold: str, config: str | None, rates: list[float]) -> list[str]:
        tail = [
            metrics.get(f"{k}[{config}]", nan) if config else nan for k in ("overall_detection_rate", "fpr", "roc_auc")
        ]
        return [squeezer, params, threshold, *(fraction(r) for r in rates), *(fraction(t) for t in tail)]

    def rates(config: str) -> list[float]:
        return [metrics.get(f"detection_rate[{config}][{a}]", nan) for a in attacks]

    for config in singles:
        body.append(
            row(*describe_squeezer(config), fraction(metrics[f"threshold[{config}]"], 4), config, rates(config))
        )
    if singles:
        best = [
            max((r for r in col if not math.isnan(r)), default=nan) for col in zip(*map(rates, singles), strict=True)
        ]
        body.append(row("Best Attack-Specific Single Squeezer", "", "–", None, best))
    for config in (c for c in configs if "+" in c):
        params = ", ".join(describe_squeezer(s)[1] for s in config.split("+"))
        body.append(
            row(
                f"Best Joint Detection ({params})",
                "",
                fraction(metrics[f"threshold[{config}]"], 4),
                config,
                rates(config),
            )
        )
    headers = [
        "squeezer",
        "parameters",
        "threshold",
        *(COLUMNS.get(a, (a, ""))[0] for a in attacks),
        "overall detection rate",
        "FPR",
        "ROC-AUC",
    ]
    return Table(headers, body)


def attack_summary_table(metrics: Mapping[str, float]) -> Table:
    """Per attack: the attack run, success rate, successful examples in the measured half, mean L2 / L-infinity /
    L0 (share of changed values) of the successful ones, and attack time in seconds."""
    nan = float("nan")
    attacks, _ = table_layout(metrics)
    body = []
    for a in attacks:
        label, method = COLUMNS.get(a, (a, "?"))
        m = {
            k: metrics.get(f"{k}[{a}]", nan)
            for k in ("success_rate", "successful_test", "mean_l2", "mean_linf", "mean_l0", "attack_seconds")
        }
        count = "–" if math.isnan(m["successful_test"]) else f"{m['successful_test']:.0f}"
        body.append(
            [
                label,
                method,
                fraction(m["success_rate"]),
                count,
                fraction(m["mean_l2"], 2),
                fraction(m["mean_linf"], 3),
                fraction(m["mean_l0"], 3),
                fraction(m["attack_seconds"], 1),
            ]
        )
    return Table(
        [
            "attack",
            "method (registered name)",
            "success rate",
            "successful, measured half",
            "mean L2",
            "mean L∞",
            "mean L0 (share)",
            "seconds",
        ],
        body,
    )


@SECTION_BUILDERS.register("fs_adversarial")
def fs_adversarial_section(records: Sequence, directory: Path) -> Section | None:
    """The detection-rate table and the attack summary of every clean model ``fs_adversarial`` measured."""
    tables, paragraphs = [], []
    for setting, per_attack in mean_metrics(records).items():
        metrics = per_attack.get("none", {})
        if not any(_DETECTION.fullmatch(k) for k in metrics):
            continue
        paragraphs.append(
            f"{setting}: {metrics.get('attacked', NAN):.0f} correctly classified test inputs attacked, "
            f"{metrics.get('legitimate', NAN):.0f} legitimate test inputs; attacks took "
            f"{metrics.get('attack_seconds_total', NAN):.0f} s and scoring "
            f"{metrics.get('scoring_seconds', NAN):.0f} s."
        )
        tables += [detection_rate_table(metrics), attack_summary_table(metrics)]
    if not tables:
        return None
    return Section(
        "Feature Squeezing against adversarial examples",
        paragraphs=[
            "The protocol of Xu et al. (NDSS 2018): the first N correctly classified test inputs are attacked; the "
            "detection set (as many legitimate test inputs as adversarial examples, plus the adversarial examples, "
            "rounded to 256 levels) is split in two halves; each threshold is set at 5% FPR on the legitimate inputs "
            "of the first half only. Detection rates are on the successful adversarial examples of the second half "
            "(a targeted attack succeeds only when it hits its target); FPR on its legitimate inputs; ROC-AUC of "
            "legitimate vs successful adversarial examples. '–': no successful example to measure on. CW∞ Next/LL "
            "are a stand-in (min_eps_bim: targeted BIM at the smallest epsilon), because ART's CW∞ cannot run "
            "targeted; CW2 runs by projected gradient steps in pixel space (ART's ElasticNet with beta 0, the CW2 "
            "objective; solver 'projected'), because ART's tanh-space CarliniL2Method cannot move pixels that are "
            "exactly 0 or 1; CW0 is ART's CarliniL0Method, which on NCHW images leaves its examples nearly dense.",
            *paragraphs,
        ],
        tables=tables,
    )
