"""`aecli arithmetic CKPT`: latent arithmetic (seed 002), thin CLI over aecli.inference.arithmetic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli.commands._common import PANEL_DATA, PANEL_OUTPUT, PANEL_RUNTIME, TileSizeOpt, handle_errors, parse_floats
from aecli.errors import UsageError


@handle_errors
def arithmetic(
    checkpoint: Annotated[Path, typer.Argument(help="An aecli .safetensors checkpoint with an encoder (AE/VAE families).")],
    out: Annotated[Path, typer.Option(help="Grid PNG.", rich_help_panel=PANEL_OUTPUT)],
    plus: Annotated[Optional[str], typer.Option(help="Folder WITH the attribute (e.g. faces with glasses).", rich_help_panel=PANEL_DATA)] = None,
    minus: Annotated[Optional[str], typer.Option(help="Folder WITHOUT the attribute.", rich_help_panel=PANEL_DATA)] = None,
    apply: Annotated[Optional[str], typer.Option(help="Folder (or image) to edit: every image gets the attribute vector added. Default: the first --n (8) held-out images of the checkpoint's training data.", rich_help_panel=PANEL_DATA)] = None,
    scale: Annotated[str, typer.Option(help="Comma-separated scales of the attribute vector, one grid column each (0 = plain reconstruction).")] = "1",
    n: Annotated[Optional[int], typer.Option("--n", help="Edit only the first N images of --apply.", rich_help_panel=PANEL_DATA)] = None,
    expr: Annotated[Optional[str], typer.Option(help="Instead: an expression over images or folders (mean latent), e.g. \"glasses_man.png - man.png + woman.png\" or \"0.5*a.png + 0.5*b.png\".", rich_help_panel=PANEL_DATA)] = None,
    class_name: Annotated[Optional[str], typer.Option("--class", help="Conditional models: decode as this class.")] = None,
    save_vector: Annotated[Optional[Path], typer.Option(help="Also save the attribute vector to this .safetensors file.", rich_help_panel=PANEL_OUTPUT)] = None,
    data_root: Annotated[Optional[str], typer.Option(envvar="AECLI_DATA_ROOT", help="Where torchvision datasets live.", rich_help_panel=PANEL_DATA)] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", rich_help_panel=PANEL_RUNTIME)] = 64,
    device: Annotated[str, typer.Option(envvar="AECLI_DEVICE", help="auto|cpu|cuda|cuda:N.", rich_help_panel=PANEL_RUNTIME)] = "auto",
    tile_size: TileSizeOpt = None,
    ema: Annotated[bool, typer.Option("--ema", help="Use the checkpoint's EMA weights.", rich_help_panel=PANEL_RUNTIME)] = False,
) -> None:
    """Latent arithmetic: attribute vectors from folders (seed 002's glasses) or "A - B + C".

    Attribute vector: mean latent of --plus minus mean latent of --minus, added at each --scale to every
    image of --apply; the grid shows each original followed by its edits. Example:
    aecli arithmetic vae.safetensors --plus glasses/ --minus no_glasses/ --apply faces/ --scale 0,1,2 --out edit.png

    Expression: --expr "A - B + C" over image files (or folders, which contribute their mean latent);
    the grid shows the operands and the decoded result.
    """
    from aecli.inference import arithmetic as run_vector
    from aecli.inference import expression as run_expr

    folders = (plus, minus, apply)
    if expr is not None:
        if any(f is not None for f in folders):
            raise UsageError("give either --expr or --plus/--minus/--apply, not both")
        result = run_expr(checkpoint, expr, out, batch_size=batch_size, device=device, class_name=class_name,
                          ema=ema, data_root=data_root, tile_size=tile_size)
    else:
        if plus is None or minus is None:
            raise UsageError("give --plus DIR --minus DIR [--apply DIR] (attribute vector), or --expr \"A - B + C\"")
        result = run_vector(checkpoint, out, plus=plus, minus=minus, apply=apply,
                            scales=parse_floats(scale, "--scale"), n=n, batch_size=batch_size, device=device,
                            class_name=class_name, ema=ema, save_vector=save_vector, data_root=data_root,
                            tile_size=tile_size)
    for line in result.data_lines:
        typer.echo(line, err=True)
    typer.echo(f"{result.description}\n{result.rows}×{result.columns} grid → {result.out}")


def register(app: typer.Typer) -> None:
    app.command("arithmetic")(arithmetic)
