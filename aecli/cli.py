"""The `aecli` command line. Each command lives in ``aecli/commands/<name>.py`` and exposes
``register(app)``; none imports torch at module level, so ``aecli --help`` stays fast."""

from __future__ import annotations

import errno
import importlib
import io
import os
import sys
from typing import Annotated, Optional

import typer

import aecli

# Order here is the order in `aecli --help`.
COMMANDS = ["models", "info", "train", "reconstruct", "encode", "decode", "sample", "interpolate", "arithmetic", "tsne",
            "evaluate", "weights", "report", "import", "export"]
# Modules whose name differs from their command's (``import`` is a Python keyword).
_MODULES = {"import": "import_"}

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
    importlib.import_module(f"aecli.commands.{_MODULES.get(_name, _name)}").register(app)


def _flags_without_metavar() -> None:
    """Typer's help shows every flag with a ``<bool>`` metavar, as if it took a value (``--ema <bool>``);
    a flag takes none, so its type column stays empty."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:  # type: ignore[name-defined]
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_metavar()


# Commands whose result is what they print: with standard output closed they would do nothing useful.
PRINTS_RESULT = ("models", "info", "weights list", "weights check")


class _StdoutGuard(io.RawIOBase):
    """File descriptor 1 for sys.stdout. When the reader goes away (`aecli train | head -1`: EPIPE) or
    the descriptor is bad, printing stops and the command carries on: its results are files, and a
    closed pipe is no reason to abandon hours of training (nor a disk problem). The descriptor is then
    pointed at /dev/null so that child processes and late flushes are silent too."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1

    def isatty(self) -> bool:
        return not self.lost and os.isatty(1)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.lost:
            return len(data)
        try:
            return os.write(1, data)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EBADF):
                raise  # a full disk behind `> file` is a real error
            self.lost = True
            _point_at_devnull()
            return len(data)


def _point_at_devnull() -> None:
    fd = os.open(os.devnull, os.O_WRONLY)
    if fd != 1:
        os.dup2(fd, 1)
        os.close(fd)


def _command_name(argv: list[str]) -> str:
    """The command (and sub-command) being run: the first words that are not options."""
    words = [a for a in argv if not a.startswith("-")][:2]
    return " ".join(words) if words[:1] == ["weights"] else " ".join(words[:1])


def _guard_stdout() -> None:
    """A closed standard output (`aecli models >&-`): commands that only print refuse (their output
    would be lost); the others run with it on /dev/null. Either way sys.stdout never raises EPIPE."""
    closed = sys.stdout is None
    if not closed:
        try:
            os.fstat(1)
        except OSError:
            closed = True
    if closed and _command_name(sys.argv[1:]) in PRINTS_RESULT:
        typer.echo(f"Error: standard output is closed, so the result of `aecli {_command_name(sys.argv[1:])}` "
                   "would be lost; redirect it to a file (> FILE) or to /dev/null", err=True)
        sys.exit(2)
    if closed:
        _point_at_devnull()
    old = sys.stdout
    encoding = getattr(old, "encoding", None) or "utf-8"
    errors = getattr(old, "errors", None) or "strict"
    line_buffering = bool(getattr(old, "line_buffering", False)) or os.isatty(1)
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(_StdoutGuard()), encoding=encoding, errors=errors,
                                  line_buffering=line_buffering)


def main() -> None:
    """Entry point. Typer's usage errors (a value that is not a number, a missing argument) become
    one line on stderr and exit code 2, like aecli's own errors, instead of a boxed panel."""
    import warnings

    from aecli.commands._common import format_warning

    _guard_stdout()
    warnings.formatwarning = format_warning
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
