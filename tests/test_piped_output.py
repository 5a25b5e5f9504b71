"""Output that is piped or redirected is never wrapped: `models`, `info` and `weights check` print plain,
greppable lines (or --json) when stdout is not a terminal, and keep names and paths whole in one."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_model
from typer.testing import CliRunner

from aecli.checkpoint import save_model
from aecli.cli import app
from aecli.commands.models import family_rows, terminal_blocks
from aecli.data.spec import DataSpec
from aecli.models import list_models


def _run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))  # CliRunner's stdout is not a terminal
    assert result.exit_code == code and "Traceback" not in result.output, result.output
    return result.stdout


def test_models_piped_is_one_tab_separated_line_per_family() -> None:
    # A real pipe, as `aecli models | grep vae` gets it.
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-m", "aecli", "models"], capture_output=True, text=True, env=env,
                         check=True).stdout
    lines = out.splitlines()
    assert lines[0].split("\t") == ["family", "seed", "what it is", "commands", "options (defaults)",
                                    "training defaults"]
    assert [line.split("\t")[0] for line in lines[1:]] == list_models()  # every name whole, one line each
    for line, row in zip(lines[1:], family_rows()):
        fields = line.split("\t")
        assert len(fields) == 6 and fields[3] == ",".join(row["commands"])
        assert all(f"{k}=" in fields[4] for k in row["options"])
    by_name = {line.split("\t")[0]: line.split("\t")[5] for line in lines[1:]}
    assert by_name["conv-vae"] == "--recon gaussian --reduction sum" and by_name["flow-vae"] == ""
    assert any(len(line) > 80 for line in lines)  # long lines stay long instead of folding at 80


def test_models_in_an_80_column_terminal_keeps_names_whole_and_options_under_each_family() -> None:
    rows = family_rows()
    blocks = terminal_blocks(rows, 80)
    assert len(blocks) == len(rows)
    for block, row in zip(blocks, rows):
        lines = block.splitlines()
        assert lines[0].startswith(f"{row['name']} — ")
        assert all(len(line) <= 80 for line in lines), block
        options = [line for line in lines if line.startswith("  options")]
        assert len(options) == 1
        # Every option=value pair appears unbroken in the block.
        text = " ".join(line.strip() for line in lines)
        for key, value in row["options"].items():
            assert f"{key}={value}" in text
        assert ("  training  --recon gaussian" in block) == (row["name"] in ("conv-ae", "conv-vae"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_model("conv-ae")
    path = tmp_path_factory.mktemp("info") / "a-checkpoint-with-a-rather-long-name-for-wrapping.safetensors"
    return save_model(path, model, DataSpec(32, 1, model.value_range, [], "test"))


def test_info_piped_is_key_value_lines_with_the_whole_sha256(ckpt: Path) -> None:
    out = _run("info", str(ckpt))
    pairs = dict(line.split(": ", 1) for line in out.splitlines())
    assert pairs["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert pairs["family"] == "conv-ae" and pairs["config.widths"] == "[4, 8]"
    assert not any(c in out for c in "│┃━─")  # no table drawing
    assert json.loads(_run("info", str(ckpt), "--json"))["sha256"] == pairs["sha256"]


def test_weights_check_piped_keeps_paths_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("a-very-long-folder-name-" * 4) / "torch"
    monkeypatch.setenv("TORCH_HOME", str(deep))
    out = _run("weights", "check", "--metrics", "lpips,fid", code=2)  # 2: files missing
    lines = [line.split("\t") for line in out.splitlines() if "\t" in line]
    assert {f[0] for f in lines} == {"MISSING", "ok"}
    missing = {Path(f[1]).name for f in lines if f[0] == "MISSING"}
    assert missing == {"alexnet-owt-7be5be79.pth", "weights-inception-2015-12-05-6726825d.pth"}
    assert all(Path(f[1]).parent == deep / "hub" / "checkpoints" for f in lines if f[0] == "MISSING")
    data = json.loads(_run("weights", "check", "--metrics", "lpips,fid", "--json", code=2))
    assert {Path(d["file"]).name for d in data if not d["ok"]} == missing
