"""`aecli interpolate CKPT --out walk.png`: thin CLI over aecli.inference.interpolate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli.commands._common import PANEL_DATA, PANEL_OUTPUT, PANEL_RUNTIME, SPLIT_HELP, TileSizeOpt, handle_errors


@handle_errors
def interpolate(
    checkpoint: Annotated[Path, typer.Argument(help="An aecli .safetensors checkpoint.")],
    out: Annotated[Path, typer.Option(help="Grid PNG: one row, from the first end point to the second.", rich_help_panel=PANEL_OUTPUT)],
    from_image: Annotated[Optional[str], typer.Option("--from", help="Start image file.", rich_help_panel=PANEL_DATA)] = None,
    to_image: Annotated[Optional[str], typer.Option("--to", help="End image file.", rich_help_panel=PANEL_DATA)] = None,
    from_index: Annotated[Optional[int], typer.Option(help="Start: item index in --data.", rich_help_panel=PANEL_DATA)] = None,
    to_index: Annotated[Optional[int], typer.Option(help="End: item index in --data.", rich_help_panel=PANEL_DATA)] = None,
    data: Annotated[Optional[str], typer.Option(help="Data source for --from-index/--to-index (default: the checkpoint's training data).", rich_help_panel=PANEL_DATA)] = None,
    split: Annotated[str, typer.Option(help=SPLIT_HELP, rich_help_panel=PANEL_DATA)] = "auto",
    data_root: Annotated[Optional[str], typer.Option(envvar="AECLI_DATA_ROOT", help="Where torchvision datasets live.", rich_help_panel=PANEL_DATA)] = None,
    steps: Annotated[int, typer.Option(help="Frames, end points included.")] = 10,
    method: Annotated[str, typer.Option(help="lerp (straight line) or slerp (great circle; keeps Gaussian latents typical).")] = "lerp",
    seed: Annotated[int, typer.Option(help="Seed of the two prior draws (when no images are given).")] = 0,
    temperature: Annotated[float, typer.Option(help="Scale of the prior draws.")] = 1.0,
    class_name: Annotated[Optional[str], typer.Option("--class", help="Conditional models: the class to decode as.")] = None,
    gif: Annotated[Optional[Path], typer.Option(help="Also write an animated GIF (there and back).", rich_help_panel=PANEL_OUTPUT)] = None,
    frame_ms: Annotated[int, typer.Option(help="GIF frame duration in milliseconds.", rich_help_panel=PANEL_OUTPUT)] = 100,
    device: Annotated[str, typer.Option(envvar="AECLI_DEVICE", help="auto|cpu|cuda|cuda:N.", rich_help_panel=PANEL_RUNTIME)] = "auto",
    tile_size: TileSizeOpt = None,
    ema: Annotated[bool, typer.Option("--ema", help="Use the checkpoint's EMA weights.", rich_help_panel=PANEL_RUNTIME)] = False,
) -> None:
    """Latent walk between two images, two dataset items or two prior draws (grid PNG, --gif).

    End points: --from/--to image files, --from-index/--to-index of --data (default: the checkpoint's
    training data, its validation split), or neither for two random prior draws (VAEs, and the GAN's z;
    plain autoencoders, which have no prior, walk from index 0 to 1 of that split). For attribute vectors and "A - B + C" see `aecli arithmetic`."""
    from aecli.inference import interpolate as run

    result = run(checkpoint, out, from_image=from_image, to_image=to_image, from_index=from_index,
                 to_index=to_index, data=data, split=split, steps=steps, method=method, seed=seed,
                 temperature=temperature, gif=gif, frame_ms=frame_ms, class_name=class_name, device=device,
                 ema=ema, data_root=data_root, tile_size=tile_size)
    if result.data_line:
        typer.echo(result.data_line, err=True)
    typer.echo(f"{method} walk of {steps} steps between {result.mode} end points → {result.out}")
    if result.gif is not None:
        typer.echo(f"animation → {result.gif}")


def register(app: typer.Typer) -> None:
    app.command("interpolate")(interpolate)
