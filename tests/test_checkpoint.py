"""The safetensors checkpoint: exact round trips for every family, and one clear error per broken file."""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from conftest import tiny_model, tiny_size
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from aecli.checkpoint import FORMAT_NAME, FORMAT_VERSION, load_model, read_header, save_model
from aecli.cli import app
from aecli.data.spec import DataSpec
from aecli.errors import CheckpointError, UsageError
from aecli.models import create_model, list_models

TRAINING = {"steps": 12, "epochs": 1, "final_losses": {"l1": 0.25}, "command": "aecli train x", "seed": 7}


def _spec(model: Any) -> DataSpec:
    cfg = model.config
    names = [f"c{i}" for i in range(cfg.num_classes)]
    return DataSpec(cfg.image_size, cfg.channels, model.value_range, names, "unit-test")


def _labels(model: Any, n: int) -> torch.Tensor | None:
    return torch.arange(n) % model.config.num_classes if model.is_conditional else None


def _outputs(model: Any) -> dict[str, torch.Tensor]:
    """Everything a command can compute from a model, deterministically (eval mode, posterior mean)."""
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    lo, hi = model.value_range
    x = lo + (hi - lo) * torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if model.has_encoder:
            res = model(x, _labels(model, 2), sample_posterior=False)
            out["recon"], out["z"] = res.recon, res.z
            out["mean"] = model.encode(x).mode()
        if model.decodes_latent:
            z = torch.randn((2, *model.latent_shape), generator=g)
            out["decode"] = model.decode(z, _labels(model, 2))
    assert out, f"{model.family} exposes neither encode nor decode"
    return out


def _trained_like(model: Any) -> Any:
    """Move BatchNorm statistics off their initial values so buffers are tested, not just weights."""
    if model.has_encoder:
        cfg = model.config
        model.train()
        with torch.no_grad():
            for _ in range(2):
                x = torch.rand(4, cfg.channels, cfg.image_size, cfg.image_size)
                model(x, _labels(model, 4))
    return model.eval()


@pytest.mark.parametrize("family", list_models())
def test_round_trip_is_bit_identical(family: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    size = tiny_size(family)
    try:  # conditional where the family allows it, so class embeddings round-trip too
        model = tiny_model(family, size, 1, num_classes=3)
    except UsageError:
        model = tiny_model(family, size, 1)
    model = _trained_like(model)
    path = save_model(tmp_path / "m.safetensors", model, _spec(model), TRAINING)
    loaded = load_model(path, "cpu").model
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config.to_dict() == model.config.to_dict()
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    expected, actual = _outputs(model), _outputs(loaded)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), f"{family}: {key} differs after reload"


def test_metadata_reads_back_with_plain_safetensors(tmp_path: Path) -> None:
    model = tiny_model("resnet-vae", 32, 1, num_classes=2)
    path = save_model(tmp_path / "m.safetensors", model, _spec(model), TRAINING)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        keys = set(fh.keys())
    assert meta["format"] == FORMAT_NAME == "aecli-checkpoint"
    assert int(meta["format_version"]) == FORMAT_VERSION
    assert meta["family"] == "resnet-vae"
    assert json.loads(meta["config"]) == json.loads(json.dumps(model.config.to_dict()))
    assert json.loads(meta["data"]) == {"image_size": 32, "channels": 1, "value_range": [-1.0, 1.0],
                                        "class_names": ["c0", "c1"], "source": "unit-test", "val_count": None,
                                        "val_fraction": None, "source_path": ""}
    assert json.loads(meta["training"]) == TRAINING
    assert {"aecli_version", "torch_version", "created"} <= set(meta)
    assert keys == {"model." + k for k in model.state_dict()}


def test_ema_tensors_round_trip(tmp_path: Path) -> None:
    model = tiny_model("resnet-ae", 32, 1)
    ema = {k: (v + 0.5 if v.is_floating_point() else v + 1) for k, v in model.state_dict().items()}
    path = save_model(tmp_path / "m.safetensors", model, _spec(model), ema_state=ema)
    assert read_header(path).has_ema
    from_ema = load_model(path, ema=True).model.state_dict()
    assert all(torch.equal(from_ema[k], ema[k]) for k in ema)
    plain = load_model(path).model.state_dict()
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items())
    no_ema = save_model(tmp_path / "n.safetensors", model, _spec(model))
    with pytest.raises(CheckpointError, match="no EMA"):
        load_model(no_ema, ema=True)
    with pytest.raises(ValueError, match="state_dict keys"):
        save_model(tmp_path / "bad.safetensors", model, _spec(model), ema_state={"x": torch.zeros(1)})


