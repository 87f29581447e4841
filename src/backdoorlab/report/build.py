"""Assemble the report of one run from the results store and the cells' saved artifacts.

:func:`write_run_report` is the entry point (``backdoorlab run`` calls it after the run, ``backdoorlab report RUN``
alone): everything comes from the results store (the rows, the config, each setting's dataset summary and class
names, the code fingerprint, the run's times) and the cells' artifacts; no dataset is loaded and no model built.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..experiments.artifacts import artifact_path, load_artifacts
from ..experiments.config import ExperimentConfig, parse_config
from ..experiments.evaluation import DefenseOutcome
from ..experiments.grid import Cell, expand_cells
from ..experiments.store import CellFailure, ResultRow, RunCode, SettingInfo, open_store
from ..stealth import STEALTH_IMAGES
from ..utils.files import write_atomic
from .findings import findings_sections
from .inspection import population_section, populations_from_records
from .leaderboard_comparison import leaderboard_section
from .plots import ExampleSet, examples_figure
from .render import Section, write_report
from .section_fine_pruning import table1_section
from .sections import defense_sections
from .tables import (
    Table,
    detection_table,
    group_values,
    main_table,
    matrix_table,
    other_metrics_table,
    seeds_of,
    stealth_table,
)

if TYPE_CHECKING:
    from sqlalchemy import URL


@dataclass(frozen=True)
class DefenseRecord:
    """One evaluated (model, defense) or (model, study) cell, as the method-specific report sections receive it:
    ``method`` is the defense's or the study's registered name, ``defense`` its label."""

    attack: str
    defense: str
    method: str
    seed: int
    outcome: DefenseOutcome
    dataset: str = ""
    model: str = ""


def headline(rows: Sequence[ResultRow]) -> str:
    """One clause per attack: its ASR and clean accuracy (means over seeds)."""
    parts = []
    for (_, _, attack, defense), metrics in group_values(rows).items():
        if attack == "none" or defense != "none":
            continue
        ca = sum(metrics["clean_accuracy"]) / len(metrics["clean_accuracy"])
        if "asr" in metrics:
            asr = sum(metrics["asr"]) / len(metrics["asr"])
            parts.append(f"{attack}: ASR {asr:.1%} at clean accuracy {ca:.1%}")
        else:
            parts.append(f"{attack}: clean accuracy {ca:.1%}")
    return "; ".join(parts) + "." if parts else "No attack was run."


def write_tables(directory: Path, rows: Sequence[ResultRow]) -> None:
    """``results.csv`` and ``results.json``: every row of the run."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "dataset", "model", "attack", "defense", "seed", "metric", "value"])
    writer.writerows([[r.run, r.dataset, r.model, r.attack, r.defense, r.seed, r.metric, r.value] for r in rows])
    write_atomic(directory / "results.csv", buffer.getvalue())
    write_atomic(directory / "results.json", json.dumps([asdict(r) for r in rows], indent=1))


def _examples(directory: Path, cells: Sequence[Cell], first_seed: int) -> list[tuple[str, ExampleSet]]:
    out = []
    for cell in cells:
        if cell.kind != "attack" or cell.seed != first_seed:
            continue
        ex = load_artifacts(artifact_path(directory, cell.id)).get("examples")
        if ex:
            label = f"{cell.attack} ({cell.dataset}, {cell.model})"
            out.append(
                (
                    cell.dataset,
                    ExampleSet(
                        label,
                        ex["clean"],
                        ex["clean_pred"].tolist(),
                        ex["triggered"],
                        ex["triggered_pred"].tolist(),
                        ex["true"].tolist(),
                        ex["targets"].tolist(),
                    ),
                )
            )
    return out


def _defense_records(directory: Path, cells: Sequence[Cell], cfg: ExperimentConfig, rows: Sequence[ResultRow]):
    methods = {label: d.name for label, d in [*cfg.build_defenses(), *cfg.build_studies()]}
    metrics: dict[tuple, dict[str, float]] = {}
    for r in rows:
        metrics.setdefault((r.model, r.attack, r.defense, r.seed), {})[r.metric] = r.value
    records = []
    for cell in cells:
        if cell.kind not in ("defense", "study"):
            continue
        m = metrics.get((cell.model, cell.attack, cell.defense, cell.seed))
        if m is None:
            continue
        outcome = DefenseOutcome(m, load_artifacts(artifact_path(directory, cell.id)))
        records.append(
            DefenseRecord(
                cell.attack,
                cell.defense,
                methods.get(cell.defense, cell.defense),
                cell.seed,
                outcome,
                cell.dataset,
                cell.model,
            )
        )
    return records


