"""Each training option is declared once, on its TrainConfig sub-config field: the command line, the
TOML/config.json readers, the resume rules and the loss layer all read that declaration."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer.main

from aecli.cli import app
from aecli.errors import UsageError
from aecli.losses.config import LossConfig
from aecli.options import option_info
from aecli.training.config import SECTIONS, TrainConfig, cli_flag, option_fields, resumable
from aecli.training.runfolder import read_run_config

COMMAND_ONLY = {"family", "config", "model_opt", "num_classes", "resume", "print_config"}


def _train_command():  # noqa: ANN202
    return typer.main.get_command(app).commands["train"]


def test_every_train_option_is_one_config_field_with_its_default_help_and_panel() -> None:
    fields = option_fields()
    by_param = {option_info(f).param or name: (name, f) for name, f in fields.items()}
    seen = set()
    for p in _train_command().params:
        if p.name in COMMAND_ONLY:
            continue
        name, f = by_param[p.name]
        seen.add(name)
        kind = next(k for k in SECTIONS.values() if f in dataclasses.fields(k))
        assert p.help == option_info(f).help and p.rich_help_panel == kind.PANEL, name
        assert p.opts[0] == cli_flag(name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        assert p.default == default, name
    assert seen == set(fields)


def test_flat_and_nested_construction_are_the_same_config() -> None:
    flat = TrainConfig(family="conv-ae", data="shapes:40", lr=1e-4, beta=0.5, out="run", trackers=["csv"])
    # a whole sub-config is taken as is (conv-ae's training default recon="gaussian" fills only a flat gap)
    nested = TrainConfig(family="conv-ae", loss=LossConfig(beta=0.5, recon="gaussian"), out="run",
                         trackers=["csv"], data="shapes:40", lr=1e-4)
    assert flat == nested
    assert (flat.optim.lr, flat.loss.beta, flat.dataset.data, flat.output.trackers) == (1e-4, 0.5, "shapes:40", ["csv"])
    copy = dataclasses.replace(flat, epochs=3)  # sub-configs are copied, not shared
    assert copy.epochs == 3 and flat.epochs is None and copy.optim is not flat.optim
    with pytest.raises(TypeError, match="no option 'bogus'"):
        TrainConfig(family="conv-ae", bogus=1)


def test_config_json_keeps_its_flat_layout_and_reads_back(tmp_path: Path) -> None:
    cfg = TrainConfig(family="conv-vae", model={"latent_dim": 4}, epochs=2, betas=(0.5, 0.9), kl_cycles=2)
    saved = cfg.to_dict()
    assert set(saved) == set(TrainConfig.option_names()) | {"command_line"}
    assert saved["betas"] == [0.5, 0.9] and saved["kl_cycles"] == 2 and saved["model"] == {"latent_dim": 4}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert read_run_config(tmp_path) == cfg


def test_the_loss_layer_takes_the_loss_sub_config_as_is() -> None:
    from aecli.losses import AutoencoderObjective

    cfg = TrainConfig(family="conv-vae", beta=0.25, kl_warmup_steps=10)
    objective = AutoencoderObjective(cfg.loss, (-1.0, 1.0), total_steps=100)
    assert objective.cfg is cfg.loss


@pytest.mark.parametrize(("option", "value", "message"), [
    ("beta", -1.0, "--beta must be >= 0"), ("kl_warmup_steps", -1, "--kl-warmup-steps must be a whole number >= 0"),
    ("val_fraction", 1.0, "--val-fraction must be in (0, 1)"), ("val_count", 0, "--val-count must be at least 1"),
    ("image_size", 2, "--image-size must be at least 4"), ("workers", 0, "--workers must be at least 1"),
    ("grid_size", 0, "--grid-columns must be at least 1"), ("ema", 1.0, "--ema-decay must be a decay in (0, 1)"),
])
def test_each_bound_is_checked_by_the_sub_config_that_owns_the_value(option: str, value: object, message: str) -> None:
    cfg = TrainConfig(family="conv-ae", **{option: value})
    owner = getattr(cfg, next(attr for attr, kind in SECTIONS.items()
                              if option in {f.name for f in dataclasses.fields(kind)}))
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        owner.validate()
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cfg.validate()


def test_resumable_options_are_declared_on_the_options() -> None:
    names = resumable()
    assert names[:3] == ("epochs", "max_steps", "max_time")
    assert set(names) == {n for n, f in option_fields().items() if option_info(f).resumable}
    assert "lr" not in names and "beta" not in names and "trackers" in names


# -- family training defaults (issue 16) -------------------------------------------------------------
def test_every_familys_training_defaults_are_valid_options() -> None:
    from aecli.models.registry import get_family, list_models

    for family in list_models():
        defaults = get_family(family).train_defaults
        assert set(defaults) <= set(option_fields()), family
        cfg = TrainConfig(family)
        cfg.validate()
        assert {k: getattr(cfg, k) for k in defaults} == defaults, family


def test_conv_families_train_with_the_calibrated_gaussian_unless_told_otherwise(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    assert (TrainConfig("conv-ae").recon, TrainConfig("conv-ae").reduction) == ("gaussian", "mean")
    assert (TrainConfig("conv-vae").recon, TrainConfig("conv-vae").reduction) == ("gaussian", "sum")
    assert (TrainConfig("flow-vae").recon, TrainConfig("resnet-vae").recon) == ("mse", "mse")
    # a flat option or a whole sub-config given by the caller wins
    assert TrainConfig("conv-vae", recon="l1").recon == "l1"
    assert TrainConfig("conv-vae", recon="l1").reduction == "sum"
    assert TrainConfig("conv-vae", loss=LossConfig()).recon == "mse"
    # the LDM objective is its own recipe: the family's loss defaults do not apply to it
    assert TrainConfig("conv-vae", objective="ldm").recon == "mse"

    def printed(*args: str) -> dict:
        import tomllib

        res = CliRunner().invoke(app, ["train", *args, "--print-config"])
        assert res.exit_code == 0, res.output
        return tomllib.loads(res.output)

    assert (printed("conv-vae")["recon"], printed("conv-vae")["reduction"]) == ("gaussian", "sum")
    assert printed("conv-vae", "--recon", "mse")["recon"] == "mse"
    toml = tmp_path / "run.toml"
    toml.write_text('family = "conv-ae"\nrecon = "l1"\n')
    assert printed("--config", str(toml))["recon"] == "l1"
    assert printed("--config", str(toml), "--recon", "bce")["recon"] == "bce"
    assert printed("mlp-ae")["recon"] == "mse"
    assert printed("conv-vae", "--objective", "ldm")["reduction"] == "mean"
    # what was used is recorded: the printed config feeds back to the same options
    toml.write_text(CliRunner().invoke(app, ["train", "conv-vae", "--print-config"]).output)
    assert printed("--config", str(toml))["reduction"] == "sum"
