"""`aecli report`: the seed 000 document, generated from run folders."""

from aecli.reporting.collect import RunSummary, collect_runs
from aecli.reporting.render import render_html, render_markdown

__all__ = ["RunSummary", "collect_runs", "render_html", "render_markdown"]
