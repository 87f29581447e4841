"""The ``backdoorlab`` command: ``run`` an experiment, ``list`` what is registered."""

from __future__ import annotations

import sys
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
) -> None:
    """Train the clean and attacked models of CONFIG, measure them, and write the report."""
    from .experiments.config import load_config, parse_config
    from .experiments.runner import Runner

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
        overrides["dataset"] = {**cfg.dataset.model_dump(), "data_dir": str(data_dir)}
    if overrides:
        cfg = parse_config({**cfg.model_dump(mode="json"), **overrides}, "config with command-line overrides")
    log = (lambda _msg: None) if quiet else (lambda msg: err.print(msg, highlight=False))
    runner = Runner(cfg, output, run_name=run_name, progress=False if quiet else None, log=log)
    result = runner.run()
    out.print(f"report: {result.report_html}", highlight=False, soft_wrap=True)
    out.print(f"        {result.report_md}", highlight=False, soft_wrap=True)
    out.print(f"results: {output / 'results.sqlite'} (run {result.run}), {result.seconds:.0f} s", highlight=False)


@app.command("list")
def list_methods() -> None:
    """Print the registered datasets, models, attacks and defenses."""
    from .attacks import ATTACKS
    from .data import dataset_names
    from .defenses import DEFENSES
    from .models import MODELS

    for title, names in (("datasets", dataset_names()), ("models", MODELS.names()), ("attacks", ATTACKS.names()),
                         ("defenses", DEFENSES.names())):  # fmt: skip
        out.print(f"{title}: {', '.join(names) if names else '(none yet)'}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app; a :class:`BackdoorlabError` becomes one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except BackdoorlabError as e:
        err.print(f"error: {e}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:  # click's usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return 2
        if isinstance(e, click.exceptions.Abort):
            return 130
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
