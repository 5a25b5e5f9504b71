"""`aecli weights check|download`: the pretrained files LPIPS and FID need, for offline compute nodes."""

from __future__ import annotations

import math
from typing import Annotated, Optional

import typer

from aecli import completion
from aecli.commands._common import PANEL_WEIGHTS, aliased, handle_errors, parse_list, stdout_is_terminal
from aecli.errors import UsageError, WeightsMissingError
from aecli.metrics.registry import weights_metrics_help

weights_app = typer.Typer(
    help="Check or fetch the pretrained files (LPIPS backbones, torch-fidelity's Inception). Files live in "
    "$TORCH_HOME/hub/checkpoints (torch.hub.get_dir()); fetch them on a login node, then export TORCH_HOME "
    "in job scripts. evaluate and train --lpips never download.",
    no_args_is_help=True,
)

MetricsOpt = Annotated[str, typer.Option("--metrics", autocompletion=completion.weight_metrics,
                                         help=weights_metrics_help())]
NetOpt = Annotated[str, typer.Option(help="LPIPS trunk(s), comma list of alex, vgg, squeeze, or all.")]
BackendOpt = Annotated[str, typer.Option(help="FID backend whose Inception file to use: torch-fidelity or "
                                         "clean-fid (see `aecli evaluate --fid-backend`).")]
DirOpt = Annotated[Optional[str], typer.Option(envvar="AECLI_WEIGHTS_DIR", help="Folder with the files (default "
                                               "$TORCH_HOME/hub/checkpoints).", rich_help_panel=PANEL_WEIGHTS)]


def _needs(text: str) -> list[str]:
    """The pretrained file groups of the --metrics list, refusing names `aecli evaluate` does not know."""
    from aecli.metrics import METRICS
    from aecli.metrics.registry import pretrained_needs

    wanted = parse_list(text)
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    return pretrained_needs(wanted) if wanted else []


def _nets(text: str) -> list[str]:
    from aecli.weights import LPIPS_NETS, check_net

    nets = list(LPIPS_NETS) if text.strip() == "all" else parse_list(text)
    return [check_net(n) for n in nets] or ["alex"]


@handle_errors
def check(
    metrics: MetricsOpt = "lpips,fid",
    lpips_net: NetOpt = "alex",
    weights_dir: DirOpt = None,
    inception_weights: Annotated[Optional[str], typer.Option(help="Check this Inception file instead.",
                                                             rich_help_panel=PANEL_WEIGHTS)] = None,
    lpips_weights: Annotated[Optional[str], typer.Option(help="Check this LPIPS backbone file instead.",
                                                         rich_help_panel=PANEL_WEIGHTS)] = None,
    fid_backend: BackendOpt = "torch-fidelity",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (one object per file) instead of text.")] = False,
) -> None:
    """Per file: present, readable, SHA-256 (or a strict load) OK. Never touches the network.

    Piped or redirected: one tab-separated line per file (status, path, use, detail), never wrapped."""
    from aecli.pretrained import check_files
    from aecli.weights import export_line, remedy

    wanted = _needs(metrics)
    statuses, seen = [], set()
    for net in _nets(lpips_net):
        for status in check_files(wanted, net, weights_dir, inception_weights, lpips_weights, fid_backend):
            if status.need.path not in seen:
                seen.add(status.need.path)
                statuses.append(status)
    if json_out:
        import json

        typer.echo(json.dumps([{"file": str(s.need.path), "used_for": s.need.purpose, "ok": s.ok,
                                "detail": s.detail} for s in statuses], indent=2))
    elif not stdout_is_terminal():
        for s in statuses:
            typer.echo("\t".join(["ok" if s.ok else "MISSING", str(s.need.path), s.need.purpose, s.detail]))
    else:  # a terminal: the path whole on its own line, never broken mid-word
        for s in statuses:
            status = typer.style("ok     " if s.ok else "MISSING", fg="green" if s.ok else "red", bold=not s.ok)
            typer.echo(f"{status}  {s.need.purpose}: {s.detail}\n         {s.need.path}")
    if not json_out:
        typer.echo(export_line(weights_dir))
    bad = [s for s in statuses if not s.ok]
    if bad:
        listing = "; ".join(f"{s.need.path}: {s.detail}" for s in bad)
        raise WeightsMissingError(f"{len(bad)} file(s) not usable: {listing}. Fix: "
                                  + remedy(wanted, lpips_net, weights_dir, fid_backend))


@handle_errors
def download(
    metrics: MetricsOpt = "lpips,fid",
    lpips_net: NetOpt = "alex",
    weights_dir: DirOpt = None,
    timeout: Annotated[float, typer.Option(help="Network timeout in seconds per read.")] = 120.0,
    fid_backend: BackendOpt = "torch-fidelity",
) -> None:
    """Fetch the missing files (SHA-256 verified) where internet exists, e.g. a login node."""
    from aecli.weights import download as fetch
    from aecli.weights import export_line

    if not (timeout > 0 and math.isfinite(timeout)):
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout}")
    wanted = _needs(metrics)
    done = set()
    for net in _nets(lpips_net):
        for path in fetch(wanted, net, weights_dir, timeout_s=timeout, fid_backend=fid_backend):
            if path not in done:
                done.add(path)
                typer.echo(f"ok  {path}")
    typer.echo("In job scripts (compute nodes without internet):")
    typer.echo(export_line(weights_dir))


weights_app.command("check", cls=aliased(m="--metrics"))(check)
weights_app.command("download", cls=aliased(m="--metrics"))(download)


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
