"""`aecli train`: every family trains, the run folder is complete, resume is exact, errors are clean."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_kwargs
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from aecli.checkpoint import load_model
from aecli.cli import app
from aecli.errors import DataError, TrainingError, UsageError
from aecli.models import list_models
from aecli.training import TrainConfig, train
from aecli.training.schedules import LRSchedule

runner = CliRunner()


def tiny_cfg(family: str, out: Path, **kw) -> TrainConfig:
    size = kw.pop("image_size", 32)
    channels = kw.pop("channels", 1)
    model = tiny_kwargs(family, size, channels)
    model.pop("image_size", None)
    model.pop("channels", None)
    base = dict(family=family, model=model, data="shapes:48", image_size=size, channels=channels, epochs=1,
                batch_size=16, out=str(out), log_every=1000, grid_size=4, workers=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("family", list_models())
def test_every_family_trains_and_writes_a_loadable_checkpoint(family: str, tmp_path: Path) -> None:
    result = train(tiny_cfg(family, tmp_path / "run"))
    assert result.steps == 2  # 48 shapes, 10% validation → 43 train images → 2 full batches of 16
    ckpt = load_model(tmp_path / "run" / "last.safetensors")
    assert ckpt.model.family == family
    assert ckpt.header.training["steps"] == 2
    assert ckpt.data.image_size == 32 and ckpt.data.channels == 1
    for name in ("best.safetensors", "state.safetensors", "metrics.csv", "metrics.jsonl", "loss_curves.png",
                 "config.json", "command.txt"):
        assert (tmp_path / "run" / name).exists(), name
    grids = sorted(p.name for p in (tmp_path / "run" / "grids").iterdir())
    if ckpt.model.has_encoder:
        assert "recon_e001.png" in grids
    if ckpt.model.has_prior:
        assert "samples_e001.png" in grids


def test_run_folder_logs_every_component(tmp_path: Path) -> None:
    cfg = tiny_cfg("conv-vae", tmp_path / "run", epochs=2, beta=0.5, kl_warmup_steps=2, log_every=1, ema=0.9)
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert {(r["epoch"], r["split"]) for r in epochs} == {(1, "train"), (1, "val"), (2, "train"), (2, "val")}
    for r in epochs:
        assert {"recon", "kl", "loss"} <= set(r) and all(math.isfinite(r[k]) for k in ("recon", "kl", "loss"))
    steps = [r for r in rows if r["kind"] == "step"]
    assert len(steps) == 4 and all(r["images_per_s"] > 0 for r in steps)
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"recon", "kl", "lr", "images_per_s", "elapsed_s"} <= set(header)
    tensors = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert any(k.startswith("ema.") for k in tensors)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["beta"] == 0.5 and saved["family"] == "conv-vae"


@pytest.mark.parametrize("augment", ["none", "dihedral"])
def test_resume_after_an_epoch_is_exact(tmp_path: Path, augment: str) -> None:
    full = train(tiny_cfg("conv-vae", tmp_path / "full", epochs=3, seed=3, augment=augment))
    part = tiny_cfg("conv-vae", tmp_path / "part", epochs=1, seed=3, augment=augment)
    train(part)
    resumed_cfg = tiny_cfg("conv-vae", tmp_path / "ignored", epochs=3, seed=3, augment=augment)
    resumed = train(resumed_cfg, resume=str(tmp_path / "part"))
    assert resumed.steps == full.steps == 6
    a = load_file(str(tmp_path / "full" / "last.safetensors"))
    b = load_file(str(tmp_path / "part" / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nan_loss_stops_naming_step_and_component_and_keeps_last_good(tmp_path: Path, monkeypatch) -> None:
    from aecli.losses import AutoencoderObjective

    original = AutoencoderObjective.forward

    def poisoned(self, x, out, step):
        total, parts = original(self, x, out, step)
        if step >= 3:
            total = total * float("nan")
            parts["recon"] = parts["recon"] * float("nan")
        return total, parts

    monkeypatch.setattr(AutoencoderObjective, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"step 4 .*recon"):
        train(tiny_cfg("conv-ae", tmp_path / "run", epochs=3))
    good = load_model(tmp_path / "run" / "last.safetensors")
    assert good.header.training["steps"] == 2
    assert all(torch.isfinite(p).all() for p in good.model.parameters())


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path) -> None:
    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(24):
        Image.new("RGB", (40, 40), (i * 10, 100, 200 - i * 5)).save(data / f"img{i:02d}.png")
    (data / "broken.png").write_bytes(b"\x89PNG not really")
    (data / "empty.jpg").write_bytes(b"")
    cfg = tiny_cfg("conv-ae", tmp_path / "run", data=str(data), batch_size=8)
    with pytest.warns(UserWarning, match="broken.png|empty.jpg"):
        result = train(cfg)
    assert result.steps >= 2
    strict = tiny_cfg("conv-ae", tmp_path / "run2", data=str(data), batch_size=8, strict_data=True)
    with pytest.raises(DataError, match=r"2 unreadable image file\(s\) in .*'broken.png' \(.*\), 'empty.jpg' \(.*\); fix or remove"):
        train(strict)
    assert not (tmp_path / "run2" / "last.safetensors").exists()


def test_lpips_loss_trains_with_a_local_backbone_file(tmp_path: Path) -> None:
    import torchvision

    weights = tmp_path / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet().state_dict(), weights)
    cfg = tiny_cfg("conv-ae", tmp_path / "run", image_size=32, channels=3, lpips=0.1, lpips_weights=str(weights))
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["lpips"] > 0 for r in rows if r["kind"] == "epoch")


def test_gan_adversarial_and_bf16_paths_are_finite(tmp_path: Path) -> None:
    train(tiny_cfg("gan", tmp_path / "gan", lr=1e-4, log_every=1))
    rows = [json.loads(line) for line in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in rows)
    train(tiny_cfg("conv-ae", tmp_path / "adv", image_size=32, channels=3, adv=0.1, adv_start=1, log_every=1))
    rows = [json.loads(line) for line in (tmp_path / "adv" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("adv_d", 0) > 0 for r in rows)
    for precision in ("bf16", "fp32"):
        train(tiny_cfg("conv-vae", tmp_path / precision, precision=precision))
    rows = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows].count("epoch") >= 2 and all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"
    bf16, fp32 = (load_model(tmp_path / p / "last.safetensors").model.state_dict() for p in ("bf16", "fp32"))
    assert all(torch.isfinite(v).all() for v in bf16.values() if v.is_floating_point())
    # Same seed and data: only autocast to bfloat16 can make the weights differ from the fp32 run.
    assert any(not torch.equal(bf16[k], fp32[k]) for k in fp32 if fp32[k].is_floating_point())


def test_toml_config_and_command_line_override(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('family = "mlp-ae"\ndata = "shapes:40"\nepochs = 1\nbatch_size = 8\nlr = 0.002\n'
                    'betas = [0.5, 0.999]\n[model]\nhidden = [16]\nlatent_dim = 4\n')
    res = runner.invoke(app, ["train", "--config", str(toml), "--batch-size", "4", "--out", str(tmp_path / "r"),
                              "--image-size", "16", "--channels", "1", "--workers", "1"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["lr"] == 0.002 and saved["batch_size"] == 4 and saved["betas"] == [0.5, 0.999]
    assert saved["model"] == {"hidden": [16], "latent_dim": 4}
    assert "--batch-size 4" in (tmp_path / "r" / "command.txt").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "no-such-family"], "unknown model family"),
        (["train", "conv-ae", "--epochs", "0"], "--epochs"),
        (["train", "conv-ae", "--batch-size", "-3"], "--batch-size"),
        (["train", "conv-ae", "--device", "cuda:7"], "cuda"),
        (["train", "resnet-ae", "--image-size", "28"], "image size 28"),
        (["train", "conv-ae", "-m", "bogus=1"], "no option"),
        (["train", "conv-ae", "--recon", "bce", "-m", "output_activation=tanh"], "bce"),
        (["train", "conv-ae", "--data", "/no/such/folder"], "/no/such/folder"),
        (["train", "conv-ae", "--betas", "0.5"], "--betas"),
    ],
)
def test_bad_options_give_one_line_errors(args: list[str], needle: str, tmp_path: Path) -> None:
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_output_folder_problems_are_caught_before_training(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        train(tiny_cfg("conv-ae", afile))
    train(tiny_cfg("mlp-ae", tmp_path / "run"))
    with pytest.raises(UsageError, match="already holds a run"):
        train(tiny_cfg("mlp-ae", tmp_path / "run"))


def test_lr_schedules_match_torch_schedulers() -> None:
    model = torch.nn.Linear(2, 2)

    def torch_lrs(make, steps, per_epoch=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = make(opt)
        out = []
        for i in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if per_epoch is None or (i + 1) % per_epoch == 0:
                sched.step()
        return out

    ours = LRSchedule("step", 0.1, total_steps=40, steps_per_epoch=4, step_size=3, gamma=0.5)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 40, per_epoch=4)
    assert [ours.lr(s) for s in range(40)] == pytest.approx(ref)
    ours = LRSchedule("cosine", 0.1, total_steps=30, steps_per_epoch=5)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30), 30)
    assert [ours.lr(s) for s in range(30)] == pytest.approx(ref, abs=1e-12)
    # Plateau (seed 001: factor 0.5, patience 10) against ReduceLROnPlateau on the same metric sequence.
    metrics = [1.0, 0.9, 0.95] + [0.91] * 12 + [0.5] + [0.6] * 12
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=10)
    ours = LRSchedule("plateau", 0.1, total_steps=100, steps_per_epoch=1, gamma=0.5, patience=10)
    for m in metrics:
        ref_sched.step(m)
        ours.end_epoch(m)
        assert ours.lr(0) == pytest.approx(opt.param_groups[0]["lr"])


@pytest.mark.slow
def test_default_conv_ae_beats_the_mean_image_baseline(tmp_path: Path, monkeypatch) -> None:
    """`aecli train conv-ae` with no other argument (embedded digits), then PSNR on the validation split."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["train", "conv-ae"])
    assert res.exit_code == 0, res.output
    run = next((tmp_path / "runs").iterdir())
    ckpt = load_model(run / "best.safetensors")
    from aecli.data import open_source

    val = open_source("digits", image_size=ckpt.data.image_size, channels=ckpt.data.channels, split="val")
    train_set = open_source("digits", image_size=ckpt.data.image_size, channels=ckpt.data.channels, split="train")
    x = val.tensor().float() / 255
    with torch.no_grad():
        lo, hi = ckpt.data.value_range
        recon = ckpt.data.to_unit_range(ckpt.model(x * (hi - lo) + lo).recon)
    mean_image = (train_set.tensor().float() / 255).mean(0, keepdim=True)

    def psnr(a, b):
        mse = ((a - b) ** 2).flatten(1).mean(1)
        return float((10 * torch.log10(1 / mse)).mean())

    model_psnr, baseline = psnr(recon, x), psnr(mean_image.expand_as(x), x)
    assert model_psnr > baseline + 6, (model_psnr, baseline)


def test_checkpoint_remembers_the_validation_split(tmp_path: Path) -> None:
    """`--split val` in later commands must mean the images training held out (seed 000: first 1,000)."""
    from aecli.analysis import LatentMapConfig, latent_map
    from aecli.data import open_source

    train(tiny_cfg("conv-ae", tmp_path / "run", val_count=7))
    ckpt = load_model(tmp_path / "run" / "best.safetensors")
    assert ckpt.data.val_count == 7 and ckpt.data.val_fraction is None
    held_out = open_source("shapes:48", image_size=32, channels=1, split="val", val_count=7)
    result = latent_map(LatentMapConfig(checkpoint=str(tmp_path / "run" / "best.safetensors"), split="val",
                                        method="pca", out=str(tmp_path / "map.png")))
    assert list(result.names) == list(held_out.names) and len(result.names) == 7


def test_default_run_folder_names_the_slurm_array_task(monkeypatch) -> None:
    from aecli.training.trainer import default_run_dir

    monkeypatch.setenv("SLURM_JOB_ID", "991")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "990")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    name = default_run_dir("conv-ae").name
    assert name.startswith("conv-ae-") and name.endswith("-job990_3")
