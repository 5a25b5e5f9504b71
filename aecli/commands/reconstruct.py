"""`aecli reconstruct CKPT [CKPT ...] [--data SRC] --out DIR`: thin CLI over aecli.inference.reconstruct."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli.commands._common import PANEL_DATA, PANEL_OUTPUT, PANEL_RUNTIME, SPLIT_HELP, TileSizeOpt, handle_errors


@handle_errors
def reconstruct(
    checkpoints: Annotated[list[Path], typer.Argument(help="One or more .safetensors checkpoints (one comparison row each).")],
    out: Annotated[Path, typer.Option(help="Output folder: one PNG per input (per checkpoint sub-folder when several) and comparison.png.", rich_help_panel=PANEL_OUTPUT)],
    data: Annotated[Optional[list[str]], typer.Option("--data", help="Image folder, image file(s) (repeat --data), QuickDraw folder, or a dataset name (digits, shapes, mnist, …). Default: the checkpoint's training data.", rich_help_panel=PANEL_DATA)] = None,
    split: Annotated[str, typer.Option(help=SPLIT_HELP, rich_help_panel=PANEL_DATA)] = "auto",
    n: Annotated[Optional[int], typer.Option("--n", help="Use N inputs: the first N, or N at random with --random.", rich_help_panel=PANEL_DATA)] = None,
    random: Annotated[bool, typer.Option("--random", help="Pick the --n inputs at random (reproducible with --seed).", rich_help_panel=PANEL_DATA)] = False,
    seed: Annotated[int, typer.Option(help="Seed for --random.", rich_help_panel=PANEL_DATA)] = 0,
    data_root: Annotated[Optional[str], typer.Option(envvar="AECLI_DATA_ROOT", help="Where torchvision datasets live.", rich_help_panel=PANEL_DATA)] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Run at this size instead of the checkpoint's (fully convolutional models only).", rich_help_panel=PANEL_DATA)] = None,
    class_name: Annotated[Optional[str], typer.Option("--class", help="Conditional models: decode as this class (index or name) instead of the inputs' labels.", rich_help_panel=PANEL_DATA)] = None,
    save_latents: Annotated[Optional[Path], typer.Option(help="Also write the latents (and input names) to this .safetensors file.", rich_help_panel=PANEL_OUTPUT)] = None,
    grid_n: Annotated[int, typer.Option(help="Inputs shown in comparison.png.", rich_help_panel=PANEL_OUTPUT)] = 16,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", rich_help_panel=PANEL_RUNTIME)] = 64,
    device: Annotated[str, typer.Option(envvar="AECLI_DEVICE", help="auto|cpu|cuda|cuda:N.", rich_help_panel=PANEL_RUNTIME)] = "auto",
    tile_size: TileSizeOpt = None,
    ema: Annotated[bool, typer.Option("--ema", help="Use the checkpoints' EMA weights.", rich_help_panel=PANEL_RUNTIME)] = False,
) -> None:
    """Reconstruct images with one or more checkpoints; comparison grid of inputs vs. each checkpoint.

    Writes a PNG per input, named after it (a sub-folder per checkpoint when several are given), and
    comparison.png: row 1 the inputs, then one row per checkpoint (e.g. an AE next to a VAE)."""
    from aecli.inference import reconstruct as run

    source = None if not data else data[0] if len(data) == 1 else data
    result = run(checkpoints, source, out, n=n, random=random, seed=seed,
                 split=split, batch_size=batch_size, device=device, save_latents=save_latents,
                 image_size=image_size, class_name=class_name, ema=ema, grid_n=grid_n, data_root=data_root, tile_size=tile_size)
    typer.echo(result.data_line, err=True)
    for label, files in result.files.items():
        typer.echo(f"{label}: {len(files)} reconstructions, mean PSNR {result.psnr[label]:.2f} dB "
                   f"→ {files[0].parent if files else out}")
    typer.echo(f"comparison grid: {result.comparison}")
    if result.latents is not None:
        typer.echo(f"latents: {result.latents}")


def register(app: typer.Typer) -> None:
    app.command("reconstruct")(reconstruct)
