"""A run folder made before conv's residual default (its checkpoint config has no ``arch``) resumes as the
plain trunk it was trained with, not as today's default."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from safetensors import safe_open
from typer.testing import CliRunner

from aecli.cli import app

runner = CliRunner()
TRAIN = ["train", "conv-ae", "--data", "shapes:32", "--image-size", "16", "--batch-size", "8", "--device", "cpu",
         "-m", "widths=4,8", "-m", "latent_dim=4"]


def _drop_arch(path: Path) -> None:
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    config = json.loads(meta["config"])
    assert config.pop("arch") == "plain"
    save_file(load_file(str(path)), str(path), metadata={**meta, "config": json.dumps(config)})


def test_an_old_plain_run_resumes_as_plain(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = runner.invoke(app, [*TRAIN, "-m", "arch=plain", "--epochs", "1", "--out", str(run)])
    assert res.exit_code == 0, res.output
    config = json.loads((run / "config.json").read_text())
    config["model"].pop("arch")  # what an older aecli wrote: the options given, and no arch existed
    (run / "config.json").write_text(json.dumps(config))
    _drop_arch(run / "last.safetensors")
    res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    with safe_open(str(run / "last.safetensors"), "pt") as fh:
        assert json.loads(fh.metadata()["config"])["arch"] == "plain"
        assert json.loads(fh.metadata()["training"])["epochs"] == 2
