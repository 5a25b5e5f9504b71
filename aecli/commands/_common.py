"""Shared CLI plumbing: error → exit-code mapping, option parsing helpers, device choice."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer

from aecli.errors import AecliError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

# Help panels group options the same way in every command.
PANEL_DATA = "Data"
PANEL_MODEL = "Model"
PANEL_TRAIN = "Optimisation"
PANEL_LOSS = "Losses"
PANEL_OUTPUT = "Output"
PANEL_RUNTIME = "Runtime"
PANEL_WEIGHTS = "Pretrained weights"


def fail(message: str, code: int) -> None:
    """Print one line to stderr and exit with ``code``: never a traceback for a user error."""
    typer.echo(f"Error: {message}", err=True)
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
    """auto|cpu|cuda|cuda:N → torch.device, with a clear error when CUDA is asked for but absent."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
        index = name.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s) "
                                 f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
        return torch.device(name)
    raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
