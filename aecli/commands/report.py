"""`aecli report RUN_DIR ...`: a Markdown (or HTML) report of runs, like the 17-run FFHQ ablation's report (seed 000)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli import completion
from aecli.commands._common import handle_errors


@handle_errors
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by `aecli train`.", autocompletion=completion.run_folders)],
    out: Annotated[Path, typer.Option("--out", help="Report file (.md; with --html, .html).")] = Path("report.md"),
    html: Annotated[bool, typer.Option("--html", help="One self-contained HTML file with embedded images.")] = False,
    sort_by: Annotated[Optional[str], typer.Option(help="Sort the comparison by this figure, e.g. val_loss, psnr, fid.")] = None,
    eval_file: Annotated[Optional[list[Path]], typer.Option("--eval", help="`aecli evaluate --json-out` output(s) to include (repeatable); evaluation*.json files in the run folders are read too.")] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "aecli report",
) -> None:
    """Per run: family, architecture, hyperparameters, loss curves, final grids, evaluation; then one
    comparison table (swept hyperparameters become columns)."""
    from aecli.reporting import collect_runs, render_html, render_markdown

    summaries = collect_runs(runs, eval_file or [], note=lambda text: typer.echo(f"note: {text}", err=True))
    render = render_html if html else render_markdown
    path = render(summaries, out, title, sort_by)
    typer.echo(f"wrote {path} ({len(summaries)} runs)")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
