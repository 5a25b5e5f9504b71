"""`aecli report`: per-run tables, image links that resolve, sweep columns, self-contained HTML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import tiny_kwargs
from typer.testing import CliRunner

from aecli.cli import app
from aecli.training import TrainConfig, train

runner = CliRunner()


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    model = tiny_kwargs("conv-vae", 32, 1)
    model.pop("image_size", None)
    model.pop("channels", None)
    runs = []
    for beta in (0.001, 0.01, 0.1):  # a β sweep like seed 000's C1–C3
        out = root / f"vae_beta{beta}"
        train(TrainConfig(family="conv-vae", model=model, data="shapes:40", image_size=32, channels=1, epochs=1,
                          batch_size=16, beta=beta, out=str(out), log_every=1000, workers=1))
        runs.append(out)
    # an `aecli evaluate --json` file for the first run (the same shape evaluate writes)
    (runs[0] / "evaluation.json").write_text(json.dumps(
        {"rows": [{"name": str(runs[0] / "best.safetensors"), "values": {"psnr": 21.5, "ssim": 0.61}}]}))
    return runs


def test_markdown_report_has_every_run_table_and_resolving_images(three_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    res = runner.invoke(app, ["report", *map(str, three_runs), "--out", str(out), "--sort-by", "val_loss"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    for run in three_runs:
        assert f"## {run.name}: `conv-vae`" in text
    assert text.count("### Hyperparameters") == 3 and text.count("### Architecture") == 3
    comparison = text.split("## Comparison")[1].split("\n## ")[0]
    header = comparison.splitlines()[2]
    assert "| beta |" in header  # the swept value is a column
    assert "psnr" in header and "21.5" in comparison
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 3 * 3  # loss curves, reconstructions, samples per run
    for link in links:
        assert (out.parent / link).is_file(), link
    # sorted by val_loss ascending
    names = [line.split("|")[1].strip() for line in comparison.splitlines()[4:] if line.startswith("|")]
    losses = {}
    for run in three_runs:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        losses[run.name] = [r for r in rows if r["kind"] == "epoch" and r["split"] == "val"][-1]["loss"]
    assert names == sorted(losses, key=losses.get)


def test_html_report_embeds_images(three_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    res = runner.invoke(app, ["report", *map(str, three_runs), "--out", str(out), "--html"])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert page.count("src='data:image/png;base64,") >= 9
    assert "src='report" not in page and "_assets" not in page  # nothing refers to files beside it


def test_not_a_run_folder_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 2 and "none of the 1 given path(s) is an aecli run folder" in res.output


def test_report_of_a_glob_skips_what_holds_no_run_with_a_note(three_runs: list[Path], tmp_path: Path) -> None:
    """`report runs/*` meets other folders and files: each is skipped with a note naming it."""
    empty, notes = tmp_path / "empty", tmp_path / "notes.txt"
    empty.mkdir()
    notes.write_text("x")
    res = runner.invoke(app, ["report", str(empty), *map(str, three_runs), str(notes), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert f"note: skipped {empty}: not an aecli run folder (no config.json)" in res.output
    assert f"note: skipped {notes}: not an aecli run folder (no config.json)" in res.output
    assert f"({len(three_runs)} runs)" in res.output
