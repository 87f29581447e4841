"""The ``backdoorlab`` command: ``run`` an experiment, ``list`` what is registered, ``describe`` a method."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .errors import BackdoorlabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Attack, detect and remove backdoors in deep neural networks.",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="BACKDOORLAB_STORE",
        help="results store: a SQLite path or sqlite:///PATH, or postgresql://USER@HOST/DB (default: "
        "OUTPUT/results.sqlite)",
    ),
]


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config; omit for the built-in MNIST-5k demo")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder of results.sqlite, cache, reports")] = Path(
        "runs"
    ),
    run_name: Annotated[str | None, typer.Option("--run-name", help="run folder name (default: name + time)")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda[:N] (overrides config)")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="folder of the dataset's files")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="comma-separated seeds (overrides config)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or log lines")] = False,
    executor: Annotated[str, typer.Option("--executor", help="local or ray")] = "local",
    workers: Annotated[int, typer.Option("--workers", help="parallel worker processes (local) or Ray CPUs")] = 1,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="address of a running Ray cluster")] = None,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="stop at the first failed cell (default: record it and go on)")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Run every attack x defense x seed of CONFIG (resuming a killed run), and write the report.

    A cell that fails is recorded with its error and the run goes on without the cells that depend on it; the
    command then exits 1 with a one-line summary (rerun to retry the failed cells)."""
    from .experiments.config import load_config, parse_config
    from .experiments.runner import Runner
    from .experiments.store_url import describe
    from .report import write_run_report
    from .utils.progress import console

    cfg = load_config(config)
    overrides: dict = {}
    if device is not None:
        overrides["device"] = device
    if seeds is not None:
        try:
            overrides["seeds"] = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise BackdoorlabError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if data_dir is not None:
        overrides["dataset"] = [{**d.model_dump(), "data_dir": str(data_dir)} for d in cfg.datasets]
    if overrides:
        cfg = parse_config({**cfg.model_dump(mode="json"), **overrides}, "config with command-line overrides")
    log = (lambda _msg: None) if quiet else (lambda msg: console.print(msg, highlight=False, markup=False))
    runner = Runner(
        cfg,
        output,
        run_name=run_name,
        progress=False if quiet else None,
        log=log,
        executor=executor,
        workers=workers,
        ray_address=ray_address,
        fail_fast=fail_fast,
        store=store,
    )
    result = runner.run()
    md, html = write_run_report(result.run, output, store=runner.store_url)
    _print_report_paths(html, md)
    out.print(
        f"results: {describe(runner.store_url)} (run {result.run}; {result.computed} cells computed, "
        f"{result.skipped} reused), {result.seconds:.0f} s",
        highlight=False,
    )
    if result.failed_count:
        err.print(f"error: {result.failure_summary()}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


def _print_report_paths(html: Path, md: Path) -> None:
    out.print(f"report: {html}", highlight=False, soft_wrap=True)
    out.print(f"        {md}", highlight=False, soft_wrap=True)


@app.command()
def report(
    run_name: Annotated[str, typer.Argument(help="run name (the folder under --output)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder of results.sqlite")] = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Rebuild a run's report from the results database (no dataset is loaded, no model built)."""
    from .report import write_run_report

    md, html = write_run_report(run_name, output, store=store)
    _print_report_paths(html, md)


@app.command("runs")
def list_runs(
    output: Annotated[Path, typer.Option("--output", "-o", help="folder of results.sqlite")] = Path("runs"),
    store: StoreOption = None,
) -> None:
    """List the runs in the results store: name, config, status, cells done / total, start and wall time."""
    from .experiments.run_list import format_runs
    from .experiments.run_list import list_runs as stored_runs

    entries = stored_runs(store, output)
    lines = format_runs(entries) if entries else ["(no runs yet)"]
    for line in lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)


ParamOption = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="method parameter KEY=VALUE (repeatable; YAML values)")
]
DataOption = Annotated[str, typer.Option("--data", help="dataset name or npz:PATH")]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="folder of the dataset's files")]


