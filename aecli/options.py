"""Declaring a command-line option once, on the config dataclass field it fills.

A field made with :func:`option` carries its default and its help; `aecli train`'s Typer options are
generated from these fields (aecli.commands.train), so the default, the help and the option's name
cannot drift between the command line, the TOML file, config.json and the library. Torch-free: the
CLI reads these declarations to print --help.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OptionInfo:
    help: str
    flag: str | None = None  # the option's spelling when it is not --field-name (--ema-decay)
    param: str | None = None  # the CLI parameter's name when it is not the field's (tracker → trackers)
    envvar: str | None = None
    flag_only: bool = False  # a bool shown as --flag alone, without --no-flag
    complete: str | None = None  # name of the aecli.completion function that completes its values
    resumable: bool = False  # a resumed run may take a new value (it cannot change the result)


def option(default: Any, help: str, **info: Any) -> Any:
    """A dataclass field with its CLI declaration in ``metadata["option"]``. A list default is copied
    per instance (``default_factory``)."""
    meta = {"option": OptionInfo(help, **info)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def option_info(f: dataclasses.Field) -> OptionInfo:
    return f.metadata["option"]


def need(cond: bool, message: str) -> None:
    """One bound of one option: raise UsageError(message) when it does not hold."""
    if not cond:
        from aecli.errors import UsageError

        raise UsageError(message)
