"""`aecli models`: the table of registered model families."""

from __future__ import annotations

from typing import Annotated

import typer

from aecli.commands._common import handle_errors


def supported_commands(cls: type) -> list[str]:
    """Which commands a family supports, derived from its capabilities."""
    cmds = ["train"]
    if cls.has_encoder:
        cmds += ["reconstruct", "encode", "evaluate", "tsne"]
    elif cls.has_prior:
        cmds += ["evaluate"]
    if cls.has_prior or (cls.has_encoder and cls.decodes_latent):
        cmds.append("sample" if cls.has_prior else "sample --fit")
    if cls.decodes_latent:
        cmds += ["decode", "interpolate"]
        if cls.has_encoder:
            cmds.append("arithmetic")
    return cmds


def family_rows() -> list[dict[str, object]]:
    import dataclasses

    from aecli.models import get_family, list_models

    rows = []
    for name in list_models():
        cls = get_family(name)
        options = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                   for f in dataclasses.fields(cls.Config)}
        rows.append({"name": name, "description": cls.description, "seed": cls.seed,
                     "options": options, "commands": supported_commands(cls)})
    return rows


@handle_errors
def models(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every model family: what it is, its seed, options with defaults, supported commands."""
    rows = family_rows()
    if json_out:
        import json

        typer.echo(json.dumps(rows, indent=2, default=list))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="aecli model families", show_lines=True)
    for col in ("family", "what it is", "seed", "options (defaults)", "commands"):
        table.add_column(col, overflow="fold")
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())  # type: ignore[union-attr]
        table.add_row(str(r["name"]), str(r["description"]), str(r["seed"]), opts,
                      ", ".join(r["commands"]))  # type: ignore[arg-type]
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
