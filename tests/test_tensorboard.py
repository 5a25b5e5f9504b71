"""`aecli train --tensorboard`: event files readable by TensorBoard's own reader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import tiny_kwargs

from aecli.errors import UsageError
from aecli.training import TrainConfig, train


def _cfg(out: Path) -> TrainConfig:
    model = tiny_kwargs("conv-vae", 32, 1)
    model.pop("image_size", None)
    model.pop("channels", None)
    return TrainConfig(family="conv-vae", model=model, data="shapes:48", image_size=32, channels=1, epochs=2,
                       batch_size=16, out=str(out), log_every=1, tensorboard=True, workers=1, beta=0.1)


def test_event_files_hold_losses_lr_images_and_hparams(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(_cfg(tmp_path / "run"))
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("recon/train", "recon/val", "kl/train", "kl/val", "loss/val", "lr", "images_per_s",
                "recon/train_step"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("recon/val")] == [2, 4]  # per epoch, at the global step
    assert {"recon", "samples"} <= set(tags["images"])
    assert len(acc.Images("recon")) == 2
    # add_hparams writes a sub-run holding the hyperparameters plugin data
    runs = [p for p in (tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*")]
    assert len(runs) >= 2


def test_missing_tensorboard_gives_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.raises(UsageError, match=r"aecli\[tensorboard\]"):
        train(_cfg(tmp_path / "run"))
