"""Shared CLI plumbing: error → exit-code mapping, option parsing helpers, device choice."""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer

from aecli.errors import AecliError, UsageError
from aecli.untrusted import printable

F = TypeVar("F", bound=Callable[..., Any])

# Help panels group options the same way in every command.
PANEL_DATA = "Data"
PANEL_MODEL = "Model"
PANEL_TRAIN = "Optimisation"
PANEL_LOSS = "Losses"
PANEL_OUTPUT = "Output"
PANEL_RUNTIME = "Runtime"
PANEL_WEIGHTS = "Pretrained weights"
# --split of every command that reads images (aecli.data.open_for): one rule, one text.
SPLIT_HELP = ("auto|val|train|all. auto: val on the checkpoint's training data (the images training held out, "
              "by its own rule), all on other data. Image files are always used whole.")

# Options that mean the same in every command are declared once, here.
TileSizeOpt = Annotated[Optional[int], typer.Option(
    "--tile-size", min=1, help="Grid tile size in pixels. Default: images of 64 px or less enlarged (nearest neighbour) "
    "to at least 96 px, larger ones shown as they are.", rich_help_panel=PANEL_OUTPUT, show_default=False)]


def fail(message: str, code: int) -> None:
    """Print one line to stderr and exit with ``code``: never a traceback for a user error."""
    typer.echo(f"Error: {printable(message)}", err=True)
    raise typer.Exit(code=code)


def handle_errors(fn: F) -> F:
    """Decorate a command: AecliError → one-line message + its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AecliError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            typer.echo("Interrupted.", err=True)
            raise typer.Exit(code=130) from None
        except OSError as exc:
            # Disk full, permission denied, read-only file system: the user can fix these.
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{where}; check free space and permissions", 1)

    return wrapper  # type: ignore[return-value]


def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   line: str | None = None) -> str:
    """Warnings as one line, `Warning: …`, like errors: no internal path or source line in batch logs
    (installed as warnings.formatwarning by the `aecli` entry point)."""
    return f"Warning: {printable(message)}\n"


def parse_floats(text: str, name: str, count: int | None = None) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if count is not None and len(values) != count:
        raise UsageError(f"{name} needs {count} comma-separated numbers, got {text!r}")
    return values


def parse_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def resolve_device(name: str) -> Any:
    """See aecli.devices.resolve_device (imported lazily: it needs torch)."""
    from aecli.devices import resolve_device as _resolve

    return _resolve(name)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
