"""`aecli tsne CKPT`: the latent space of a dataset as a 2-D map, plus k-NN accuracy and silhouette."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from aecli.commands._common import PANEL_DATA, PANEL_OUTPUT, PANEL_RUNTIME, SPLIT_HELP, aliased, handle_errors


def _fmt(value: float | None, why: list[str]) -> str:
    return f"{value:.4f}" if value is not None else f"n/a ({why[0]})" if why else "n/a"


@handle_errors
def tsne(
    checkpoint: Annotated[str, typer.Argument(help="An aecli .safetensors checkpoint with an encoder.")],
    data: Annotated[Optional[str], typer.Option(help="Image folder, QuickDraw folder, dataset name or digits|shapes (default: the checkpoint's training data).", rich_help_panel=PANEL_DATA)] = None,
    split: Annotated[str, typer.Option(help=SPLIT_HELP, rich_help_panel=PANEL_DATA)] = "auto",
    n: Annotated[Optional[int], typer.Option("--n", help="Use a random N of the images (reproducible with --seed).", rich_help_panel=PANEL_DATA)] = None,
    data_root: Annotated[Optional[str], typer.Option(envvar="AECLI_DATA_ROOT", help="Where torchvision datasets live.", rich_help_panel=PANEL_DATA)] = None,
    cache: Annotated[Optional[str], typer.Option(envvar="AECLI_CACHE", help="Folder for the decoded uint8 image cache.", rich_help_panel=PANEL_DATA)] = None,
    method: Annotated[str, typer.Option(help="tsne (PCA to 50 dims first) or pca (fast).")] = "tsne",
    perplexity: Annotated[float, typer.Option(help="t-SNE perplexity (lowered, with a note, when not below the image count).")] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed for --n, PCA/t-SNE and the k-NN train/test split.")] = 0,
    out: Annotated[str, typer.Option(help="Figure (.png, .svg or .pdf); the CSV of points goes beside it.", rich_help_panel=PANEL_OUTPUT)] = "tsne.png",
    save_latents: Annotated[Optional[str], typer.Option(help="Also write the raw latents: .safetensors (with names and labels) or .npy.", rich_help_panel=PANEL_OUTPUT)] = None,
    json_out: Annotated[Optional[str], typer.Option("--json-out", help="Write the latent-quality figures and settings as JSON.", rich_help_panel=PANEL_OUTPUT)] = None,
    device: Annotated[str, typer.Option(envvar="AECLI_DEVICE", help="auto|cpu|cuda|cuda:N.", rich_help_panel=PANEL_RUNTIME)] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images encoded per batch.", rich_help_panel=PANEL_RUNTIME)] = 256,
    ema: Annotated[bool, typer.Option("--ema", help="Use the checkpoint's EMA weights.", rich_help_panel=PANEL_RUNTIME)] = False,
) -> None:
    """Encode a dataset, map the latents to 2-D (t-SNE or PCA) coloured by class, and score them:
    k-NN (k=5) accuracy on a held-out 20 % and the silhouette of the labels in latent space."""
    from aecli.analysis.latent_map import LatentMapConfig, latent_map

    cfg = LatentMapConfig(checkpoint=checkpoint, data=data, split=split, n=n, out=out, method=method,
                          perplexity=perplexity, seed=seed, device=device, batch_size=batch_size, ema=ema,
                          data_root=data_root, cache=cache, save_latents=save_latents, json_out=json_out)
    result = latent_map(cfg, progress=True,
                        log=lambda msg: typer.echo(msg if msg.startswith("data: ") else f"note: {msg}", err=True))
    s: dict[str, Any] = result.summary
    q = result.quality
    why = q.notes  # only quality notes: why a figure is n/a
    typer.echo(f"{s['images']} images, latent {'×'.join(map(str, s['latent_shape']))} ({s['latent_dim']} dims)")
    split_text = f", {q.knn_train} train / {q.knn_test} test" if q.knn_accuracy is not None else ""
    chance = f"  (chance {q.chance:.4f})" if q.chance is not None else ""
    typer.echo(f"k-NN accuracy (k={q.knn_k}{split_text}): {_fmt(q.knn_accuracy, why)}{chance}")
    typer.echo(f"silhouette of the labels in latent space: {_fmt(q.silhouette, why)}")
    written = [result.figure, result.table] + [p for p in (save_latents, json_out) if p]
    typer.echo("wrote " + ", ".join(str(p) for p in written))


def register(app: typer.Typer) -> None:
    app.command("tsne", cls=aliased(json="--json-out"))(tsne)
