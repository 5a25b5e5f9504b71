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
    from aecli.checkpoint import read_header
    from aecli.interop.ldm_kl import export_diffusers, latent_scale

    out = export_diffusers(checkpoint, diffusers, ema=ema)
    header = read_header(checkpoint)
    scale = latent_scale(header.metadata, header.config)
    assert scale is not None  # export_diffusers accepts ldm-kl only, whose config has a scaling_factor
    typer.echo(f"exported {checkpoint} → {out} (scaling_factor {scale['scaling_factor']:.6g}, shift_factor "
               f"{scale['shift_factor']:.6g} from {scale['from']}; load with "
               f"diffusers.AutoencoderKL.from_pretrained({str(out)!r}))")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