@app.command()
def attack(
    name: Annotated[str, typer.Argument(help="registered attack (see `backdoorlab list`)")],
    data: DataOption = "mnist5k",
    data_dir: DataDirOption = None,
    model: Annotated[str, typer.Option("--model", help="architecture to train")] = "badnet_cnn",
    param: ParamOption = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="training epochs (default of TrainingConfig)")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="checkpoint to write")] = None,
) -> None:
    """Run one attack and save the backdoored model (with its trigger) as a checkpoint."""
    from .experiments.single import parse_params, run_single_attack
    from .models import TrainingConfig
    from .utils.validation import build_validated

    training = build_validated(TrainingConfig, {"epochs": epochs} if epochs is not None else {}, where="training")
    out_path = output or Path("runs") / "attacks" / f"{name}-{data.replace(':', '_').replace('/', '_')}-seed{seed}.pt"
    _, metrics = run_single_attack(
        name,
        parse_params(param or []),
        dataset=data,
        data_dir=data_dir,
        architecture=model,
        training=training,
        seed=seed,
        device=device,
        output=out_path,
        progress=None,
    )
    out.print(", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), highlight=False)
    out.print(f"model: {out_path}", highlight=False, soft_wrap=True)


@app.command()
def defend(
    name: Annotated[str, typer.Argument(help="registered defense (see `backdoorlab list`)")],
    model: Annotated[Path, typer.Option("--model", help="checkpoint (e.g. from `backdoorlab attack`)")],
    data: DataOption = "mnist5k",
    data_dir: DataDirOption = None,
    param: ParamOption = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder for defense.json / repaired.pt")] = None,
) -> None:
    """Run one defense on a saved model, with the clean val split of DATA as the defender's data."""
    from .experiments.single import parse_params, run_single_defense

    out_dir = output or Path("runs") / "defend" / f"{name.replace('_', '-')}-{model.stem}"
    outcome, written = run_single_defense(
        name.replace("-", "_"),
        parse_params(param or []),
        model_path=model,
        dataset=data,
        data_dir=data_dir,
        seed=seed,
        device=device,
        output=out_dir,
        progress=None,
    )
    out.print(", ".join(f"{k} {v:.4f}" for k, v in outcome.metrics.items()), highlight=False)
    for path in written:
        out.print(f"wrote {path}", highlight=False, soft_wrap=True)


ReferenceOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--reference",
        help="a clean model you trained yourself for the same task (repeat, 2 or more): decide under the "
        "reference null instead of the normal null (R more inspections per inspector)",
    ),
]
PresetOption = Annotated[
    str,
    typer.Option(
        "--preset", help="inspector settings: default, or verdicts (the slower settings the speed-up is measured on)"
    ),
]


def inspector_names(text: str) -> list[str]:
    """The registered names in a comma-separated ``--inspectors`` value (dashes read as underscores)."""
    return [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]


def stderr_log(quiet: bool) -> Callable[[str], None]:
    """A one-argument logger printing plain lines to stderr, or doing nothing when ``quiet``."""
    return (lambda _msg: None) if quiet else (lambda msg: err.print(msg, highlight=False, markup=False))


@app.command()
def scan(
    model: Annotated[Path, typer.Argument(help="model file: TorchScript, .pt2, .onnx, .safetensors, checkpoint")],
    data: Annotated[str, typer.Option("--data", help="clean samples: image folder, .npz, or dataset name")],
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="expected number of classes")] = None,
    input_shape: Annotated[str | None, typer.Option("--input-shape", help="C,H,W when the file does not say")] = None,
    mean: Annotated[str | None, typer.Option("--mean", help="per-channel mean the model expects: 0.5,0.5,0.5")] = None,
    std: Annotated[str | None, typer.Option("--std", help="per-channel std the model expects")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="registered architecture for weights-only files")] = None,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="allow unpickling code (unsafe)")] = False,
    inspectors: Annotated[str, typer.Option("--inspectors", help="comma-separated")] = "neural_cleanse,deepinspect",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder for scan.json and scan.html")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the verdict as JSON on stdout")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    alpha: Annotated[
        float, typer.Option("--alpha", help="false-alarm rate: chance of flagging a model without a backdoor")
    ] = 0.05,
    reference: ReferenceOption = None,
    preset: PresetOption = "default",
) -> None:
    """Audit a model: exit 0 when no backdoor is found, 1 when one is, 2 on bad input."""
    import json

    from .audit.scan import scan_model, write_scan

    names = inspector_names(inspectors)
    result = scan_model(
        model,
        data,
        num_classes=num_classes,
        input_shape=input_shape,
        mean=mean,
        std=std,
        architecture=arch,
        trust_pickle=trust_pickle,
        inspectors=names,
        seed=seed,
        device=device,
        progress=None if not json_out else False,
        alpha=alpha,
        references=reference or (),
        preset=preset,
    )
    out_dir = output or Path("runs") / "scans" / model.stem
    js, page = write_scan(result, out_dir)
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
    else:
        out.print(result.sentence(), highlight=False, soft_wrap=True)
        out.print(f"evidence: {page}\n          {js}", highlight=False, soft_wrap=True)
    if result.infected:
        raise typer.Exit(1)


