"""`backdoorlab scan`: load an untrusted model safely, inspect it (Neural Cleanse, DeepInspect), calibrate
STRIP for run-time use, and decide.

The model is flagged at a stated false-alarm rate ``alpha`` (default 0.05) for the whole scan: each inspector
decides for the whole model at its share of ``alpha`` (weighted Bonferroni, :func:`~backdoorlab.defenses.
inspection.null.combine_p_values`), so the chance that a model without a backdoor is flagged by any of them is at
most ``alpha``. The scan's p-value is ``min(1, min_i p_i / share_i)``; the suspected targets are the union of the
inspectors' flagged labels, most anomalous first.

The shares (:data:`SCAN_WEIGHTS`): Neural Cleanse 4, every other inspector 1 (so 0.04 and 0.01 of the default
0.05 for the default pair). Our choice (issue 17), made on the development population of ``python -m benchmarks
calibration`` (``BENCH_POPULATION=dev``, never the scored one): there Neural Cleanse alone at 0.05 flagged 18 of
20 BadNets models and DeepInspect 5, with no clean model flagged by either; an even split (0.025 each) flagged 17,
the 4 : 1 split 18.

Each inspector's p-values come from the normal null (i.i.d. normal per-label statistics) unless ``references``
names ``R >= 2`` clean models the defender trained itself: then every inspector also inspects each of them (same
seed, same clean samples), and the model is decided under the reference null built from their statistics
(:class:`~backdoorlab.defenses.inspection.null.ReferenceNull`; R + 1 inspections per inspector).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.base import Split
from ..data.folders import CleanData, load_clean_data
from ..defenses.base import DEFENSES
from ..defenses.inspection.base import Inspector
from ..defenses.inspection.null import ReferenceNull, alpha_shares, apply_reference, combine_p_values
from ..errors import ConfigError
from ..models.loading import LoadedModel, load_model_file
from ..utils.files import write_atomic
from .presets import DEFAULT_PRESET, preset_params

INSPECTORS = ("neural_cleanse", "deepinspect")
SCAN_WEIGHTS = {"neural_cleanse": 4.0}  # weight 1 for every other inspector
MIN_CLEAN = 20
DEFAULT_ALPHA = 0.05
MIN_REFERENCES = 2


@dataclass(frozen=True)
class ReferenceSet:
    """Clean reference models, inspected once: per inspector, the :class:`ReferenceNull` of their statistics.

    ``files``: the R >= 2 model files; ``input_shape`` (C, H, W) and ``num_classes``: theirs, which every scanned
    model must share; ``nulls``: inspector name -> reference null; ``seconds``: wall time of the R x m
    inspections. Reuse one only for scans with the same inspectors, clean samples and seed."""

    files: tuple[str, ...]
    input_shape: tuple[int, ...]
    num_classes: int
    nulls: dict[str, ReferenceNull]
    seconds: float

    def check(self, loaded: LoadedModel, model: str, inspectors: Sequence[str]) -> None:
        """ConfigError unless the scanned ``loaded`` model shares the references' task and ``inspectors`` have nulls."""
        _check_same_task("the reference models", self.num_classes, self.input_shape, loaded, model)
        missing = [name for name in inspectors if name not in self.nulls]
        if missing:
            raise ConfigError(f"the reference models were not inspected by {', '.join(missing)}")


