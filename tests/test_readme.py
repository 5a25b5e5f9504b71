"""Every `aecli …` command line in README.md, extracted from its code blocks and run verbatim (issue 14:
documentation and behaviour cannot drift).

Each line runs in its own folder holding what it names (runs/<name>/best.safetensors, data/…, ~/ffhq),
with tiny checkpoints of the families the README's text implies. Lines that cannot run here — training
for minutes, 50,000 samples, a download — are still parsed by the real CLI (every option exists, every
value has the right type) and are listed below with the reason, so a new README line fails this test
until it is runnable or listed.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model
from PIL import Image
from typer.main import get_command
from typer.testing import CliRunner

from aecli.checkpoint import save_model
from aecli.cli import app
from aecli.data.spec import DataSpec

README = Path(__file__).resolve().parents[1] / "README.md"
SIZE = 32
# Lines parsed but not run, and why (matched by their start).
NOT_RUN = {
    "aecli train resnet-vae --lpips 0.1 --data ~/ffhq --image-size 256 --epochs 30": "30 epochs at 256 px",
    "aecli train conv-ae --out runs/quickstart": "10 epochs of the default model (about a minute)",
    "aecli sample runs/vae/best.safetensors --n 50000": "50,000 PNGs",
    "aecli weights download": "needs the internet",
    # Stable Diffusion's VAE is a download; runs/ldm/kl_f8 an ldm-kl training of hours
    "aecli import sd-vae-ft-mse": "needs the downloaded SD VAE folder",
    "aecli import v1-5-pruned-emaonly.safetensors": "needs the downloaded SD checkpoint",
    "aecli evaluate sd-vae-ft-mse.safetensors runs/ldm/kl_f8": "needs the imported SD VAE and an ldm-kl run",
    "aecli reconstruct sd-vae-ft-mse.safetensors runs/ldm/kl_f8": "needs the imported SD VAE and an ldm-kl run",
    "aecli export runs/ldm/kl_f8": "needs an ldm-kl run",
    # t-SNE of all 1,797 digits takes half a minute on 2 cores; tests/test_flows.py runs tsne on every source
    "aecli tsne runs/quickstart/best.safetensors --data digits --split all": "t-SNE of 1,797 points",
    "aecli tsne runs/vae/best.safetensors --data digits --split all": "t-SNE of 1,797 points",
    # The Stable Diffusion comparison needs the released SD VAE files (335 MB) and an ldm-kl trained at
    # 256 px; tests/test_ldm_kl.py runs import/reconstruct/export on a tiny diffusers AutoencoderKL.
    "aecli import sd-vae-ft-mse": "the downloaded SD VAE folder",
    "aecli import v1-5-pruned-emaonly.safetensors": "a downloaded SD checkpoint",
    "aecli evaluate sd-vae-ft-mse.safetensors": "the SD VAE and a 256 px ldm-kl run",
    "aecli reconstruct sd-vae-ft-mse.safetensors": "the SD VAE and a 256 px ldm-kl run",
    "aecli export runs/ldm/kl_f8/best.safetensors": "a 256 px ldm-kl run",
    # encode → info → export of the latent scale: test_ldm_kl.py::test_export_and_info_use_the_scale_measured_by_encode
    "aecli encode runs/ldm/kl_f8/best.safetensors": "a 256 px ldm-kl run",
    "aecli info runs/ldm/kl_f8/best.safetensors": "a 256 px ldm-kl run",
    # The latent workflow chains its lines in one folder; tests/test_encode_decode.py runs that chain.
    "aecli train conv-vae --data shapes:512 --image-size 32 --epochs 2 --beta 0.001": "2 epochs at 32 px",
    "aecli encode ldm/vae/best.safetensors": "the workflow's own checkpoint",
    "aecli decode ldm/vae/best.safetensors": "the workflow's own checkpoint and latents",
}
# README run folder → (family, options, training source) of the tiny checkpoint put there.
RUNS = {
    "quickstart": ("conv-ae", {}, "digits"),
    "ae": ("conv-ae", {}, "digits"),
    "vae": ("conv-vae", {}, "digits"),
    "cvae": ("conv-vae", {"num_classes": 10}, "digits"),
    "glasses": ("conv-vae", {"channels": 3}, "data/glasses"),
    "resnet-vae-20261121-103831": ("resnet-vae", {"channels": 3}, "~/ffhq"),
}


def readme_lines() -> list[str]:
    """The `aecli` commands of README.md's code blocks: "$ " prompts and "\\" continuations handled,
    "a && b" split, trailing "# comments" kept (shlex drops them), comment-only lines skipped."""
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            lines += [part.strip() for part in line.split("&&") if part.strip().startswith("aecli ")]
    return list(dict.fromkeys(lines))


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import save_random_inception

    from aecli.weights import WEIGHT_FILES

    root = tmp_path_factory.mktemp("readme")
    home = root / "home"
    for i in range(12):
        _png(home / "ffhq" / f"{i:05d}.png", i)
    for i, folder in enumerate(["men_with", "men_without", "women_without"] * 3):
        _png(root / "data" / "glasses" / folder / f"{i}.png", 100 + i)
    weights = root / "weights"  # random stand-ins with the real names: no downloads here
    weights.mkdir()
    import torchvision

    torch.save(torchvision.models.alexnet().state_dict(), weights / WEIGHT_FILES["alex"][0])
    save_random_inception(weights / WEIGHT_FILES["inception"][0])
    for name, (family, options, source) in RUNS.items():
        torch.manual_seed(0)
        model = tiny_model(family, image_size=SIZE, **{"channels": 1, **options})
        classes = [str(d) for d in range(10)] if options.get("num_classes") else []
        spec = DataSpec(SIZE, model.config.channels, model.value_range, classes, source,
                        source_path=str(home / "ffhq") if source == "~/ffhq" else "")
        (root / "runs" / name).mkdir(parents=True)
        save_model(root / "runs" / name / "best.safetensors", model, spec)
    return root


def _words(line: str, cwd: Path, home: Path) -> list[str]:
    """What the shell would pass: ~ and globs expanded (sorted), comments dropped."""
    words = []
    for word in shlex.split(line, comments=True)[1:]:
        word = str(home) + word[1:] if word.startswith("~") else word
        matches = sorted(glob.glob(word, root_dir=cwd)) if any(c in word for c in "*?[") else []
        words += matches or [word]
    return words


@pytest.mark.parametrize("line", readme_lines())
def test_readme_line(line: str, world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = world / "home"
    skip = next((why for start, why in NOT_RUN.items() if line.startswith(start)), None)
    if skip is not None:  # still a valid command line of this CLI
        words = _words(line, world, home)
        get_command(app).make_context("aecli", words, resilient_parsing=False)
        return
    for name in ("runs", "data"):
        (tmp_path / name).symlink_to(world / name)
    named = {m for m in re.findall(r"runs/([\w.-]+)/", line)}
    assert named <= set(RUNS) | {"*"}, f"README names run folders {named - set(RUNS)}: add them to RUNS"
    if "runs/*" in line:  # a sweep of the data the line names: only the runs trained on it
        (tmp_path / "runs").unlink()
        for name, (_, _, source) in RUNS.items():
            if source == "~/ffhq":
                (tmp_path / "runs" / name).mkdir(parents=True)
                (tmp_path / "runs" / name / "best.safetensors").symlink_to(world / "runs" / name / "best.safetensors")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AECLI_WEIGHTS_DIR", str(world / "weights"))
    monkeypatch.setenv("AECLI_DEVICE", "cpu")
    words = _words(line, tmp_path, home)
    result = CliRunner().invoke(app, words)
    assert result.exit_code == 0, result.output
    for option in ("--out", "--json-out", "--csv-out", "--gif"):
        if option in words:
            target = Path(words[words.index(option) + 1])
            assert target.exists() and (target.is_dir() or target.stat().st_size > 0), (option, target)