# -- broken files through `aecli info` -------------------------------------------------------------
@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_model("resnet-ae", 32, 1)  # BatchNorm: buffers as well as parameters
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    return save_model(tmp_path_factory.mktemp("ckpt") / "good.safetensors", model, _spec(model), TRAINING, ema)


def _rewrite(src: Path, dst: Path, tensors: Callable[[dict], None] | None = None,
             meta: Callable[[dict], None] | None = None) -> Path:
    """Copy a checkpoint through plain safetensors, editing its tensors and/or metadata."""
    t = load_file(str(src))
    with safe_open(str(src), framework="pt") as fh:
        m = dict(fh.metadata())
    if tensors:
        tensors(t)
    if meta:
        meta(m)
    save_file(t, str(dst), metadata=m)
    return dst


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _header_len(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def _conditional(d: Path) -> Path:
    model = tiny_model("resnet-vae", 32, 1, num_classes=3)
    return save_model(d / "conditional.safetensors", model, _spec(model))


def _make(case: str, good: Path, d: Path) -> Path:
    p = d / f"{case}.safetensors"
    raw = good.read_bytes()
    n = _header_len(good)
    set_meta = lambda k, v: (lambda m: m.__setitem__(k, v))  # noqa: E731
    builders: dict[str, Callable[[], Any]] = {
        "random": lambda: p.write_bytes(random.Random(0).randbytes(4096)),
        "png": lambda: p.write_bytes(_png_bytes()),
        "empty": lambda: p.write_bytes(b""),
        "cut-header": lambda: p.write_bytes(raw[: 8 + n // 2]),
        "cut-data": lambda: p.write_bytes(raw[:-100]),
        "unknown-family": lambda: _rewrite(good, p, meta=set_meta("family", "hyper-ae")),
        "missing-tensor": lambda: _rewrite(good, p, tensors=lambda t: t.pop("model.stem.weight")),
        "unexpected-tensor": lambda: _rewrite(good, p, tensors=lambda t: t.update({"model.extra": torch.ones(2)})),
        "stray-tensor": lambda: _rewrite(good, p, tensors=lambda t: t.update({"optimizer.x": torch.ones(2)})),
        "ema-mismatch": lambda: _rewrite(good, p, tensors=lambda t: t.pop("ema.stem.bias")),
        "shape": lambda: _rewrite(good, p, tensors=lambda t: t.update({"model.stem.weight": torch.ones(8, 1, 5, 5)})),
        "bad-json": lambda: _rewrite(good, p, meta=set_meta("config", "{not json")),
        "no-config": lambda: _rewrite(good, p, meta=lambda m: m.pop("config")),
        "non-object": lambda: _rewrite(good, p, meta=set_meta("config", "[1, 2]")),
        "bad-value": lambda: _rewrite(good, p, meta=lambda m: m.update(
            config=json.dumps({**json.loads(m["config"]), "num_classes": "three"}))),
        "bad-data": lambda: _rewrite(good, p, meta=set_meta("data", '{"image_size": 32, "channels": 1, '
                                                                    '"value_range": [1]}')),
        "data-disagrees": lambda: _rewrite(good, p, meta=set_meta("data", '{"image_size": 64, "channels": 1}')),
        "class-count": lambda: _rewrite(_conditional(d), p, meta=lambda m: m.update(
            data=json.dumps({**json.loads(m["data"]), "class_names": ["a", "b"]}))),
        "newer": lambda: _rewrite(good, p, meta=set_meta("format_version", str(FORMAT_VERSION + 1))),
        "no-version": lambda: _rewrite(good, p, meta=lambda m: m.pop("format_version")),
        "plain": lambda: save_file({"weight": torch.zeros(3)}, str(p)),
        "folder": lambda: p.mkdir(),
        "missing-file": lambda: None,
    }
    builders[case]()
    return p


BROKEN = {  # case → words the message must contain
    "random": ["not a safetensors file"],
    "png": ["not a safetensors file"],
    "empty": ["not a safetensors file", "0 bytes"],
    "cut-header": ["truncated"],
    "cut-data": ["truncated"],
    "unknown-family": ["unknown model family", "hyper-ae", "resnet-ae"],
    "missing-tensor": ["missing tensors", "model.stem.weight"],
    "unexpected-tensor": ["unexpected tensors", "model.extra"],
    "stray-tensor": ["unexpected tensors", "optimizer.x"],
    "ema-mismatch": ["missing tensors", "ema.stem.bias"],
    "shape": ["shape", "model.stem.weight", "[8, 1, 5, 5]"],
    "bad-json": ["'config'", "not valid JSON"],
    "no-config": ["no 'config' entry"],
    "non-object": ["'config'", "JSON object"],
    "bad-value": ["invalid model config"],
    "bad-data": ["'data' is malformed"],
    "data-disagrees": ["disagree"],
    "class-count": ["3 classes", "names 2"],
    "newer": ["newer", f"version {FORMAT_VERSION + 1}", "upgrade aecli"],
    "no-version": ["no 'format_version'"],
    "plain": ["not an aecli checkpoint"],
    "folder": ["is a folder"],
    "missing-file": ["does not exist"],
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_checkpoint_gives_clear_error(case: str, good: Path, tmp_path: Path) -> None:
    path = _make(case, good, tmp_path)
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    message = result.output.strip()
    assert message.startswith("Error: ") and message.count("\n") == 0, message
    for words in BROKEN[case]:
        assert words in message, f"{case}: {words!r} not in {message!r}"


def test_info_json_matches_independent_numbers(good: Path) -> None:
    result = CliRunner().invoke(app, ["info", str(good), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    model = create_model("resnet-ae", **info["config"])
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert info["file_size"] == good.stat().st_size
    assert info["family"] == "resnet-ae" and info["has_ema"] is True
    assert model.config.to_dict() == load_model(good).model.config.to_dict()
    assert info["training"] == TRAINING and info["data"]["image_size"] == 32
    table = CliRunner().invoke(app, ["info", str(good)])
    assert table.exit_code == 0 and "resnet-ae" in table.output and "sha256" in table.output


def test_absurd_config_is_refused_before_allocating() -> None:
    start = time.perf_counter()
    with pytest.raises(UsageError, match="parameters"):
        create_model("resnet-ae", image_size=32, widths=(10**6,) * 5)
    assert time.perf_counter() - start < 10


# The config `aecli train conv-vae` saved before the residual trunk became the default: the full config of
# that time, which has no "arch", "blocks", "patch" or "fc_hidden_decoder" key.
OLD_CONV_VAE_CONFIG = {"image_size": 16, "channels": 1, "num_classes": 0, "output_activation": "tanh",
                       "widths": [4, 8], "kernel_size": 4, "activation": "relu", "norm": "batch", "latent": "flat",
                       "latent_dim": 6, "fc_hidden": 0, "init": "default", "final_conv": False, "unnormed": [],
                       "valid_last": False}


def test_checkpoint_saved_before_the_residual_default_loads_as_the_plain_trunk(tmp_path: Path) -> None:
    """Changing a family's default must not change what an old file means: a saved config without "arch" is
    the plain strided trunk (the only one there was), weights and outputs exactly as saved."""
    torch.manual_seed(0)
    old_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in OLD_CONV_VAE_CONFIG.items()}
    old = _trained_like(create_model("conv-vae", arch="plain", **old_kwargs)).eval()
    path = tmp_path / "old.safetensors"
    save_model(path, old, _spec(old), TRAINING)
    # Rewrite the metadata as the older aecli wrote it (same tensors, config without the new keys).
    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    assert json.loads(meta["config"])["arch"] == "plain"
    meta["config"] = json.dumps(OLD_CONV_VAE_CONFIG)
    save_file(load_file(str(path)), str(path), metadata=meta)
    assert "arch" not in read_header(path).config

    loaded = load_model(path).model
    assert loaded.config.arch == "plain" and [type(m) for m in loaded.encoder] == [type(m) for m in old.encoder]
    for key, value in _outputs(old).items():
        assert torch.equal(_outputs(loaded)[key], value), key
    # The same options without "arch" today build the residual default: a different network.
    assert create_model("conv-vae", **old_kwargs).config.arch == "residual"
