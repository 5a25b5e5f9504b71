"""The `aecli` command line. Each command lives in ``aecli/commands/<name>.py`` and exposes
``register(app)``; none imports torch at module level, so ``aecli --help`` stays fast."""

from __future__ import annotations

import importlib
from typing import Annotated, Optional

import typer

import aecli

# Order here is the order in `aecli --help`.
COMMANDS = ["models", "info", "train", "reconstruct", "encode", "decode", "sample", "interpolate", "arithmetic", "tsne",
            "evaluate", "weights", "report"]

app = typer.Typer(
    name="aecli",
    help="Train, use and evaluate image autoencoders. Exit codes: 0 ok, 1 runtime failure, "
    "2 usage error or bad input, 75 interrupted with resume state saved.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; values in aecli/completion.py
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
    """Entry point. Typer's usage errors (a value that is not a number, a missing argument) become
    one line on stderr and exit code 2, like aecli's own errors, instead of a boxed panel."""
    import sys

    try:
        result = app(standalone_mode=False)
    except typer.TyperException as exc:  # click's ClickException family, as vendored by typer
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message:  # empty for a bare `aecli`/`aecli weights`: the help was printed already
            typer.echo(f"Error: {message}{where}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
