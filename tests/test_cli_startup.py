"""`aecli --help` and every `aecli CMD --help` stay fast: no torch (or other heavy library) at import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aecli.cli import COMMANDS

HEAVY = ("torch", "torchvision", "numpy", "lpips", "torch_fidelity", "sklearn", "matplotlib", "PIL", "safetensors")

PROBE = """
import json, sys
from typer.testing import CliRunner
from aecli.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"code": result.exit_code, "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], *[[c, "--help"] for c in COMMANDS]],
                         ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    code = f"HEAVY = {HEAVY!r}\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["heavy"] == [], f"`aecli {' '.join(args)}` imported {report['heavy']}"


def test_usage_errors_from_the_entry_point_are_one_line() -> None:
    """Typer's own errors (not a number, unknown command) become one stderr line and exit 2."""
    for args in (["train", "conv-ae", "--epochs", "abc"], ["no-such-command"], ["info"]):
        out = subprocess.run([sys.executable, "-m", "aecli", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr


# -- shell completion (`aecli --install-completion`) ------------------------------------------------------
def _complete(words: str, cwd: str | None = None) -> list[str]:
    """What bash gets from aecli's completion protocol for the command line ``words`` (cursor at the end)."""
    import os

    env = {**os.environ, "_AECLI_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    code = "import sys; sys.argv[0] = 'aecli'; from aecli.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_help_offers_completion_install() -> None:
    out = subprocess.run([sys.executable, "-m", "aecli", "--help"], capture_output=True, text=True, timeout=60)
    assert "--install-completion" in out.stdout and "--show-completion" in out.stdout


def test_completes_family_names_from_the_registry() -> None:
    from aecli.models import list_models

    assert _complete("aecli train ") == list_models()
    assert _complete("aecli train conv-") == [f for f in list_models() if f.startswith("conv-")]


def test_completes_metric_lists_item_by_item_without_torch() -> None:
    from aecli.metrics import METRICS

    assert _complete("aecli evaluate --metrics psnr,l") == [f"psnr,{m}" for m in METRICS if m.startswith("l")]
    assert "psnr,psnr" not in _complete("aecli evaluate --metrics psnr,")
    assert _complete("aecli weights check --metrics lpips,f") == ["lpips,fid"]
    code = ("import sys; from aecli import completion; completion.metrics('ps'); completion.run_folders('');"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_completes_run_folders(tmp_path) -> None:
    (tmp_path / "runs" / "vae-1").mkdir(parents=True)
    (tmp_path / "runs" / "vae-1" / "config.json").write_text("{}")
    (tmp_path / "runs" / "vae-2").mkdir()
    (tmp_path / "runs" / "vae-2" / "last.safetensors").write_bytes(b"")
    (tmp_path / "runs" / "sweep").mkdir()
    (tmp_path / "runs" / ".hidden").mkdir()
    assert _complete("aecli report runs/", cwd=str(tmp_path)) == ["runs/vae-1", "runs/vae-2", "runs/sweep/"]
    assert _complete("aecli train --resume ", cwd=str(tmp_path / "runs")) == ["auto", "vae-1", "vae-2", "sweep/"]
    assert _complete("aecli report runs/v", cwd=str(tmp_path)) == ["runs/vae-1", "runs/vae-2"]