@dataclass
class ScanResult:
    """The scan's decision and evidence; ``verdicts`` maps inspector name to its Verdict."""

    model: str
    loaded: LoadedModel
    clean: CleanData
    verdicts: dict[str, Any]
    strip_threshold: float | None
    strip_details: dict[str, Any]
    seconds: float
    errors: dict[str, str] = field(default_factory=dict)
    alpha: float = DEFAULT_ALPHA
    references: ReferenceSet | None = None
    preset: str = DEFAULT_PRESET
    shares: dict[str, float] = field(default_factory=dict)  # each inspector's share of alpha (empty: equal)

    @property
    def null(self) -> str:
        """The law of the p-values: ``normal`` (i.i.d. normal statistics) or ``reference`` (clean models)."""
        return "normal" if self.references is None else "reference"

    @property
    def infected(self) -> bool:
        return any(v.infected for v in self.verdicts.values())

    @property
    def p_value(self) -> float:
        """The scan's p-value: weighted Bonferroni's combination of the inspectors' model-level p-values."""
        return combine_p_values([v.p_value for v in self.verdicts.values()], self.share_list)

    @property
    def share_list(self) -> list[float]:
        """Each inspector's share of alpha, in the order of ``verdicts`` (equal when ``shares`` is empty)."""
        shares = self.shares or alpha_shares(list(self.verdicts))
        return [shares[name] for name in self.verdicts]

    @property
    def suspected(self) -> list[int]:
        seen: list[int] = []
        for v in self.verdicts.values():
            seen += [label for label in v.suspected if label not in seen]
        return seen

    def sentence(self) -> str:
        names = ", ".join(self.verdicts)
        decided = f"p = {self.p_value:.2g}; false-alarm rate {self.alpha:g}"
        if self.references is not None:
            decided += f"; reference null, {len(self.references.files)} clean models"
        if self.infected:
            flagged = [n for n, v in self.verdicts.items() if v.infected]
            return (
                f"Backdoor suspected: {' and '.join(flagged)} flag label(s) {self.suspected} as the likely "
                f"target of a trigger ({decided})."
            )
        return f"No backdoor found: {names} found no label that an abnormally small trigger reaches ({decided})."

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "format": self.loaded.format,
            "input_shape": list(self.loaded.input_shape),
            "num_classes": self.loaded.num_classes,
            "clean_samples": len(self.clean.split),
            "clean_source": self.clean.source,
            "clean_labeled": self.clean.labeled,
            "infected": self.infected,
            "alpha": self.alpha,
            "alpha_per_inspector": {name: round(self.alpha * share, 6) for name, share in self.shares.items()},
            "preset": self.preset,
            "null": self.null,
            "references": [] if self.references is None else list(self.references.files),
            "reference_seconds": None if self.references is None else round(self.references.seconds, 2),
            "p_value": round(self.p_value, 6),
            "suspected_targets": self.suspected,
            "verdict": self.sentence(),
            "evidence": {name: v.summary() for name, v in self.verdicts.items()},
            "strip": {"threshold_entropy_bits": self.strip_threshold, **self.strip_details},
            "seconds": round(self.seconds, 2),
        }


