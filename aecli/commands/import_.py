"""`aecli import SRC --out FILE.safetensors`: thin CLI over aecli.interop.ldm_kl.import_checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli.commands._common import handle_errors


@handle_errors
def import_(
    source: Annotated[str, typer.Argument(help="A diffusers AutoencoderKL folder, an LDM/SD VAE .safetensors (or .ckpt/.pt/.bin, read with weights_only), or hf:OWNER/NAME (hf:OWNER/NAME/SUBFOLDER for a sub-folder).")],
    out: Annotated[Path, typer.Option(help="The aecli checkpoint to write (.safetensors).")],
    image_size: Annotated[Optional[int], typer.Option(help="Image size the checkpoint records (default: config.json's sample_size, else 256).")] = None,
    scaling_factor: Annotated[Optional[float], typer.Option(help="Latent scaling factor (default: config.json's, else 0.18215 as in SD 1.x/2.x; SDXL: 0.13025).")] = None,
    norm_num_groups: Annotated[int, typer.Option(min=1, help="Single-file LDM VAEs: GroupNorm groups (not stored in the weights; 32 for every SD VAE).")] = 32,
) -> None:
    """Import a Stable Diffusion / LDM KL autoencoder as an aecli `ldm-kl` checkpoint.

    The result works with reconstruct, evaluate, encode, tsne, … like a trained checkpoint (images in
    [-1, 1], 3 channels). Offline machines: download the folder elsewhere and import it from disk."""
    from aecli.interop.ldm_kl import import_checkpoint

    path, config = import_checkpoint(source, out, image_size=image_size, scaling_factor=scaling_factor,
                                     norm_num_groups=norm_num_groups)
    typer.echo(f"imported {source} → {path} (ldm-kl, block_out_channels {list(config['block_out_channels'])}, "
               f"latent_channels {config['latent_channels']}, {config['image_size']}px, "
               f"scaling_factor {config['scaling_factor']})")


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
