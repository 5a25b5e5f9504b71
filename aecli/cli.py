"""The `aecli` command line. Each command lives in ``aecli/commands/<name>.py`` and exposes
``register(app)``; none imports torch at module level, so ``aecli --help`` stays fast."""

from __future__ import annotations

import importlib
from typing import Annotated, Optional

import typer

import aecli

# Order here is the order in `aecli --help`.
COMMANDS = ["models", "info", "train", "reconstruct", "sample", "interpolate", "arithmetic", "tsne", "evaluate", "weights", "report"]

app = typer.Typer(
    name="aecli",
    help="Train, use and evaluate image autoencoders. Exit codes: 0 ok, 1 runtime failure, "
    "2 usage error or bad input, 75 interrupted with resume state saved.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aecli {aecli.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Train, use and evaluate image autoencoders."""


for _name in COMMANDS:
    importlib.import_module(f"aecli.commands.{_name}").register(app)


def main() -> None:
    app()
