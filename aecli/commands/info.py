"""`aecli info CKPT`: what a checkpoint holds, without building the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from aecli.commands._common import handle_errors, stdout_is_terminal


def checkpoint_info(path: Path) -> dict[str, Any]:
    """Library entry point: a JSON-able summary of a checkpoint.

    The model is rebuilt and its weights checked, so every way a file can be broken is reported here.
    """
    from aecli.checkpoint.format import load_model
    from aecli.errors import CheckpointError
    from aecli.hashing import sha256_file
    from aecli.interop.ldm_kl import latent_scale

    header = load_model(path, "cpu").header
    try:
        scale = latent_scale(header.metadata, header.config)
    except CheckpointError as exc:  # an optional entry: report it, show the rest
        scale = {"error": str(exc)}
    return {
        "path": str(path),
        "family": header.family,
        "format_version": header.format_version,
        "config": header.config,
        "data": header.data.to_dict(),
        "training": header.training,
        "parameters": header.parameter_count,
        "has_ema": header.has_ema,
        "file_size": header.file_size,
        "sha256": sha256_file(path),
        "aecli_version": header.metadata.get("aecli_version", ""),
        "torch_version": header.metadata.get("torch_version", ""),
        "created": header.metadata.get("created", ""),
        # What a latent-diffusion model multiplies latents by (`encode --scale-to-checkpoint`, ldm-kl's config).
        "latent_scale": scale,
    }


@handle_errors
def info(
    checkpoint: Annotated[Path, typer.Argument(help="An aecli .safetensors checkpoint.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show a checkpoint's family, config, data spec, training summary, size and SHA-256."""
    from aecli.untrusted import json_safe, printable

    summary = checkpoint_info(checkpoint)
    if json_out:
        # Strict JSON: NaN/inf (a diverged run's losses) become null; control characters are escaped.
        typer.echo(json.dumps(json_safe(summary), indent=2, allow_nan=False))
        return
    rows = [(key, f"{summary[key]:,}" if key in ("parameters", "file_size") else str(summary[key]))
            for key in ("family", "format_version", "parameters", "has_ema", "file_size", "sha256",
                        "aecli_version", "torch_version", "created")]
    if summary["latent_scale"] is not None:
        rows.append(("latent_scale", json.dumps(summary["latent_scale"])))
    for section in ("config", "data", "training"):
        rows += [(f"{section}.{key}", json.dumps(value) if not isinstance(value, str) else value)
                 for key, value in summary[section].items()]
    if not stdout_is_terminal():
        # Piped or redirected: "key: value" lines, never wrapped (a SHA-256 stays on one line for grep/cut).
        typer.echo("\n".join(f"{printable(key)}: {printable(value)}" for key, value in rows))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Everything shown comes from the file: as plain Text (no rich markup) with control characters
    # escaped, so crafted metadata cannot move the cursor, clear the screen or set the window title.
    def cell(value: Any) -> Text:
        return Text(printable(value))

    table = Table(title=cell(checkpoint), show_header=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(cell(key), cell(value))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
