"""`aecli export CKPT --diffusers DIR`: thin CLI over aecli.interop.ldm_kl.export_diffusers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aecli.commands._common import handle_errors


@handle_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="An ldm-kl .safetensors checkpoint (trained or imported).")],
    diffusers: Annotated[Path, typer.Option("--diffusers", help="Folder to write: config.json + diffusion_pytorch_model.safetensors.")],
    ema: Annotated[bool, typer.Option("--ema", help="Export the checkpoint's EMA weights.")] = False,
) -> None:
    """Export an ldm-kl checkpoint as a diffusers AutoencoderKL folder (`AutoencoderKL.from_pretrained(DIR)`)."""
    from aecli.interop.ldm_kl import export_diffusers

    out = export_diffusers(checkpoint, diffusers, ema=ema)
    typer.echo(f"exported {checkpoint} → {out} (load with diffusers.AutoencoderKL.from_pretrained({str(out)!r}))")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
