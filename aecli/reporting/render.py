"""Markdown (images copied beside it) and self-contained HTML (images embedded) renderings."""

from __future__ import annotations

import base64
import html
import shutil
from pathlib import Path
from typing import Any

from aecli.atomic import write_text
from aecli.errors import UsageError
from aecli.reporting.collect import HYPER_KEYS, RunSummary, config_value, swept_keys

LOWER_IS_BETTER = ("loss", "recon", "kl", "kl_per_image", "l1", "mse", "lpips", "fid", "kid", "rfid")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return "—" if value is None else str(value)


def _sort_value(run: RunSummary, key: str) -> float | None:
    value = run.evaluation.get(key, run.final.get(key))
    return float(value) if isinstance(value, (int, float)) else None


def sort_runs(runs: list[RunSummary], sort_by: str | None) -> list[RunSummary]:
    if not sort_by:
        return runs
    if all(_sort_value(r, sort_by) is None for r in runs):
        known = sorted({k for r in runs for k in (*r.final, *r.evaluation)})
        raise UsageError(f"--sort-by {sort_by}: no run has that figure; choose from {', '.join(known) or 'none'}")
    descending = not any(sort_by.startswith(p) or sort_by.endswith(p) for p in LOWER_IS_BETTER)
    have = [r for r in runs if _sort_value(r, sort_by) is not None]
    missing = [r for r in runs if _sort_value(r, sort_by) is None]
    return sorted(have, key=lambda r: _sort_value(r, sort_by), reverse=descending) + missing  # type: ignore[arg-type]


def comparison_table(runs: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """One row per run: name, family, swept values, final losses, evaluation figures."""
    swept = swept_keys(runs)
    losses = sorted({k for r in runs for k in r.final if k.startswith("val_")}) or \
        sorted({k for r in runs for k in r.final})
    metrics = sorted({k for r in runs for k in r.evaluation if not k.endswith("_std")})
    header = ["run", "family", "params", *swept, *losses, *metrics]
    rows = [[r.name, r.family, f"{r.architecture['parameters']:,}", *[_fmt(config_value(r, k)) for k in swept],
             *[_fmt(r.final.get(k)) for k in losses], *[_fmt(r.evaluation.get(k)) for k in metrics]] for r in runs]
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out)


def _run_tables(run: RunSummary) -> list[tuple[str, list[list[str]]]]:
    arch = [[k, _fmt(v)] for k, v in run.architecture.items()]
    hyper = [[k, _fmt(run.config.get(k))] for k in HYPER_KEYS if run.config.get(k) not in (None, 0, 0.0, "")]
    hyper += [[f"model.{k}", _fmt(v)] for k, v in run.config.get("model", {}).items()]
    tables = [("Architecture", arch), ("Hyperparameters", hyper)]
    if run.final:
        tables.append(("Final losses", [[k, _fmt(v)] for k, v in sorted(run.final.items())]))
    if run.evaluation:
        tables.append(("Evaluation", [[k, _fmt(v)] for k, v in sorted(run.evaluation.items())]))
    return tables


def render_markdown(runs: list[RunSummary], out: Path, title: str, sort_by: str | None) -> Path:
    """Write ``out`` (Markdown) and copy each run's images into ``<out stem>_assets/<run>/``."""
    assets = out.parent / f"{out.stem}_assets"
    lines = [f"# {title}", ""]
    ordered = sort_runs(runs, sort_by)
    header, rows = comparison_table(ordered)
    lines += ["## Comparison" + (f" (sorted by {sort_by})" if sort_by else ""), "", _md_table(header, rows), ""]
    for run in runs:
        lines += [f"## {run.name}: `{run.family}`", "", f"Run folder: `{run.path}`", ""]
        for heading, table in _run_tables(run):
            lines += [f"### {heading}", "", _md_table(["key", "value"], table), ""]
        for label, src in run.images.items():
            dest = assets / run.name / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            lines += [f"### {label.capitalize()}", "", f"![{run.name} {label}]({dest.relative_to(out.parent).as_posix()})", ""]
    write_text(out, "\n".join(lines))
    return out


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(runs: list[RunSummary], out: Path, title: str, sort_by: str | None) -> Path:
    """One self-contained HTML file: images embedded as base64 data URIs."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}</style>",
             f"</head><body><h1>{html.escape(title)}</h1>"]
    header, rows = comparison_table(sort_runs(runs, sort_by))
    parts.append(f"<h2>Comparison{' (sorted by ' + html.escape(sort_by) + ')' if sort_by else ''}</h2>")
    parts.append(_html_table(header, rows))
    for run in runs:
        parts.append(f"<h2>{html.escape(run.name)}: <code>{html.escape(run.family)}</code></h2>")
        for heading, table in _run_tables(run):
            parts.append(f"<h3>{heading}</h3>" + _html_table(["key", "value"], table))
        for label, src in run.images.items():
            data = base64.b64encode(src.read_bytes()).decode("ascii")
            parts.append(f"<h3>{html.escape(label.capitalize())}</h3>"
                         f"<img alt='{html.escape(run.name)} {html.escape(label)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    write_text(out, "\n".join(parts))
    return out
