"""`aecli sample CKPT --n N --out PATH`: thin CLI over aecli.inference.sample."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli.commands._common import PANEL_DATA, PANEL_OUTPUT, PANEL_RUNTIME, TileSizeOpt, handle_errors


@handle_errors
def sample(
    checkpoint: Annotated[Path, typer.Argument(help="An aecli .safetensors checkpoint (VAE, flow-VAE, GAN; plain AEs with --fit).")],
    out: Annotated[Path, typer.Option(help="A .png path: one grid. A folder: one PNG per sample (rerun to complete an interrupted run).", rich_help_panel=PANEL_OUTPUT)],
    n: Annotated[int, typer.Option("--n", help="Number of samples.", rich_help_panel=PANEL_OUTPUT)] = 64,
    temperature: Annotated[float, typer.Option(help="Scale of the prior draws (1: the prior itself).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sample i depends only on (seed, i).")] = 0,
    class_name: Annotated[Optional[str], typer.Option("--class", help="Conditional models: sample this class (index or name).")] = None,
    per_class: Annotated[Optional[int], typer.Option(help="Conditional models: M samples of every class (grid: one row per class; folder: one sub-folder per class).")] = None,
    fit: Annotated[Optional[str], typer.Option(help="Fit a Gaussian to the latents of this data and sample from it (plain AEs, which have no prior).", rich_help_panel=PANEL_DATA)] = None,
    fit_kind: Annotated[str, typer.Option(help="auto|diag|full covariance of the --fit Gaussian (auto: full when latents are small enough).", rich_help_panel=PANEL_DATA)] = "auto",
    fit_n: Annotated[int, typer.Option(help="Images of --fit data to encode.", rich_help_panel=PANEL_DATA)] = 10_000,
    fit_split: Annotated[str, typer.Option(help="Split of --fit data: train|val|all.", rich_help_panel=PANEL_DATA)] = "train",
    data_root: Annotated[Optional[str], typer.Option(envvar="AECLI_DATA_ROOT", help="Where torchvision datasets live.", rich_help_panel=PANEL_DATA)] = None,
    nrow: Annotated[Optional[int], typer.Option(help="Grid: images per row (default: square).", rich_help_panel=PANEL_OUTPUT)] = None,
    batch_size: Annotated[int, typer.Option(help="Samples decoded per batch.", rich_help_panel=PANEL_RUNTIME)] = 256,
    device: Annotated[str, typer.Option(envvar="AECLI_DEVICE", help="auto|cpu|cuda|cuda:N.", rich_help_panel=PANEL_RUNTIME)] = "auto",
    tile_size: TileSizeOpt = None,
    ema: Annotated[bool, typer.Option("--ema", help="Use the checkpoint's EMA weights.", rich_help_panel=PANEL_RUNTIME)] = False,
) -> None:
    """Draw samples from the prior (or a Gaussian fitted with --fit) into a grid PNG or a folder.

    A folder gets one PNG per sample, written in batches and atomically; rerunning an interrupted run
    completes it without duplicates (sample i depends only on --seed and i). Plain autoencoders have no
    prior: use --fit DATA to sample from a Gaussian fitted to their latents."""
    from aecli.inference import sample as run

    result = run(checkpoint, out, n=n, temperature=temperature, seed=seed, class_name=class_name,
                 per_class=per_class, fit=fit, fit_kind=fit_kind, fit_n=fit_n, fit_split=fit_split,
                 batch_size=batch_size, device=device, nrow=nrow, ema=ema, data_root=data_root, tile_size=tile_size)
    if result.data_line:
        typer.echo(result.data_line, err=True)
    typer.echo(f"sampling from: {result.prior} (seed {seed})")
    if result.kind == "grid":
        typer.echo(f"{result.count} samples ({result.rows}×{result.columns} grid) → {result.out}")
    else:
        kept = f", {result.skipped} already there" if result.skipped else ""
        typer.echo(f"{result.count} samples in {result.out}: {result.written} written{kept}")


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
