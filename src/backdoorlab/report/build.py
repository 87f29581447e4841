"""Assemble the report of one run from its rows and example images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data import Dataset
from ..experiments.config import ExperimentConfig
from ..experiments.store import ResultRow
from .plots import ExampleSet, examples_figure
from .render import Section, write_report
from .sections import defense_sections
from .tables import detection_table, group_values, main_table, seeds_of


def headline(rows: Sequence[ResultRow]) -> str:
    """One sentence per attack: its ASR and clean accuracy (means over seeds)."""
    parts = []
    groups = group_values(rows)
    for (_, _, attack, defense), metrics in groups.items():
        if attack == "none" or defense != "none" or "asr" not in metrics:
            continue
        asr = sum(metrics["asr"]) / len(metrics["asr"])
        ca = sum(metrics["clean_accuracy"]) / len(metrics["clean_accuracy"])
        parts.append(f"{attack}: ASR {asr:.1%} at clean accuracy {ca:.1%}")
    return "; ".join(parts) + "." if parts else "No attack was run."


def build_run_report(directory: Path, run: str, cfg: ExperimentConfig, dataset: Dataset, rows: Sequence[ResultRow],
                     examples: list[ExampleSet], seconds: float,
                     outcomes: Sequence = ()) -> tuple[Path, Path]:  # fmt: skip
    """Write the figure, ``report.md`` and ``report.html`` into ``directory``."""
    c, h, w = dataset.input_shape
    seeds = seeds_of(rows)
    setting = Section(
        "Setting",
        paragraphs=[
            f"Dataset {dataset.name}: {dataset.num_classes} classes, {c}x{h}x{w}, train {len(dataset.train)} / "
            f"val {len(dataset.val)} / test {len(dataset.test)}. Model {cfg.model}; training "
            f"{cfg.training.optimizer} lr {cfg.training.lr}, {cfg.training.epochs} epochs, batch "
            f"{cfg.training.batch_size}. Seeds {seeds}. Wall time {seconds:.0f} s.",
            "Attacks: " + "; ".join(f"{s.display} = {s.name} {s.params}" for s in cfg.attacks) + ".",
            "Defenses: " + ("; ".join(f"{s.display} = {s.name} {s.params}" for s in cfg.defenses) or "none") + ".",
        ],
    )
    results = Section(
        "Clean accuracy and attack success rate",
        paragraphs=[
            "All figures on the test split, in %, mean ± 95% CI over seeds (no ± with one seed). "
            "ASR counts triggered test inputs classified as the attacker's target; inputs whose true label is "
            "already the target are excluded. Robust accuracy: triggered inputs still given their true label."
        ],
        tables=[main_table(rows)],
    )
    sections = [setting, results]
    detection = detection_table(rows)
    if detection.rows:
        sections.append(Section(
            "Input detectors",
            paragraphs=["Thresholds chosen on the clean val split only. Detection rate on triggered test inputs; "
                        "false positives on clean test inputs; ROC-AUC with triggered inputs as positives."],
            tables=[detection],
        ))  # fmt: skip
    sections += defense_sections(outcomes, directory)
    if examples:
        fig = directory / "examples.png"
        examples_figure(examples, fig, list(dataset.classes))
        sections.append(Section("Example images", figures=[fig]))
    return write_report(directory, f"backdoorlab run {run}", headline(rows), sections)