def _timing_table(rows: Sequence[ResultRow], stage_seconds: dict[str, float]) -> Table:
    body = [[f"stage: {stage}", f"{secs:.1f}"] for stage, secs in stage_seconds.items()]
    per_method: dict[str, list[float]] = {}
    for r in rows:
        if r.metric == "seconds":
            key = (
                f"defense {r.defense}"
                if r.defense != "none"
                else ("clean model" if r.attack == "none" else f"attack {r.attack}")
            )
            per_method.setdefault(key, []).append(r.value)
    body += [[f"{k} (mean per cell)", f"{sum(v) / len(v):.1f}"] for k, v in per_method.items()]
    return Table(["what", "seconds"], body)


def build_run_report(
    directory: Path,
    run: str,
    cfg: ExperimentConfig,
    settings: Sequence[SettingInfo],
    rows: Sequence[ResultRow],
    cells: Sequence[Cell],
    seconds: float,
    stage_seconds: dict[str, float],
    code: RunCode | None = None,
    failures: Sequence[CellFailure] = (),
) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html``, ``results.csv``, ``results.json`` and the figures into ``directory``.

    ``settings``: what the store recorded of each (dataset, model) setting (empty for a run recorded before it
    did: the datasets are then named only); ``code``: the code that computed the run, when recorded;
    ``failures``: the cells that failed or were skipped (listed in a section of their own).
    """
    directory.mkdir(parents=True, exist_ok=True)
    sections = [*findings_sections(rows), _setting_section(cfg, settings, rows, seconds, code)]
    if failures:
        sections.append(_failures_section(failures))
    matrix = matrix_table(rows)
    if cfg.defenses and matrix.rows:
        sections.append(
            Section(
                "Attack × defense matrix",
                paragraphs=[
                    "Clean accuracy / attack success rate on the test split after each defense, in %, mean over "
                    "seeds. Repairs change the model; 'none' is the undefended model. Repair cells add BackdoorBench's "
                    "defense effectiveness rate, DER = [max(0, ΔASR) − max(0, ΔCA) + 1] / 2 in %, and are coloured by "
                    "it: red at 50 and below (no better than doing nothing), green at 100 (ASR gone, no accuracy lost)."
                ],
                tables=[matrix],
            )
        )
    leaderboard = leaderboard_section(cfg, settings, rows)
    sections += [leaderboard] if leaderboard is not None else []
    sections.append(
        Section(
            "Clean accuracy and attack success rate",
            paragraphs=[
                "All figures on the test split, in %, mean ± 95% CI over seeds (no ± with one seed). "
                "ASR counts triggered test inputs classified as the attacker's target; inputs whose true label is "
                "already the target are excluded. Robust accuracy: triggered inputs still given their true label."
            ],
            tables=[main_table(rows)],
        )
    )
    detection = detection_table(rows)
    if detection.rows:
        sections.append(
            Section(
                "Input detectors",
                paragraphs=[
                    "Thresholds chosen on the clean val split only. Detection rate on triggered test inputs; "
                    "false positives on clean test inputs; ROC-AUC and PR-AUC with triggered inputs as positives. "
                    "TPR at 1% / 5% FPR: the detection rate at the threshold that flags that share of the clean test "
                    "inputs (a point of the ROC curve, not the calibrated threshold)."
                ],
                tables=[detection],
            )
        )
    others = other_metrics_table(rows)
    if others.rows:
        sections.append(Section("Other defense figures", paragraphs=["Mean over seeds."], tables=[others]))
    if any(study.name == "fine_pruning_table1" for _, study in cfg.build_studies()):
        table1 = table1_section(
            rows,
            [(label, a.name) for label, a in cfg.build_attacks()],
            [(label, d.name) for label, d in cfg.build_defenses()],
        )
        sections += [table1] if table1 is not None else []
    records = _defense_records(directory, cells, cfg, rows)
    sections += defense_sections(records, directory)
    if cfg.population is not None or len(cfg.seeds) >= 3:  # model-level rates mean little over fewer models
        sections += [
            population_section(p, directory, f"population_{i}") for i, p in enumerate(populations_from_records(records))
        ]
    examples = _examples(directory, cells, min(cfg.seeds))
    if examples:
        fig = directory / "examples.png"
        names = list(settings[0].classes) if settings and len({d for d, _ in examples}) == 1 else None
        examples_figure([e for _, e in examples], fig, names)
        sections.append(Section("Example images", figures=[fig]))
    stealth = stealth_table(rows)
    if stealth.rows:
        sections.append(
            Section(
                "Trigger stealth",
                paragraphs=[
                    f"Triggered against clean test inputs (the first {STEALTH_IMAGES} whose label differs from the "
                    "trigger's target, pixels in [0, 1]): PSNR in dB and SSIM (scikit-image; higher is stealthier), "
                    "L∞ and L2 distances (lower is stealthier); mean ± 95% CI over seeds."
                ],
                tables=[stealth],
            )
        )
    sections.append(Section("Run times", tables=[_timing_table(rows, stage_seconds)]))
    write_tables(directory, rows)
    return write_report(directory, f"backdoorlab run {run}", headline(rows), sections)


def _setting_section(
    cfg: ExperimentConfig,
    settings: Sequence[SettingInfo],
    rows: Sequence[ResultRow],
    seconds: float,
    code: RunCode | None,
) -> Section:
    if settings:
        described = [f"{s.summary}; model {s.model}" for s in settings]
    else:  # recorded before the store kept the settings
        described = [f"{d.name}; model {m}" for d in cfg.datasets for m in cfg.models]
    t = cfg.training
    attacks = "; ".join(
        f"{s.display} = {s.name} {s.params}{' sweep ' + str(s.sweep) if s.sweep else ''}" for s in cfg.attacks
    )
    paragraphs = [
        "; ".join(described) + ".",
        f"Training: {t.optimizer} lr {t.lr}, {t.epochs} epochs, batch {t.batch_size}, schedule {t.schedule}, "
        f"random shift {t.augment_shift} px{', left-right flip' if t.augment_flip else ''}. "
        f"Seeds {seeds_of(rows)}. Wall time {seconds:.0f} s.",
        f"Attacks: {attacks or 'none'}.",
        "Defenses: " + ("; ".join(f"{s.display} = {s.name} {s.params}" for s in cfg.defenses) or "none") + ".",
    ]
    if cfg.studies:
        paragraphs.append("Studies: " + "; ".join(f"{s.display} = {s.name} {s.params}" for s in cfg.studies) + ".")
    paragraphs.append(f"Code: {describe_code(code)}.")
    return Section("Setting", paragraphs=paragraphs)


def _failures_section(failures: Sequence[CellFailure]) -> Section:
    body = [[f.cell, f.status, f.error, f.traceback_file or ""] for f in failures]
    failed = sum(f.status == "failed" for f in failures)
    text = (
        f"{failed} cell(s) raised an error and {len(failures) - failed} were skipped because a cell they depend on "
        "failed; they have no rows in this report. Tracebacks are in the run folder; rerun the same command to retry."
    )
    return Section("Failed cells", paragraphs=[text], tables=[Table(["cell", "status", "error", "traceback"], body)])


def describe_code(code: RunCode | None) -> str:
    """``backdoorlab 0.1.0, model sources sha256 3f2a9c01d4e5, git commit 20258fb1c0de`` (what was recorded)."""
    if code is None or code.source_hash is None:
        return "not recorded (a run stored before runs recorded their code)"
    text = f"backdoorlab {code.version}, model sources sha256 {code.source_hash[:12]}"
    return text + (f", git commit {code.commit[:12]}" if code.commit else ", not run from a git checkout")


def write_run_report(
    run: str, output_dir: str | Path = "runs", store: str | Path | URL | None = None
) -> tuple[Path, Path]:
    """Write the report of ``run`` from the results store (``store``: a URL or SQLite path; default
    ``output_dir/results.sqlite``) into ``output_dir/run``; (report.md, report.html). The cells' figures come from
    the run folder when it is there (a run computed on another machine gives the tables without them). Raises
    ConfigError when there is no database or no such run."""
    with open_store(store, output_dir) as db:
        config = db.run_config(run)
        if config is None:
            names = ", ".join(r for r, _, _ in db.runs()[:10]) or "(none)"
            raise ConfigError(f"no run named {run!r} in {db}; runs: {names}")
        rows, settings, code = db.rows(run), db.settings(run), db.run_code(run)
        failures = db.failures(run)
        seconds, stage_seconds = db.run_times(run)
        if seconds is None:
            seconds = sum(db.finished_cells(run).values())
    cfg = parse_config(config, f"config of run {run}")
    cells = expand_cells(cfg)
    return build_run_report(
        Path(output_dir) / run, run, cfg, settings, rows, cells, seconds, stage_seconds, code, failures
    )
