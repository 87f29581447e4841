"""`backdoorlab scan-population FOLDER`: the scan of :mod:`.scan` over every model of a population folder (TDC or
TrojAI layout, :mod:`.model_folders`), one CSV row per model.

Columns: ``id``, ``layout``, ``format``, ``verdict`` (``backdoor``, ``clean`` or ``error``), ``score`` (the
scan's model score, ``-log10`` of the weighted Bonferroni combination ``min p_i / share_i`` before it is capped at
1, so higher is
more suspicious and clean models do not all tie), ``p_value`` (the scan's), ``null`` (the law of the p-values:
``normal``, or ``reference`` with ``references``), ``preset`` (the inspectors' settings, :mod:`.presets`),
``flagged_labels`` (``;``-separated,
most anomalous first), ``top_label`` (the most suspicious label of the inspector with the smallest p-value, the
predicted target even when nothing is flagged), ``seconds``, the ground truth ``trojaned`` (1/0) and ``target``
when the layout has it (else empty), ``error``; then per inspector ``<name>_score`` (its verdict's model score),
``<name>_p_value``, ``<name>_top_label``, ``<name>_flagged`` and ``<name>_seconds``.

The clean samples are ``data`` (a dataset name, an ``.npz`` or an image folder, as ``scan --data``) or, without
it, each model's own clean example images (TrojAI). The CSV is rewritten whole (atomically) after each model, so
a killed scan leaves a valid CSV of the models done, and a rerun with the same output skips them. A model that
fails to load or scan gets an ``error`` row, except the first one: its error ends the scan before anything is
written (a wrong option fails once, not once per model).

With ``references`` (the files of ``R >= 2`` clean models of the same task, which needs ``data``), every model is
decided under the reference null; the reference models are inspected once, during the first model's scan (whose
``seconds`` count them), and their :class:`~.scan.ReferenceSet` is reused for every later model.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..defenses.inspection.null import uncapped_combination
from ..errors import BackdoorlabError, ConfigError
from ..models.loading import detect_format
from ..utils.files import write_atomic
from ..utils.progress import track
from .model_folders import ModelEntry, find_models
from .presets import DEFAULT_PRESET, check_preset
from .scan import DEFAULT_ALPHA, INSPECTORS, ReferenceSet, ScanResult, check_reference_count, scan_model

Log = Callable[[str], None]
BASE_COLUMNS = (
    "id",
    "layout",
    "format",
    "verdict",
    "score",
    "p_value",
    "null",
    "preset",
    "flagged_labels",
    "top_label",
    "seconds",
    "trojaned",
    "target",
    "error",
)
PER_INSPECTOR = ("score", "p_value", "top_label", "flagged", "seconds")
PICKLE_WARNING = (
    "warning: --trust-pickle: {count} model file(s) are whole pickled modules; unpickling runs any code they "
    "hold, so do this only for files from a source you trust"
)


def columns(inspectors: Sequence[str]) -> list[str]:
    """The CSV header for ``inspectors``."""
    return [*BASE_COLUMNS, *(f"{name}_{c}" for name in inspectors for c in PER_INSPECTOR)]


def scan_score(p_values: Sequence[float], shares: Sequence[float] | None = None) -> float:
    """``-log10(min_i p_i / share_i)`` over the inspectors' p-values and shares of alpha (None: equal shares), not
    capped (p = 0 counts as 1e-300)."""
    return -math.log10(max(uncapped_combination(p_values, shares), 1e-300))


def _truth(entry: ModelEntry) -> dict[str, Any]:
    trojaned = "" if entry.trojaned is None else int(entry.trojaned)
    return {"trojaned": trojaned, "target": "" if entry.target is None else entry.target}


def result_row(entry: ModelEntry, result: ScanResult) -> dict[str, Any]:
    """The CSV row of one scanned model."""
    verdicts = result.verdicts
    first = min(verdicts, key=lambda name: verdicts[name].p_value)
    row: dict[str, Any] = {
        "id": entry.id,
        "layout": entry.layout,
        "format": result.loaded.format,
        "verdict": "backdoor" if result.infected else "clean",
        "score": round(scan_score([v.p_value for v in verdicts.values()], result.share_list), 6),
        "p_value": f"{result.p_value:.6g}",
        "null": result.null,
        "preset": result.preset,
        "flagged_labels": ";".join(map(str, result.suspected)),
        "top_label": verdicts[first].ranking[0],
        "seconds": round(result.seconds, 3),
        **_truth(entry),
        "error": "",
    }
    for name, v in verdicts.items():
        row |= {
            f"{name}_score": round(v.score, 6),
            f"{name}_p_value": f"{v.p_value:.6g}",
            f"{name}_top_label": v.ranking[0],
            f"{name}_flagged": ";".join(map(str, v.suspected)),
            f"{name}_seconds": round(v.seconds, 3),
        }
    return row


def _error_row(entry: ModelEntry, err: BaseException) -> dict[str, Any]:
    return {"id": entry.id, "layout": entry.layout, "verdict": "error", **_truth(entry), "error": str(err)}


def write_rows(path: Path, header: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """The whole CSV, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV this module wrote."""
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _done(output: Path, header: list[str], null: str, preset: str) -> dict[str, dict[str, Any]]:
    """Rows of a previous scan to keep (errors are retried); ConfigError when it had other columns, decided
    under another ``null`` or ran another ``preset``."""
    if not output.is_file():
        return {}
    with output.open(newline="", encoding="utf-8") as f:
        found = next(csv.reader(f), [])
    if found != header:
        raise ConfigError(f"{output} holds a scan with other columns (other inspectors?); choose another -o")
    done = {r["id"]: r for r in read_rows(output) if r["verdict"] != "error"}
    other = next((r["null"] for r in done.values() if r["null"] != null), None)
    if other is not None:
        raise ConfigError(f"{output} holds a scan under the {other} null, not the {null} null; choose another -o")
    other = next((r["preset"] for r in done.values() if r["preset"] != preset), None)
    if other is not None:
        raise ConfigError(f"{output} holds a scan with --preset {other}, not {preset}; choose another -o")
    return done


def scan_population(
    root: str | Path,
    output: str | Path,
    *,
    data: str | None = None,
    inspectors: Sequence[str] = INSPECTORS,
    alpha: float = DEFAULT_ALPHA,
    trust_pickle: bool = False,
    seed: int = 0,
    device: str = "auto",
    progress: bool | None = None,
    log: Log | None = None,
    warn: Log | None = None,
    references: Sequence[str | Path] = (),
    preset: str = DEFAULT_PRESET,
    **scan_options: Any,
) -> list[dict[str, Any]]:
    """Scan every model under ``root`` into the CSV ``output`` (see the module docstring) and return the rows.

    ``scan_options`` go to :func:`~.scan.scan_model` (``input_shape``, ``mean``, ``std``, ``architecture``,
    ``num_classes``, ``data_dir``); ``warn`` receives the one warning line of ``trust_pickle``; ``references``:
    clean reference models for the reference null (inspected once, see the module docstring).
    """
    if references:
        check_reference_count(len(references))
        if data is None:
            raise ConfigError("--reference needs --data: the reference models are inspected once, on those samples")
    log = log or (lambda _msg: None)
    entries = find_models(root)
    missing = next((e for e in entries if data is None and e.examples is None), None)
    if missing is not None:
        raise ConfigError(f"{missing.folder} has no clean example images ({missing.id}): pass --data")
    pickles = sum(detect_format(e.model_file) == "pickle" for e in entries)
    if trust_pickle and pickles:
        (warn or log)(PICKLE_WARNING.format(count=pickles))
    out = Path(output)
    header = columns(inspectors)
    check_preset(preset)  # an unknown preset fails before any work
    done = _done(out, header, "reference" if references else "normal", preset)
    reference: Sequence[str | Path] | ReferenceSet = tuple(references)
    rows: list[dict[str, Any]] = []
    for entry in track(entries, "scanning models", enabled=progress):
        if entry.id in done:
            rows.append(done[entry.id])
            continue
        try:
            result = scan_model(
                entry.model_file,
                data if data is not None else str(entry.examples),
                trust_pickle=trust_pickle,
                inspectors=inspectors,
                seed=seed,
                device=device,
                progress=False,
                alpha=alpha,
                references=reference,
                preset=preset,
                **scan_options,
            )
            reference = result.references or reference  # inspected once, reused for every later model
            row = result_row(entry, result)
        except BackdoorlabError as err:
            if not rows and not done:
                raise
            row = _error_row(entry, err)
        rows.append(row)
        write_rows(out, header, rows)
        log(f"  {entry.id}: {row['verdict']} (score {row.get('score', '-')}, {row.get('seconds', '-')} s)")
    return rows
