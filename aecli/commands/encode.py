"""`aecli encode CKPT --data SRC --out latents.safetensors`: thin CLI over aecli.inference.encode.encode."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli.commands._common import PANEL_DATA, PANEL_OUTPUT, PANEL_RUNTIME, SPLIT_HELP, handle_errors


@handle_errors
def encode(
    checkpoint: Annotated[Path, typer.Argument(help="An aecli checkpoint with an encoder.")],
    out: Annotated[Path, typer.Option(help="The .safetensors file to write; shards go to OUT.parts/ meanwhile (a rerun resumes from them).", rich_help_panel=PANEL_OUTPUT)],
    data: Annotated[Optional[list[str]], typer.Option("--data", help="Image folder, image file(s) (repeat --data), QuickDraw folder, or a dataset name (digits, shapes, mnist, …). Default: the checkpoint's training data.", rich_help_panel=PANEL_DATA)] = None,
    split: Annotated[str, typer.Option(help="Default all (every image, what a latent-diffusion model trains on); " + SPLIT_HELP, rich_help_panel=PANEL_DATA)] = "all",
    n: Annotated[Optional[int], typer.Option("--n", help="Encode only the first N images.", rich_help_panel=PANEL_DATA)] = None,
    data_root: Annotated[Optional[str], typer.Option(envvar="AECLI_DATA_ROOT", help="Where torchvision datasets live.", rich_help_panel=PANEL_DATA)] = None,
    cache: Annotated[Optional[str], typer.Option(envvar="AECLI_CACHE", help="Folder for the decoded uint8 image cache (memory-mapped; for sets larger than RAM).", rich_help_panel=PANEL_DATA)] = None,
    shard_size: Annotated[int, typer.Option(help="Images per shard: the most a kill can lose.", rich_help_panel=PANEL_OUTPUT)] = 8192,
    scale_to_checkpoint: Annotated[bool, typer.Option("--scale-to-checkpoint", help="Also write the scale factor and shift into the checkpoint's metadata (key latent_scale).", rich_help_panel=PANEL_OUTPUT)] = False,
    seed: Annotated[int, typer.Option(help="Seed of the posterior samples the scale factor is computed from.", rich_help_panel=PANEL_RUNTIME)] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", rich_help_panel=PANEL_RUNTIME)] = 64,
    device: Annotated[str, typer.Option(envvar="AECLI_DEVICE", help="auto|cpu|cuda|cuda:N.", rich_help_panel=PANEL_RUNTIME)] = "auto",
    ema: Annotated[bool, typer.Option("--ema", help="Use the checkpoint's EMA weights.", rich_help_panel=PANEL_RUNTIME)] = False,
) -> None:
    """Encode a data set into one latents file, with the latent-diffusion scale factor.

    The file holds the posterior mean, the log-variance for VAEs, image names and labels; its metadata the
    scale factor (1/std) and shift (mean) of the latents. A rerun resumes from the shards."""
    from aecli.inference.encode import encode as run

    r = run(checkpoint, (data[0] if len(data) == 1 else data) if data else None, out, split=split, n=n, batch_size=batch_size,
            shard_size=shard_size, device=device, ema=ema, seed=seed, data_root=data_root, cache=cache,
            scale_to_checkpoint=scale_to_checkpoint)
    typer.echo(r.data_line, err=True)
    shape = "×".join(map(str, r.latent_shape))
    resumed = f" ({r.resumed_shards} shards resumed)" if r.resumed_shards else ""
    typer.echo(f"{r.count} latents ({shape}) → {r.out}{resumed}")
    scale = "n/a (zero variance)" if r.scale_factor is None else f"{r.scale_factor:.6g}"
    typer.echo(f"scale factor {scale}, shift {r.shift_factor:.6g} (scaled = (z - shift) * scale)")
    if r.written_to_checkpoint:
        typer.echo(f"wrote the scale factor into {checkpoint} (metadata latent_scale)")


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)
