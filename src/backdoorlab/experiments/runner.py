"""`backdoorlab run`: train the clean reference and each attacked model per seed, measure, store, report."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from ..attacks import Attack, Backdoor
from ..data import Dataset, load_dataset
from ..defenses import Defense, DefenseContext, DefenseOutcome
from ..metrics import attack_success_rate, backdoor_metrics, clean_accuracy
from ..models import build_model, predict, train_model
from ..utils.device import resolve_device
from .cache import ModelCache, cache_key
from .config import ExperimentConfig
from .store import ResultRow, ResultsStore

Log = Callable[[str], None]


@dataclass
class RunResult:
    """What a run produced: its name and folder, the report files, the rows it measured, and its wall time."""

    run: str
    directory: Path
    report_md: Path
    report_html: Path
    rows: list[ResultRow]
    seconds: float
    examples: list = field(default_factory=list)


@dataclass(frozen=True)
class DefenseRecord:
    """One evaluated (model, defense) cell, kept in memory for the report's defense-specific sections."""

    attack: str
    defense: str
    method: str
    seed: int
    outcome: DefenseOutcome


def _dataset_fingerprint(cfg: ExperimentConfig) -> dict:
    """What identifies the data for the cache: the name, and for files their size and modification time."""
    name = cfg.dataset.name
    fp: dict = {"name": name, "data_dir": cfg.dataset.data_dir}
    if name.startswith("npz:"):
        p = Path(name[4:]).expanduser()
        fp["file"] = [p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else None
    return fp


class Runner:
    """Runs one :class:`ExperimentConfig`. Validation happens in ``__init__``, before anything is written."""

    def __init__(self, cfg: ExperimentConfig, output_dir: str | Path = "runs", *, run_name: str | None = None,
                 progress: bool | None = None, log: Log = print) -> None:  # fmt: skip
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.progress = progress
        self.log = log
        self.device = resolve_device(cfg.device)
        self.dataset: Dataset = load_dataset(cfg.dataset.name, cfg.dataset.data_dir)
        self.attacks: list[tuple[str, Attack]] = cfg.build_attacks()
        for _, attack in self.attacks:
            attack.check(self.dataset)
        self.defenses: list[tuple[str, Defense]] = cfg.build_defenses()
        self.outcomes: list[DefenseRecord] = []
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_name = run_name or f"{cfg.name}-{stamp}"
        self.cache = ModelCache(self.output_dir / "cache")
        self._data_fp = _dataset_fingerprint(cfg)

    def _key(self, attack: str, params: dict, seed: int) -> str:
        return cache_key(data=self._data_fp, model=self.cfg.model, training=self.cfg.training.model_dump(),
                         attack=attack, params=params, seed=seed)  # fmt: skip

    def clean_model(self, seed: int) -> torch.nn.Module:
        ds = self.dataset
        key = self._key("none", {}, seed)
        cached = self.cache.load_model(key)
        if cached is not None:
            self.log(f"  clean model (seed {seed}): from cache")
            return cached[0]
        model = build_model(self.cfg.model, ds.input_shape, ds.num_classes, ds.mean, ds.std, seed=seed)
        train_model(model, ds.train.x, ds.train.y, self.cfg.training, seed=seed, device=self.device,
                    progress=self.progress, description=f"clean model, seed {seed}")  # fmt: skip
        self.cache.save_model(key, model, self.cfg.model, ds.input_shape, ds.num_classes)
        return model

    def backdoor(self, label: str, attack: Attack, seed: int) -> Backdoor:
        key = self._key(attack.name, attack.model_dump(mode="json"), seed)
        cached = self.cache.load_backdoor(key)
        if cached is not None:
            self.log(f"  {label} (seed {seed}): from cache")
            return cached
        bd = attack.run(self.dataset, self.cfg.model, self.cfg.training, seed=seed, device=str(self.device),
                        progress=self.progress)  # fmt: skip
        self.cache.save_backdoor(key, bd, self.dataset.input_shape, self.dataset.num_classes)
        return bd

    def measure(self, bd: Backdoor, clean: torch.nn.Module, clean_acc: float) -> dict[str, float]:
        """Clean accuracy, ASR and robust accuracy of ``bd`` on test, its clean-accuracy drop against the clean
        model, and the trigger's ASR on the clean model; only the first two for attacks without a trigger."""
        test = self.dataset.test
        if bd.trigger is None:
            ca = clean_accuracy(bd.model, test, device=self.device)
            return {"clean_accuracy": ca, "clean_accuracy_drop": clean_acc - ca}
        m = backdoor_metrics(bd.model, test, bd.trigger, bd.target_rule, device=self.device)
        m["clean_accuracy_drop"] = clean_acc - m["clean_accuracy"]
        m["asr_on_clean_model"] = attack_success_rate(clean, test, bd.trigger, bd.target_rule, device=self.device)
        return m

    def _row(self, attack: str, seed: int, metric: str, value: float, defense: str = "none") -> ResultRow:
        return ResultRow(self.run_name, self.dataset.name, self.cfg.model, attack, defense, seed, metric, value)

    def defend(self, attack_label: str, model: torch.nn.Module, backdoor: Backdoor | None, seed: int,
               store: ResultsStore) -> list[ResultRow]:  # fmt: skip
        """Evaluate every defense of the config on one model; store a cell of rows per defense."""
        rows: list[ResultRow] = []
        ctx = DefenseContext(self.dataset, seed=seed, device=self.device, progress=self.progress)
        for label, defense in self.defenses:
            start = time.perf_counter()
            outcome = defense.evaluate(model, backdoor, ctx)
            metrics = {**outcome.metrics, "seconds": time.perf_counter() - start}
            cell = [self._row(attack_label, seed, k, float(v), defense=label) for k, v in metrics.items()]
            store.add(cell)
            rows += cell
            self.outcomes.append(DefenseRecord(attack_label, label, defense.name, seed, outcome))
            shown = ", ".join(f"{k} {v:.3f}" for k, v in outcome.metrics.items())
            self.log(f"    {label} on {attack_label} (seed {seed}): {shown}")
        return rows

    def run(self) -> RunResult:
        from ..report.build import build_run_report  # report is the layer above; imported only when used

        start = time.perf_counter()
        ds, test = self.dataset, self.dataset.test
        self.log(f"run {self.run_name}: {ds.summary()}, model {self.cfg.model}, device {self.device}")
        partial = self.output_dir / f".{self.run_name}.partial"
        final = self.output_dir / self.run_name
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        rows: list[ResultRow] = []
        examples = []
        with ResultsStore(self.output_dir / "results.sqlite") as store:
            store.start_run(self.run_name, self.cfg.model_dump(mode="json"))
            for seed in self.cfg.seeds:
                clean = self.clean_model(seed)
                clean_acc = clean_accuracy(clean, test, device=self.device)
                cell = [self._row("none", seed, "clean_accuracy", clean_acc)]
                self.log(f"  clean model (seed {seed}): clean accuracy {clean_acc:.4f}")
                store.add(cell)
                rows += cell
                rows += self.defend("none", clean, None, seed, store)
                for label, attack in self.attacks:
                    bd = self.backdoor(label, attack, seed)
                    m = self.measure(bd, clean, clean_acc)
                    cell = [self._row(label, seed, k, v) for k, v in m.items()]
                    store.add(cell)
                    rows += cell
                    shown = f", ASR {m['asr']:.4f}" if "asr" in m else ""
                    self.log(f"  {label} (seed {seed}): clean accuracy {m['clean_accuracy']:.4f}{shown}")
                    rows += self.defend(label, bd.model, bd if bd.trigger is not None else None, seed, store)
                    if seed == self.cfg.seeds[0] and bd.trigger is not None:
                        examples.append(example_set(label, bd, test, self.cfg.examples))
            seconds = time.perf_counter() - start
            md, page = build_run_report(partial, self.run_name, self.cfg, ds, rows, examples, seconds, self.outcomes)
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
            store.finish_run(self.run_name)
        return RunResult(self.run_name, final, final / md.name, final / page.name, rows, seconds, examples)


def example_set(label: str, bd: Backdoor, split, n: int):
    """``n`` eligible test images spread evenly over the split (so over classes), clean and triggered, with the
    backdoored model's predictions."""
    from ..report.plots import ExampleSet

    eligible = bd.target_rule.eligible(split.y).nonzero().flatten()
    keep = eligible[torch.linspace(0, len(eligible) - 1, min(n, len(eligible))).long()]
    x, y = split.x[keep], split.y[keep]
    xt = bd.trigger(x)
    return ExampleSet(
        label=label, clean=x, clean_pred=predict(bd.model, x).tolist(), triggered=xt,
        triggered_pred=predict(bd.model, xt).tolist(), true=y.tolist(), targets=bd.target_rule.targets(y).tolist(),
    )  # fmt: skip


def run_experiment(cfg: ExperimentConfig, output_dir: str | Path = "runs", **kwargs) -> RunResult:
    """Validate, run and report ``cfg``; see :class:`Runner`."""
    return Runner(cfg, output_dir, **kwargs).run()
