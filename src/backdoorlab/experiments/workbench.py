"""Computes cells. One workbench per process keeps datasets and models in memory between cells.

Models come from the one :class:`~.model_source.ModelSource`; defense cells are measured by the evaluator
(:func:`~.evaluation.evaluate_defense`), the only code that holds both the attack and the defense.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..attacks import Attack, Backdoor
from ..data import Dataset, Split
from ..defenses import Defense
from ..metrics import attack_success_rate
from ..models import predict
from ..stealth import trigger_stealth
from ..utils.device import resolve_device
from .artifacts import portable
from .config import ExperimentConfig
from .evaluation import EvaluationContext, evaluate_defense, measure_model
from .grid import Cell, settings
from .model_source import ModelSource, Setting, dataset_fingerprint
from .population import attack_with_target
from .study_cells import run_study_cell


@dataclass
class CellResult:
    """What a cell measured: metric -> value, artifacts for the report, and its wall time."""

    cell: Cell
    metrics: dict[str, float]
    artifacts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Workbench:
    """Trains, caches and measures the models of one config; ``run_cell`` computes any cell."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        output_dir: str | Path,
        *,
        device: str | torch.device | None = None,
        progress: bool | None = False,
        log=lambda _msg: None,
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(device if device is not None else cfg.device)
        self.progress = progress
        self.log = log
        self.models = ModelSource(Path(output_dir) / "cache", device=self.device, progress=progress, log=log)
        self.settings = settings(cfg)
        self.attacks: dict[str, Attack] = dict(cfg.build_attacks())
        self.defenses: dict[str, Defense] = dict(cfg.build_defenses())
        self._datasets: dict[int, Dataset] = {}
        self._verdicts: dict[tuple[int, int, str], dict] = {}  # inspections per model, reused by repairs
        self._undefended: dict[tuple[int, int, str], dict] = {}  # each model's own CA / ASR / RA, for DER

    def dataset(self, setting: int) -> Dataset:
        d = self.settings[setting][0]
        if d not in self._datasets:
            spec = self.cfg.datasets[d]
            self._datasets[d] = spec.load()
        return self._datasets[d]

    def setting(self, index: int) -> Setting:
        """The :class:`Setting` (data, architecture, training) of the grid's setting ``index``."""
        d, model = self.settings[index]
        spec = self.cfg.datasets[d]
        fingerprint = dataset_fingerprint(spec.name, spec.data_dir, spec.defender_fraction)
        return Setting(self.dataset(index), model, self.cfg.training, fingerprint)

    def check(self) -> None:
        """Load every dataset and check every attack against it (raises ConfigError before any work)."""
        for index in range(len(self.settings)):
            ds = self.dataset(index)
            for label in self.attacks:
                for seed in self.cfg.seeds:
                    self.attack_for(label, seed, ds.num_classes).check(ds)

    def attack_for(self, label: str, seed: int, num_classes: int) -> Attack:
        """The attack of ``label`` for ``seed``: in a population run (``cfg.population``) a single-target attack is
        aimed at that seed's target; otherwise the configured attack."""
        attack = self.attacks[label]
        target = self.cfg.population_target(seed, num_classes)
        fields = type(attack).model_fields
        if target is None or getattr(attack, "mode", "all_to_one") != "all_to_one":
            return attack
        return attack_with_target(attack, target) if "target" in fields or "targets" in fields else attack

    def clean_model(self, setting: int, seed: int) -> torch.nn.Module:
        return self.models.clean(self.setting(setting), seed)

    def backdoor(self, setting: int, label: str, seed: int) -> Backdoor:
        attack = self.attack_for(label, seed, self.dataset(setting).num_classes)
        return self.models.backdoor(self.setting(setting), attack, seed)

    def run_cell(self, cell: Cell) -> CellResult:
        start = time.perf_counter()
        if cell.kind == "clean":
            model = self.clean_model(cell.setting, cell.seed)
            metrics, artifacts = measure_model(model, None, self.dataset(cell.setting).test, device=self.device), {}
        elif cell.kind == "attack":
            metrics, artifacts = self._attack_cell(cell)
        elif cell.kind == "study":
            metrics, artifacts = run_study_cell(self, cell)
        else:
            metrics, artifacts = self._defense_cell(cell)
        seconds = time.perf_counter() - start
        return CellResult(cell, {**metrics, "seconds": seconds}, portable(artifacts), seconds)

    def _attack_cell(self, cell: Cell) -> tuple[dict[str, float], dict[str, Any]]:
        """Clean accuracy, ASR, robust accuracy, the drop against the clean model, the trigger on the clean model, and
        the trigger's stealth (``stealth_psnr``, ``stealth_ssim``, ``stealth_linf``, ``stealth_l2``)."""
        test = self.dataset(cell.setting).test
        bd = self.backdoor(cell.setting, cell.attack, cell.seed)
        clean = self.clean_model(cell.setting, cell.seed)
        clean_accuracy = measure_model(clean, None, test, device=self.device)["clean_accuracy"]
        m = measure_model(bd.model, bd, test, device=self.device)
        m["clean_accuracy_drop"] = clean_accuracy - m["clean_accuracy"]
        if bd.trigger is None:
            return m, {}
        m["asr_on_clean_model"] = attack_success_rate(clean, test, bd.trigger, bd.target_rule, device=self.device)
        m |= {f"stealth_{k}": v for k, v in trigger_stealth(bd.trigger, bd.target_rule, test).items()}
        return m, {"examples": example_images(bd, test, self.cfg.examples)}

    def _defense_cell(self, cell: Cell) -> tuple[dict[str, float], dict[str, Any]]:
        if cell.attack == "none":
            model, bd = self.clean_model(cell.setting, cell.seed), None
        else:
            bd = self.backdoor(cell.setting, cell.attack, cell.seed)
            model = bd.model
        model_key = (cell.setting, cell.seed, cell.attack)
        verdicts = self._verdicts.setdefault(model_key, {})
        ctx = EvaluationContext(
            self.dataset(cell.setting),
            seed=cell.seed,
            device=self.device,
            progress=self.progress,
            verdicts=verdicts,
            undefended=self._undefended.setdefault(model_key, {}),
            architecture=cell.model,
            training=self.cfg.training,
        )
        outcome = evaluate_defense(self.defenses[cell.defense], model, bd, ctx)
        return {k: float(v) for k, v in outcome.metrics.items()}, outcome.artifacts


def example_images(bd: Backdoor, split: Split, n: int) -> dict[str, Any]:
    """``n`` eligible test images spread over the split (so over classes), clean and triggered, with the
    backdoored model's predictions, true labels and targets."""
    eligible = bd.target_rule.eligible(split.y).nonzero().flatten()
    keep = eligible[torch.linspace(0, len(eligible) - 1, min(n, len(eligible))).long()]
    x, y = split.x[keep], split.y[keep]
    xt = bd.trigger(x)
    return {
        "clean": x,
        "clean_pred": predict(bd.model, x),
        "triggered": xt,
        "triggered_pred": predict(bd.model, xt),
        "true": y,
        "targets": bd.target_rule.targets(y),
    }
