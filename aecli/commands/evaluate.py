"""`aecli evaluate`: reconstruction, perceptual, generative and latent metrics for one checkpoint or a
sweep (one row each), or for paired image folders (--pred/--ref)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli import completion
from aecli.commands._common import (PANEL_DATA, PANEL_OUTPUT, PANEL_RUNTIME, PANEL_WEIGHTS, SPLIT_HELP,
                                    aliased, handle_errors, parse_list, stdout_is_terminal)
from aecli.errors import UsageError
from aecli.metrics import DEFAULT_METRICS
from aecli.metrics.registry import metrics_help

METRICS_HELP = metrics_help()


@handle_errors
def evaluate(
    checkpoints: Annotated[Optional[list[Path]], typer.Argument(
        help="One or more aecli checkpoints; each becomes one row.", show_default=False)] = None,
    metrics: Annotated[Optional[str], typer.Option("--metrics", help=METRICS_HELP, show_default=False,
                                                   autocompletion=completion.metrics)] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", help="Evaluation data (folder, file list, digits, mnist, ...). Default: the checkpoint's "
        "training data.", rich_help_panel=PANEL_DATA)] = None,
    split: Annotated[str, typer.Option(help=SPLIT_HELP, rich_help_panel=PANEL_DATA)] = "auto",
    n: Annotated[Optional[int], typer.Option("--n", help="Use at most N images of the split.",
                                             rich_help_panel=PANEL_DATA)] = None,
    data_root: Annotated[Optional[str], typer.Option(envvar="AECLI_DATA_ROOT", help="Where torchvision datasets live.",
                                                     rich_help_panel=PANEL_DATA)] = None,
    pred: Annotated[Optional[Path], typer.Option(help="Paired mode: folder of predicted images (no checkpoint).",
                                                 rich_help_panel=PANEL_DATA)] = None,
    ref: Annotated[Optional[Path], typer.Option(help="Paired mode: folder of reference images, paired with --pred "
                                                "by relative file name (extension ignored).",
                                                rich_help_panel=PANEL_DATA)] = None,
    skip_unpaired: Annotated[bool, typer.Option(help="Paired mode: skip unpaired or size-mismatched files "
                                                "instead of failing.", rich_help_panel=PANEL_DATA)] = False,
    samples: Annotated[Optional[int], typer.Option(help="Prior draws for fid/is/kid (default: as many as "
                                                   "evaluation images; < 2048 gives biased FID).")] = None,
    class_samples: Annotated[int, typer.Option(help="class-acc: draws per class.")] = 100,
    lpips_net: Annotated[str, typer.Option(help="LPIPS trunk: alex, vgg or squeeze.",
                                           rich_help_panel=PANEL_WEIGHTS)] = "alex",
    weights_dir: Annotated[Optional[str], typer.Option(envvar="AECLI_WEIGHTS_DIR", help="Folder with the pretrained files (default "
                                                       "$TORCH_HOME/hub/checkpoints).",
                                                       rich_help_panel=PANEL_WEIGHTS)] = None,
    inception_weights: Annotated[Optional[str], typer.Option(help="Use this Inception state dict (strictly "
                                                             "loaded) instead of torch-fidelity's file; with "
                                                             "--fid-backend clean-fid its TorchScript file.",
                                                             rich_help_panel=PANEL_WEIGHTS)] = None,
    fid_backend: Annotated[str, typer.Option(help="FID/KID implementation: torch-fidelity (also IS) or clean-fid; "
                                             "each number's note names the protocol that made it.",
                                             rich_help_panel=PANEL_WEIGHTS,
                                             autocompletion=completion.fid_backends)] = "torch-fidelity",
    clean_fid_mode: Annotated[str, typer.Option(help="clean-fid's protocol: clean (PIL bicubic resize) or "
                                                "legacy_tensorflow (the original TF FID's resize).",
                                                rich_help_panel=PANEL_WEIGHTS)] = "clean",
    lpips_weights: Annotated[Optional[str], typer.Option(help="Use this torchvision backbone state dict for "
                                                         "LPIPS (strictly loaded).",
                                                         rich_help_panel=PANEL_WEIGHTS)] = None,
    cache_dir: Annotated[Optional[str], typer.Option("--cache", envvar="AECLI_CACHE", help="Cache folder, as in "
                                                     "train and tsne: here the reference Inception features and "
                                                     "class-acc classifiers (default <weights dir>/aecli-fid-ref).",
                                                     rich_help_panel=PANEL_WEIGHTS, show_default=False)] = None,
    active_threshold: Annotated[float, typer.Option(help="latent: a dimension is active when its variance "
                                                    "over the data exceeds this.")] = 0.01,
    ema: Annotated[bool, typer.Option("--ema", help="Evaluate the checkpoints' EMA weights.")] = False,
    baseline: Annotated[Optional[str], typer.Option(help="pca: after each checkpoint, a row for PCA with as many "
                                                    "components as the checkpoint's code has numbers (pca:K: K), "
                                                    "fitted on the train split: better than linear?")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", rich_help_panel=PANEL_RUNTIME)] = 64,
    device: Annotated[str, typer.Option(envvar="AECLI_DEVICE", help="auto|cpu|cuda|cuda:N.", rich_help_panel=PANEL_RUNTIME)] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the prior draws (fid/is/kid, class-acc).",
                                      rich_help_panel=PANEL_RUNTIME)] = 0,
    codebook_plots: Annotated[Optional[Path], typer.Option(help="codebook: write each checkpoint's per-code "
                                                           "usage histogram here (<run>_<checkpoint>_codebook.png).",
                                                           rich_help_panel=PANEL_OUTPUT)] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json-out", help="Write values, N, sizes, device, library "
                                                      "versions, weights hashes and the FID protocol as JSON.",
                                                      rich_help_panel=PANEL_OUTPUT)] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv-out", help="Write one CSV line per row.",
                                                     rich_help_panel=PANEL_OUTPUT)] = None,
) -> None:
    """Score checkpoints (one row each, one pass over the data per checkpoint, reference statistics
    cached) or paired folders. PSNR/SSIM/LPIPS are per image, then mean ± std. Never downloads:
    missing pretrained files fail at once with the `aecli weights download` command to run."""
    paired = _check_inputs(checkpoints, pred, ref, baseline, json_path, csv_path)
    metric_list = _metric_list(metrics, lpips_net, weights_dir, inception_weights, lpips_weights, fid_backend)

    from rich.console import Console

    from aecli.metrics.evaluate import EvalConfig, evaluate_checkpoints, evaluate_folders
    from aecli.metrics.report import print_report, write_csv, write_json

    err = Console(stderr=True)

    cfg = EvalConfig(metrics=metric_list, data=data, split=split, n=n, batch_size=batch_size, device=device,
                     lpips_net=lpips_net, samples=samples, weights_dir=weights_dir,
                     inception_weights=inception_weights, lpips_weights=lpips_weights, cache_dir=cache_dir,
                     ema=ema, active_threshold=active_threshold, data_root=data_root, seed=seed,
                     class_samples=class_samples, codebook_plots=str(codebook_plots) if codebook_plots else None,
                     baseline=baseline, fid_backend=fid_backend, clean_fid_mode=clean_fid_mode)

    def log(message: str) -> None:
        err.print(message, style="dim", markup=False, highlight=False, soft_wrap=True)  # one line each

    if paired:
        report = evaluate_folders(str(pred), str(ref), cfg, skip_unpaired, log=log)
    else:
        report = evaluate_checkpoints(checkpoints or [], cfg, log=log)
    # Piped or redirected output gets a wide table instead of one folded to 80 columns.
    print_report(report, Console(width=None if stdout_is_terminal() else 240))
    if json_path:
        write_json(report, json_path)
    if csv_path:
        write_csv(report, csv_path)


def _check_inputs(checkpoints: Optional[list[Path]], pred: Optional[Path], ref: Optional[Path],
                  baseline: Optional[str], json_path: Optional[Path], csv_path: Optional[Path]) -> bool:
    """Whether this is paired mode (--pred/--ref); a usage error for a bad combination or an unwritable
    output file, before the (long) evaluation."""
    paired = pred is not None or ref is not None
    if paired and (pred is None or ref is None):
        raise UsageError("paired mode needs both --pred DIR and --ref DIR")
    if paired and baseline:
        raise UsageError("--baseline needs checkpoints (it fits PCA on a checkpoint's training data), not --pred/--ref")
    if paired and checkpoints:
        raise UsageError("give checkpoints or --pred/--ref, not both")
    if not paired and not checkpoints:
        raise UsageError("give one or more checkpoints, or --pred DIR --ref DIR")
    from aecli.atomic import check_writable

    for option, path in (("--json-out", json_path), ("--csv-out", csv_path)):
        if path is not None:
            check_writable(path, option)
    return paired


def _metric_list(metrics: Optional[str], lpips_net: str, weights_dir: Optional[str], inception_weights: Optional[str],
                 lpips_weights: Optional[str], fid_backend: str) -> list[str]:
    """The metrics to compute, their pretrained files checked before torch is even imported: a missing file
    fails in well under a second. The default works offline: a default metric whose files are missing is
    skipped, with a note."""
    from aecli.metrics.registry import parse_metrics, pretrained_needs, split_available
    from aecli.weights import require_weights

    if metrics is None:
        metric_list, _, note = split_available(parse_list(DEFAULT_METRICS), lpips_net, weights_dir,
                                               inception_weights, lpips_weights)
        if note:
            typer.echo(f"note: {note}", err=True)  # one line, never folded at 80 columns
        return metric_list
    metric_list = parse_metrics(parse_list(metrics))
    require_weights(pretrained_needs(metric_list), lpips_net, weights_dir, inception_weights, lpips_weights,
                    fid_backend=fid_backend)
    return metric_list


def register(app: typer.Typer) -> None:
    app.command("evaluate", cls=aliased(m="--metrics", cache_dir="--cache", json="--json-out", csv="--csv-out"))(evaluate)