def _int_list(text: str | None, what: str, count: int | None = None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if count is not None and len(values) != count:
        raise ConfigError(f"{what} needs {count} values, got {len(values)}")
    return values


def _float_list(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from None


def check_reference_count(count: int) -> None:
    """ConfigError unless ``count`` reference models are enough for the reference null (2 or more)."""
    if count < MIN_REFERENCES:
        raise ConfigError(f"--reference needs at least {MIN_REFERENCES} clean reference models, got {count}")


def _check_same_task(what: str, num_classes: int, input_shape: Sequence[int], loaded: LoadedModel, model: str) -> None:
    """ConfigError unless ``what`` (reference models) has the scanned ``loaded`` model's classes and input shape."""
    if num_classes != loaded.num_classes:
        raise ConfigError(f"{what}: {num_classes} classes, but the scanned model {model} has {loaded.num_classes}")
    if tuple(input_shape) != tuple(loaded.input_shape):
        raise ConfigError(
            f"{what}: inputs of shape {tuple(input_shape)}, but the scanned model {model} takes {loaded.input_shape}"
        )


def load_references(
    paths: Sequence[str | Path], loaded: LoadedModel, model: str, **options: Any
) -> dict[str, LoadedModel]:
    """Load the clean reference models ``paths`` with the scanned model's ``load_model_file`` ``options`` (their
    input shape defaults to the scanned model's); ConfigError when one has other classes or another input shape."""
    found: dict[str, LoadedModel] = {}
    for path in paths:
        if str(path) in found:
            raise ConfigError(f"{path}: given twice as --reference (each reference must be another clean model)")
        ref = load_model_file(path, **options, data_shape=loaded.input_shape)
        _check_same_task(f"reference model {path}", ref.num_classes, ref.input_shape, loaded, model)
        found[str(path)] = ref
    return found


def inspect_references(
    references: Mapping[str, LoadedModel],
    inspectors: Mapping[str, Inspector],
    clean: Split,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool | None = None,
) -> ReferenceSet:
    """Every inspector on every reference model (loaded, by file; at least 2), with the scan's ``clean`` samples
    and ``seed``: the :class:`ReferenceSet` of their per-label statistics."""
    check_reference_count(len(references))
    start = time.perf_counter()
    first = next(iter(references.values()))
    nulls = {
        name: ReferenceNull.from_statistics(
            [
                inspector.inspect(
                    ref.model, clean, input_shape=ref.input_shape, seed=seed, device=device, progress=progress
                ).statistic
                for ref in references.values()
            ]
        )
        for name, inspector in inspectors.items()
    }
    return ReferenceSet(tuple(references), first.input_shape, first.num_classes, nulls, time.perf_counter() - start)


def scan_model(
    model_path: str | Path,
    data: str,
    *,
    num_classes: int | None = None,
    input_shape: str | Sequence[int] | None = None,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    architecture: str | None = None,
    trust_pickle: bool = False,
    inspectors: Sequence[str] = INSPECTORS,
    seed: int = 0,
    device: str = "auto",
    progress: bool | None = None,
    data_dir: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    references: Sequence[str | Path] | ReferenceSet = (),
    preset: str = DEFAULT_PRESET,
) -> ScanResult:
    """Scan ``model_path`` with the clean samples ``data`` (a folder, an .npz or a dataset name); the model is
    flagged at the false-alarm rate ``alpha`` for all ``inspectors`` together (each runs at its share of ``alpha``,
    :data:`SCAN_WEIGHTS`).

    ``references``: none (default) for the normal null; the files of ``R >= 2`` clean models the defender trained
    itself for the reference null (loaded with this model's options, inspected here: the scan's ``seconds`` count
    them); or a :class:`ReferenceSet` inspected before (reused as it is). ``preset``: the inspectors' settings
    (:mod:`.presets`: ``default``, or ``verdicts`` for the slower settings the speed-up is measured against)."""
    start = time.perf_counter()
    if not inspectors:
        raise ConfigError("--inspectors names no inspector")
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha must lie between 0 and 1, got {alpha}")
    if not isinstance(references, ReferenceSet) and references:
        check_reference_count(len(references))
    shares = alpha_shares(list(inspectors), SCAN_WEIGHTS)
    chosen = [  # fail before work
        DEFENSES.build(
            name, {**preset_params(preset, name), "alpha": alpha * shares[name]}, where=f"--inspectors {name}"
        )
        for name in inspectors
    ]
    shape = _int_list(input_shape, "--input-shape", 3) if isinstance(input_shape, str) else input_shape
    mean = _float_list(mean, "--mean") if isinstance(mean, str) else mean
    std = _float_list(std, "--std") if isinstance(std, str) else std
    # without --input-shape, the clean samples' own shape serves a file that does not record its input's
    own = load_clean_data(data, None, data_dir) if shape is None else None
    options = {
        "architecture": architecture,
        "input_shape": shape,
        "num_classes": num_classes,
        "mean": mean,
        "std": std,
        "trust_pickle": trust_pickle,
    }
    loaded = load_model_file(
        model_path, **options, data_shape=tuple(own.split.x.shape[1:]) if own is not None else None
    )
    if own is not None and tuple(own.split.x.shape[1:]) == loaded.input_shape:
        clean = own
    else:
        clean = load_clean_data(data, loaded.input_shape, data_dir)
    if len(clean.split) < MIN_CLEAN:
        raise ConfigError(f"{data}: {len(clean.split)} clean samples; the scan needs at least {MIN_CLEAN}")
    if clean.classes is not None and len(clean.classes) != loaded.num_classes and clean.labeled:
        raise ConfigError(f"{data} has {len(clean.classes)} classes but the model has {loaded.num_classes} outputs")
    reused = references if isinstance(references, ReferenceSet) else None
    if reused is not None:
        reused.check(loaded, str(model_path), inspectors)
    # reference files are loaded, and so checked, before any inspection
    to_inspect = {} if reused is not None else load_references(references, loaded, str(model_path), **options)
    verdicts = {}
    for name, inspector in zip(inspectors, chosen, strict=True):
        verdicts[name] = inspector.inspect(
            loaded.model, clean.split, input_shape=loaded.input_shape, seed=seed, device=device, progress=progress
        )
    reference_set = reused
    if to_inspect:
        by_name = dict(zip(inspectors, chosen, strict=True))
        reference_set = inspect_references(
            to_inspect, by_name, clean.split, seed=seed, device=device, progress=progress
        )
    if reference_set is not None:
        verdicts = {
            name: apply_reference(v, reference_set.nulls[name], alpha * shares[name]) for name, v in verdicts.items()
        }
    strip_threshold, strip_details = None, {}
    if "strip" in DEFENSES:
        # STRIP draws its overlays from the clean samples: use fewer than its default 100 when they are few
        overlays = min(DEFENSES.build("strip").n_overlays, len(clean.split) - 1)
        strip = DEFENSES.build("strip", {"n_overlays": overlays})
        strip.fit(loaded.model, clean.split, seed=seed, device=device)
        strip_threshold = float(strip.boundary_)
        strip_details = {"params": strip.model_dump(mode="json"), **strip.calibration_metrics()}
    return ScanResult(
        str(model_path),
        loaded,
        clean,
        verdicts,
        strip_threshold,
        strip_details,
        time.perf_counter() - start,
        alpha=alpha,
        references=reference_set,
        preset=preset,
        shares=shares,
    )


def write_scan(result: ScanResult, output: Path) -> tuple[Path, Path]:
    """Write ``scan.json`` and ``scan.html`` into ``output``."""
    from .page import scan_page

    output.mkdir(parents=True, exist_ok=True)
    js = output / "scan.json"
    write_atomic(js, json.dumps(result.to_json(), indent=2))
    page = output / "scan.html"
    write_atomic(page, scan_page(result))
    return js, page
