"""`aecli decode CKPT LATENTS --out DIR`: thin CLI over aecli.inference.encode.decode."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli.commands._common import PANEL_DATA, PANEL_OUTPUT, PANEL_RUNTIME, handle_errors


@handle_errors
def decode(
    checkpoint: Annotated[Path, typer.Argument(help="The checkpoint whose decoder to use (the one that encoded the latents).")],
    latents: Annotated[Path, typer.Argument(help="An `aecli encode` file, or a .safetensors/.npy tensor [N, *latent shape].")],
    out: Annotated[Path, typer.Option(help="Output folder: one PNG per latent, named after its input image.", rich_help_panel=PANEL_OUTPUT)],
    key: Annotated[Optional[str], typer.Option(help="Tensor to decode in a file that holds several (default: latents, or its only float tensor).", rich_help_panel=PANEL_DATA)] = None,
    scaled: Annotated[bool, typer.Option("--scaled", help="The latents are scaled, (z - shift) * scale, as a diffusion model makes them; undo that first (factor from the file, else the checkpoint).", rich_help_panel=PANEL_DATA)] = False,
    class_name: Annotated[Optional[str], typer.Option("--class", help="Conditional models: decode as this class (index or name) instead of the file's labels.", rich_help_panel=PANEL_DATA)] = None,
    batch_size: Annotated[int, typer.Option(help="Latents per batch.", rich_help_panel=PANEL_RUNTIME)] = 64,
    device: Annotated[str, typer.Option(envvar="AECLI_DEVICE", help="auto|cpu|cuda|cuda:N.", rich_help_panel=PANEL_RUNTIME)] = "auto",
    ema: Annotated[bool, typer.Option("--ema", help="Use the checkpoint's EMA weights.", rich_help_panel=PANEL_RUNTIME)] = False,
) -> None:
    """Decode latents (from `aecli encode`, or a diffusion model) into images.

    For the same images the PNGs equal `aecli reconstruct`'s."""
    from aecli.inference.encode import decode as run

    r = run(checkpoint, latents, out, key=key, scaled=scaled, class_name=class_name, batch_size=batch_size,
            device=device, ema=ema)
    typer.echo(f"{len(r.files)} images → {r.out}" + (" (unscaled with the scale factor first)" if r.unscaled else ""))


def register(app: typer.Typer) -> None:
    app.command("decode")(decode)
