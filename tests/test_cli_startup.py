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
