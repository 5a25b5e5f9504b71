"""Evaluation reports: a rich table for people, JSON and CSV (written atomically) for scripts."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any

from aecli.atomic import write_text
from aecli.metrics.class_acc import CLASS_KEYS
from aecli.metrics.evaluate import EvalReport, Row, columns, display_names, format_value, iter_notes


def _row_dict(row: Row, report: EvalReport) -> dict[str, Any]:
    values: dict[str, float | None] = {}
    notes = dict(row.notes)
    for key in columns(report):
        value = row.values.get(key)
        if value is not None and not math.isfinite(value):  # a diverged model: JSON has no NaN/inf
            notes[key] = f"non-finite value ({value})"
            value = None
        values[key] = value
    return {"name": row.name, "family": row.family, "n": row.n, "image_size": row.image_size,
            "samples": row.samples, "device": report.device, "data": row.data, "values": values, "notes": notes}


def to_dict(report: EvalReport) -> dict[str, Any]:
    return {"metrics": report.metrics, "device": report.device, "rows": [_row_dict(r, report) for r in report.rows],
            **report.info, "warnings": report.warnings}


def write_json(report: EvalReport, path: str | os.PathLike[str]) -> None:
    # allow_nan=False: NaN/inf are not JSON; _row_dict turns them into null with a note.
    write_text(path, json.dumps(to_dict(report), indent=2, allow_nan=False) + "\n")


def write_csv(report: EvalReport, path: str | os.PathLike[str]) -> None:
    """One line per row; n/a is an empty cell. Protocol details go in the JSON, not here."""
    keys = columns(report)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["name", "family", "n", "image_size", "samples", "device", *keys, "notes"])
    for row in report.rows:
        values = ["" if row.values.get(k) is None else repr(row.values[k]) for k in keys]
        notes = "; ".join(f"{m}: {n}" for m, n in row.notes.items())
        writer.writerow([row.name, row.family, row.n, row.image_size, row.samples or "", report.device,
                         *values, notes])
    write_text(path, buf.getvalue())


def _cell(row: Row, metric: str) -> str:
    value = row.values.get(metric)
    std = row.values.get(f"{metric}_std")
    if value is None or std is None:
        return format_value(value)
    return f"{format_value(value)}\n± {format_value(std)}"


def _print_per_class(report: EvalReport, console: Any) -> None:
    """class-acc per class, one small table per checkpoint (seed 004's per-class accuracy/confidence)."""
    from rich.table import Table
    from rich.text import Text

    for row, name in zip(report.rows, display_names(report.rows)):
        classes = [k[len("class_acc["):-1] for k in row.values if k.startswith("class_acc[")]
        if not classes:
            continue
        table = Table(title=Text(f"{name}: class-acc per class"))
        for header in ("class", *CLASS_KEYS):
            table.add_column(header, justify="right")
        for c in classes:
            table.add_row(Text(c), *[format_value(row.values.get(f"{key}[{c}]")) for key in CLASS_KEYS])
        console.print(table)


def print_report(report: EvalReport, console: Any) -> None:
    """One row per checkpoint; metric cells are mean ± std; footnotes say how each number was made."""
    from rich.table import Table
    from rich.text import Text

    splits = sorted({r.data["split"] for r in report.rows if r.data.get("split")})
    table = Table(title=f"aecli evaluate ({report.device}{', split ' + ', '.join(splits) if splits else ''})")
    table.add_column("model", overflow="fold")
    table.add_column("family")
    table.add_column("N", justify="right")
    shown = [k for k in columns(report) if not k.endswith("_std") and "[" not in k]  # per class: below
    for key in shown:
        table.add_column(key, justify="right")
    for row, name in zip(report.rows, display_names(report.rows)):
        n = str(row.n) + (f" / {row.samples} gen" if row.samples else "")
        table.add_row(Text(name), row.family, n,
                      *[_cell(row, k) for k in shown])
    console.print(table)
    _print_per_class(report, console)
    for metric, text in report.info.get("definitions", {}).items():
        console.print(f"{metric}: {text}", style="dim", markup=False, highlight=False)
    if "fid_protocol" in report.info:
        console.print(f"FID protocol: {report.info['fid_protocol']}", style="dim", markup=False, highlight=False)
    for note in iter_notes(report):
        console.print(note, style="dim", markup=False, highlight=False)
    for warning in report.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)