@app.command("scan-data")
def scan_data(
    data: Annotated[str, typer.Argument(help="the training set: .npz (x, y) or an image folder, one folder a class")],
    model: Annotated[str | None, typer.Option("--model", help="model trained on it; default: train one here")] = None,
    clean: Annotated[str | None, typer.Option("--clean", help="clean samples for SCAn's global model")] = None,
    detector: Annotated[str, typer.Option("--detector", help="scan, spectral_signatures, spectre, ...")] = "scan",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder for the CSV, JSON and page")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Find poisoned training samples: exit 1 when SCAn's class test finds poison (false alarm 0.33% per clean
    class under a normal null; measured on clean sets: 0/10 MNIST-5k, 2/10 8x8 digits), 0 otherwise, 2 on bad
    input."""
    from .audit.scan_data import scan_data as run_scan
    from .audit.scan_data import write_data_scan

    result, train = run_scan(data, model=model, clean=clean, detector=detector, seed=seed, device=device)
    written = write_data_scan(result, train, output or Path("runs") / "scan-data" / Path(data).stem)
    s = result.summary
    out.print(f"{s['flagged']} of {s['samples']} samples flagged; suspicious classes {s['suspicious_classes']}")
    for path in written:
        out.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if s["poison_found"]:
        raise typer.Exit(1)


@app.command()
def population(
    config: Annotated[Path, typer.Argument(help="run config: dataset, model list, training, attacks, population.k")],
    output: Annotated[Path, typer.Option("--output", "-o", help="population folder (<id>/model.pt + info.json)")],
    n: Annotated[int | None, typer.Option("--n", help="models per role (default population.k)")] = None,
    formats: Annotated[str, typer.Option("--formats", help="also write: torchscript,onnx")] = "",
    seed: Annotated[int, typer.Option("--seed", help="seed of every draw (seeds, targets, triggers, ids)")] = 0,
    min_asr: Annotated[float, typer.Option("--min-asr", help="redraw a trojaned model below this ASR")] = 0.5,
    device: Annotated[str | None, typer.Option("--device")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Write N clean and N trojaned models in the TDC layout (resumes a killed run); see docs/population.md."""
    from .experiments.config import load_config
    from .experiments.model_files import write_population

    log = stderr_log(quiet)
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    infos = write_population(
        load_config(config),
        output,
        n=n,
        seed=seed,
        formats=chosen,
        min_asr=min_asr,
        device=device,
        progress=False if quiet else None,
        log=log,
    )
    trojaned = sum(i["trojaned"] for i in infos)
    out.print(f"{len(infos) - trojaned} clean and {trojaned} trojaned models in {output}", highlight=False)


@app.command("scan-population")
def scan_population(
    folder: Annotated[Path, typer.Argument(help="folder of model folders (TDC or TrojAI layout)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write (one row per model)")],
    data: Annotated[str | None, typer.Option("--data", help="clean samples; default: each model's examples")] = None,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="allow unpickling code (unsafe)")] = False,
    inspectors: Annotated[str, typer.Option("--inspectors", help="comma-separated")] = "neural_cleanse,deepinspect",
    alpha: Annotated[float, typer.Option("--alpha", help="false-alarm rate per model")] = 0.05,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    reference: ReferenceOption = None,
    preset: PresetOption = "default",
) -> None:
    """Scan every model of FOLDER into a CSV (resumes): exit 1 when any model is flagged, 0 if none, 2 on bad input."""
    from .audit.scan_population import scan_population as run_scan

    log = stderr_log(quiet)
    names = inspector_names(inspectors)
    rows = run_scan(
        folder,
        output,
        data=data,
        inspectors=names,
        alpha=alpha,
        trust_pickle=trust_pickle,
        seed=seed,
        device=device,
        progress=False if quiet else None,
        log=log,
        warn=lambda msg: err.print(msg, highlight=False, markup=False, soft_wrap=True),
        references=reference or (),
        preset=preset,
    )
    flagged = sum(r["verdict"] == "backdoor" for r in rows)
    errors = sum(r["verdict"] == "error" for r in rows)
    out.print(f"{flagged} of {len(rows)} models flagged ({errors} errors); rows: {output}", highlight=False)
    if flagged:
        raise typer.Exit(1)


