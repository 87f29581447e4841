"""The source's three application domains (faces, speech, traffic signs) and Fine-Pruning's Table 1 across them,
with STRIP and Neural Cleanse on the same models.

The paper (Liu, Dolan-Gavitt, Garg, RAID 2018) has one row per domain (Face Recognition, Speech Recognition,
Traffic Sign) and, under the baseline and the pruning-aware attack, the defenses None / Fine-Tuning /
Fine-Pruning, each with ``cl`` (clean accuracy) and ``bd`` (backdoor success = ASR). Each domain is one run of
``configs/table1-<domain>.yaml`` (which names the study ``fine_pruning_table1``); :class:`DomainResults` holds its
rows. This module holds what the study decides: the published reference figures, labelled with the confidence tag
of ``docs/methods.md`` (only numbers that file gives are used), our yardsticks, and :func:`findings`, which
state in words where an attack or a defense fails on a domain. ``report/table1.py`` lays the tables out.

Attack labels ``badnets`` and ``pruning_aware`` and defense labels ``fine_tuning``, ``fine_pruning``, ``strip``
and ``neural_cleanse`` are expected in the rows (the configs ``configs/table1-*.yaml`` use them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..metrics import mean_ci


class Row(Protocol):
    """A result row as the store gives it (:class:`~backdoorlab.experiments.store.ResultRow`)."""

    dataset: str
    model: str
    attack: str
    defense: str
    seed: int
    metric: str
    value: float


ATTACKS = (("Baseline", "badnets"), ("Pruning-aware", "pruning_aware"))
REPAIRS = (("None", "none"), ("Fine-Tuning", "fine_tuning"), ("Fine-Pruning", "fine_pruning"))
DOMAIN_TITLES = ("Face Recognition", "Speech Recognition", "Traffic Sign")

# Our yardsticks for the findings (not the papers'): a repair removes a backdoor when the mean ASR after it is
# below REMOVED_ASR and leaves it when the ASR stays at or above KEPT_ASR; it is costly when it loses more than
# COSTLY_DROP of clean accuracy (Fine-Pruning's own pruning threshold is 4 points); STRIP fails when its FAR at
# the FRR target exceeds STRIP_FAR (the paper claims < 1% overall); Neural Cleanse needs the target flagged in
# most seeds and the clean model unflagged in most.
REMOVED_ASR = 0.10
KEPT_ASR = 0.50
COSTLY_DROP = 0.04
STRIP_FAR = 0.05


@dataclass(frozen=True)
class DomainResults:
    """One domain's row: its title (e.g. ``Face Recognition``) and the result rows of its run (one dataset and
    model; every seed): :class:`~backdoorlab.experiments.store.ResultRow` objects, or anything with their fields."""

    title: str
    rows: Sequence[Row]

    def grouped(self) -> dict[tuple[str, str], dict[str, list[float]]]:
        """{(attack, defense): {metric: values over seeds}}, in first-seen order."""
        grouped: dict[tuple[str, str], dict[str, list[float]]] = {}
        for r in self.rows:
            grouped.setdefault((r.attack, r.defense), {}).setdefault(r.metric, []).append(r.value)
        return grouped

    @property
    def setting(self) -> str:
        """``dataset / model`` of the run ("–" without rows)."""
        pairs = dict.fromkeys((r.dataset, r.model) for r in self.rows)
        return ", ".join(f"{d} / {m}" for d, m in pairs) or "–"

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.rows})


@dataclass(frozen=True)
class PaperValue:
    """A published figure: its text as shown, where docs/methods.md has it, and its confidence tag there."""

    text: str
    tag: str


# Fine-Pruning Table 1 as the source gives it (reference/slides.txt, "Table 1. Classification accuracy on clean
# inputs (cl) and backdoor attack success rate (bd)"), in %. Keys: (domain, attack, defense); values: (cl, bd).
FP_TAG = "slides.txt Table 1 (Liu et al. 2018)"
_FP_SOURCE = {
    ("Face Recognition", "badnets"): ((97.8, 100.0), (97.8, 0.0), (97.8, 0.0)),
    ("Face Recognition", "pruning_aware"): ((97.4, 99.8), (97.8, 0.0), (97.7, 0.0)),
    ("Speech Recognition", "badnets"): ((99.0, 77.0), (99.0, 43.5), (98.8, 2.0)),
    ("Speech Recognition", "pruning_aware"): ((98.8, 78.0), (98.8, 52.0), (98.6, 0.0)),
    ("Traffic Sign", "badnets"): ((84.9, 99.1), (85.7, 92.1), (87.3, 28.8)),
    ("Traffic Sign", "pruning_aware"): ((82.0, 89.9), (87.2, 41.9), (87.4, 36.6)),
}
FP_PAPER = {
    (domain, attack, defense): PaperValue(f"{values[i][1]:.1f}", FP_TAG)
    for (domain, attack), values in _FP_SOURCE.items()
    for i, (_, defense) in enumerate(REPAIRS)
}
FP_PAPER_CL = {
    (domain, attack, defense): PaperValue(f"{values[i][0]:.1f}", FP_TAG)
    for (domain, attack), values in _FP_SOURCE.items()
    for i, (_, defense) in enumerate(REPAIRS)
}
FP_NOTE = (
    "Paper: YouTube Aligned Face / DeepID (sunglasses), Pannous spoken digits / AlexNet-like CNN (all-to-all "
    "i -> i+1), USTS / Faster-RCNN (yellow square, stop -> speed limit). The paper rows are the source's Table 1 "
    "(slides.txt): clean accuracy (cl) and attack success rate (bd) in %."
)
# STRIP Table 3 (docs/methods.md §6, [pdf]): GTSRB, trigger b (a logo), ResNet20, N = 100: FAR 0% at FRR 1%.
STRIP_PAPER = {
    ("Traffic Sign", "badnets", "far"): PaperValue(
        "0.0", "docs/methods.md §6 Table 3 [pdf]; GTSRB, trigger b, ResNet20, FRR 1%"
    )
}
# Neural Cleanse (docs/methods.md §9): GTSRB reference run 3.652 [code README: 4x4 white square, target 33];
# infected models > 3 and clean models < 2 [notes]; YouTube Face infected models flagged [notes].
NC_PAPER = {
    ("Traffic Sign", "badnets", "index"): PaperValue(
        "3.652", "docs/methods.md §9 [code]: README run, GTSRB 4x4 white, target 33"
    ),
    ("Traffic Sign", "none", "index"): PaperValue("< 2", "docs/methods.md §9 [notes]: clean models"),
    ("Face Recognition", "badnets", "index"): PaperValue("> 3", "docs/methods.md §9 [notes]: YouTube Face, DeepID"),
    ("Face Recognition", "none", "index"): PaperValue("< 2", "docs/methods.md §9 [notes]: clean models"),
}


def values_of(grouped: dict, attack: str, defense: str, metric: str) -> list[float]:
    return list(grouped.get((attack, defense), {}).get(metric, []))


def strip_far(grouped: dict, attack: str) -> list[float]:
    """STRIP's FAR per seed on ``attack``'s triggered test inputs: 1 - detection rate."""
    return [1.0 - v for v in values_of(grouped, attack, "strip", "tpr")]


def share(values: list[float]) -> str:
    """``k/n``: how many of the per-seed 0/1 values are 1."""
    return f"{int(round(sum(values)))}/{len(values)}" if values else "–"


def _mean(values: list[float]) -> float:
    return mean_ci(values)[0]


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def repair_findings(domain: DomainResults) -> list[str]:
    """Sentences on the attacks and the two repairs of one domain (thresholds: module constants)."""
    g, out = domain.grouped(), []
    for title, attack in ATTACKS:
        asr = values_of(g, attack, "none", "asr")
        if not asr:
            out.append(f"{domain.title}: no {title.lower()} attack in the results.")
            continue
        before_ca = _mean(values_of(g, attack, "none", "clean_accuracy"))
        for defense_title, defense in REPAIRS[1:]:
            after = values_of(g, attack, defense, "asr")
            if not after:
                continue
            asr_after, drop = _mean(after), before_ca - _mean(values_of(g, attack, defense, "clean_accuracy"))
            verdict = (
                "removes the backdoor"
                if asr_after < REMOVED_ASR
                else "fails: the backdoor stays"
                if asr_after >= KEPT_ASR
                else "only weakens the backdoor"
            )
            cost = f", at a cost of {drop * 100:.1f} points of clean accuracy" if drop > COSTLY_DROP else ""
            out.append(
                f"{domain.title}, {title.lower()} attack: {defense_title} {verdict} (ASR {_pct(_mean(asr))} "
                f"-> {_pct(asr_after)}){cost}."
            )
    return out


def detector_findings(domain: DomainResults) -> list[str]:
    """Sentences on STRIP and Neural Cleanse on one domain."""
    g, out = domain.grouped(), []
    for title, attack in ATTACKS:
        far = strip_far(g, attack)
        if far:
            ok = _mean(far) <= STRIP_FAR
            below = sum(v <= 0 for v in values_of(g, attack, "strip", "entropy_boundary"))
            why = (
                (
                    f"; in {below}/{len(far)} seeds the normal fit put its boundary at or below 0 bits, so it flagged "
                    "nothing"
                )
                if below
                else ""
            )
            auc = values_of(g, attack, "strip", "roc_auc")
            why += f"; entropy ROC-AUC {_pct(_mean(auc))}" if auc else ""
            out.append(
                f"{domain.title}, {title.lower()} attack: STRIP {'works' if ok else 'fails'} (FAR "
                f"{_pct(_mean(far))} at FRR {_pct(_mean(values_of(g, attack, 'strip', 'fpr')))} on test{why})."
            )
        flagged = values_of(g, attack, "neural_cleanse", "target_flagged")
        any_flag = values_of(g, attack, "neural_cleanse", "flagged")
        if flagged:
            ok = sum(flagged) > len(flagged) / 2
            first = share(values_of(g, attack, "neural_cleanse", "target_ranked_first"))
            out.append(
                f"{domain.title}, {title.lower()} attack: Neural Cleanse {'finds' if ok else 'fails to find'} "
                f"the target (flagged in {share(flagged)} seeds; its reversed trigger was the smallest in "
                f"{first})."
            )
        elif any_flag:
            out.append(
                f"{domain.title}, {title.lower()} attack: the backdoor has no single target (all-to-all), "
                f"which Neural Cleanse does not model; it flagged the model in {share(any_flag)} seeds."
            )
    clean = values_of(g, "none", "neural_cleanse", "flagged")
    if clean and sum(clean) > 0:
        out.append(f"{domain.title}: Neural Cleanse flags the clean model in {share(clean)} seeds (false alarm).")
    return out


def findings(results: Sequence[DomainResults]) -> list[str]:
    """Where each attack and defense works or fails, domain by domain, in words."""
    return [s for d in results for s in (*repair_findings(d), *detector_findings(d))]


AUDIO_NOT_APPLICABLE = (
    "Feature Squeezing: its median and non-local-means squeezers are 2-D image filters (a 1 x L waveform has no "
    "neighbourhood above or below; OpenCV's NL-means denoises photos), and it targets adversarial perturbations, "
    "not patch triggers; only bit-depth reduction (re-quantising samples) has an audio meaning.",
    "DeepInspect: its conditional generator and model inversion are built for image-shaped triggers and have no "
    "audio prior; not run.",
    "TrojanNet and Refool: their triggers are 4x4 pixel patterns and photographic reflections, images only.",
    "Neural Cleanse runs unchanged (the mask is a (1, 1, L) weight over samples), but its trigger model, a mask "
    "blended with a pattern, also admits clicks and broadband noise that move any clip; its mask L1 counts samples.",
    "STRIP and the pruning defenses apply unchanged: superimposing two recordings is mixing them (the front end "
    "removes the 0.5 offset), and the last conv layer of the speech CNN is pruned like an image CNN's.",
)