# `inspect` is `defend` under the name that model inspectors (Neural Cleanse, DeepInspect) are used with
app.command("inspect", help="Inspect a saved model (neural_cleanse, deepinspect); the same as `defend`.")(defend)


MethodName = Annotated[str | None, typer.Argument(help="a method's name: describe it (as `backdoorlab describe`)")]


@app.command("list")
def list_methods(name: MethodName = None) -> None:
    """Print the registered datasets, models, attacks, defenses and triggers; with NAME, describe that method."""
    if name is not None:
        describe(name)
        return
    from .data import dataset_names
    from .models import MODELS

    families = [("datasets", dataset_names()), ("models", MODELS.names())]
    families += [(_plural(registry.kind), registry.names()) for registry in _method_registries()]
    for title, names in families:
        out.print(f"{title}: {', '.join(names) if names else '(none yet)'}", highlight=False, soft_wrap=True)


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="a registered attack, defense, trigger, ... or `training`")],
) -> None:
    """Print a method's family, summary, and each parameter: type, default, allowed values, description."""
    import difflib
    import textwrap

    from .registry import describe as parameters
    from .registry import summary

    name = name.replace("-", "_")
    found = _methods_named(name)
    if not found:
        names = sorted({n for registry in _method_registries() for n in registry.names()} | {"training"})
        close = [n for n in names if name in n] or difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close[:5])}" if close else "see `backdoorlab list` for every name"
        raise BackdoorlabError(f"unknown method {name!r}; {hint}")
    for i, (family, cls) in enumerate(found):
        if i:
            out.print("")
        out.print(f"{name} ({family}): {summary(cls)}", highlight=False, markup=False, soft_wrap=True)
        for p in parameters(cls):
            allowed = f"; one of {', '.join(map(str, p.choices))}" if p.choices else ""
            allowed += f"; range {p.range}" if p.range else ""
            default = "required" if p.required else f"default {_shown(p.default)}"
            out.print(f"  {p.name}: {p.type}, {default}{allowed}", highlight=False, markup=False, soft_wrap=True)
            for line in textwrap.wrap(p.description or "(no description)", 100):
                out.print(f"      {line}", highlight=False, markup=False, soft_wrap=True)


def _shown(value: object) -> str:
    """A default as a user writes it in a config: ``0.1``, ``bottom-right``, ``[1.0, 5.0]``, ``None``."""
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, str) else repr(value)


def _method_registries() -> list:
    """The registries of methods built from parameters, in the order `list` prints them."""
    from .adversarial import ADVERSARIAL_ATTACKS
    from .attacks import ATTACKS
    from .defenses import DEFENSES
    from .studies import STUDIES
    from .triggers import TRIGGERS

    return [ATTACKS, DEFENSES, TRIGGERS, ADVERSARIAL_ATTACKS, STUDIES]


def _plural(kind: str) -> str:
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"


def _methods_named(name: str) -> list[tuple[str, type]]:
    """(family, class) of every method registered as ``name``; ``training`` is the training config."""
    from .models import TrainingConfig

    found = [(registry.kind, registry.get(name)) for registry in _method_registries() if name in registry]
    return found + [("training config", TrainingConfig)] if name == "training" else found


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app; a :class:`BackdoorlabError` becomes one line on stderr and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code in this mode
        if isinstance(code, int):
            return code
    except BackdoorlabError as e:
        err.print(f"error: {e}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:  # click's usage errors (typer may vendor its own click: match by class name)
        kinds = {c.__name__ for c in type(e).__mro__}
        if "ClickException" in kinds:
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err.print(f"error: {e.format_message()}{hint}", highlight=False, markup=False, soft_wrap=True)  # type: ignore[attr-defined]
            return 2
        if "Abort" in kinds:
            return 130
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
