"""The ldm-kl family, `aecli import` and `aecli export` against diffusers' own AutoencoderKL.

Every reference number comes from a tiny random ``diffusers.AutoencoderKL``; the single-file LDM
layout is produced here by ``diffusers_to_ldm``, written independently of aecli's mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from aecli.checkpoint import load_model, save_model
from aecli.cli import app
from aecli.data.spec import DataSpec
from aecli.models import create_model

diffusers = pytest.importorskip("diffusers")

SIZE = 32
TINY = dict(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4)


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def reference_vae(seed: int = 0, **overrides) -> "diffusers.AutoencoderKL":
    """A tiny random diffusers AutoencoderKL whose outputs span most of [-1, 1] (random init alone
    gives a nearly flat image, which would make "within one 8-bit level" an empty check)."""
    torch.manual_seed(seed)
    kw = {**TINY, **overrides}
    n = len(kw["block_out_channels"])
    vae = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n,
                                  up_block_types=("UpDecoderBlock2D",) * n, sample_size=SIZE, **kw).eval()
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(4.0)
    return vae


def diffusers_to_ldm(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """The inverse of the LDM → diffusers mapping: diffusers names → the single-file LDM/SD layout."""
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    out = {}
    for key, value in state.items():
        p = key.split(".")
        if p[1] == "down_blocks":
            if p[3] == "resnets":
                new = f"encoder.down.{p[2]}.block.{p[4]}.{'.'.join(p[5:])}"
            else:
                new = f"encoder.down.{p[2]}.downsample.conv.{p[-1]}"
        elif p[1] == "up_blocks":
            level = levels - 1 - int(p[2])
            if p[3] == "resnets":
                new = f"decoder.up.{level}.block.{p[4]}.{'.'.join(p[5:])}"
            else:
                new = f"decoder.up.{level}.upsample.conv.{p[-1]}"
        elif p[1] == "mid_block" and p[2] == "resnets":
            new = f"{p[0]}.mid.block_{int(p[3]) + 1}.{'.'.join(p[4:])}"
        elif p[1] == "mid_block":
            new = f"{p[0]}.mid.attn_1.{attn[p[4]]}.{p[-1]}"
            if p[4] != "group_norm" and p[-1] == "weight":
                value = value[:, :, None, None]  # LDM: 1×1 convs
        elif p[1] == "conv_norm_out":
            new = f"{p[0]}.norm_out.{p[-1]}"
        else:
            new = key
        out[new.replace("conv_shortcut", "nin_shortcut")] = value.contiguous()
    return out


def _images(folder: Path, n: int = 4, seed: int = 0) -> Path:
    """Smooth random RGB images (upsampled noise), the kind of input an autoencoder sees."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g)
    big = torch.nn.functional.interpolate(small, size=SIZE, mode="bilinear", align_corners=False)
    for i, img in enumerate(big):
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    return folder


def _load_u8(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("img*.png"))}


def _diffusers_u8(vae, u8: np.ndarray) -> np.ndarray:
    """diffusers' reconstruction of a uint8 image, back to uint8 the usual way."""
    x = torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        y = vae(x, sample_posterior=False).sample
    return ((y[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


# -- the architecture ----------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    {},
    {"block_out_channels": (8, 8, 16), "layers_per_block": 2, "latent_channels": 2},
    {"use_quant_conv": False, "use_post_quant_conv": False, "mid_block_add_attention": False},
])
def test_same_computation_as_diffusers(overrides):
    ref = reference_vae(**overrides)
    model = create_model("ldm-kl", image_size=SIZE, channels=3, **{**TINY, **overrides}).eval()
    assert set(model.state_dict()) == set(ref.state_dict())
    model.load_state_dict(ref.state_dict())
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
        post = model.encode(x)
        torch.testing.assert_close(post.mode(), dist.mode(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(post.logvar, dist.logvar, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(post.kl(), dist.kl(), rtol=1e-4, atol=1e-4)
        z = torch.randn(2, *model.latent_shape)
        torch.testing.assert_close(model.decode(z), ref.decode(z).sample, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(x).recon, ref(x, sample_posterior=False).sample, rtol=1e-4, atol=1e-4)
    assert model.latent_shape == (overrides.get("latent_channels", 4), *dist.mean.shape[-2:])


def test_posterior_sample_and_scaled_prior():
    model = create_model("ldm-kl", image_size=SIZE, channels=3, scaling_factor=0.5, shift_factor=0.1, **TINY).eval()
    x = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    post = model.encode(x)
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(post.sample(generator=g), post.mean + torch.exp(0.5 * post.logvar) * eps)
    # sample(): N(0, I) in the scaled space, decoded from z / scale + shift
    with torch.no_grad():
        got = model.sample(2, generator=torch.Generator().manual_seed(1))
        z = torch.randn((2, *model.latent_shape), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(got, model.decode(z / 0.5 + 0.1))


# -- import ----------------------------------------------------------------------------------------------
def test_import_diffusers_folder_reconstructs_like_diffusers(tmp_path):
    ref = reference_vae()
    ref.save_pretrained(tmp_path / "vae")
    code, out = _cli("import", tmp_path / "vae", "--out", tmp_path / "sd.safetensors")
    assert code == 0, out
    loaded = load_model(tmp_path / "sd.safetensors")
    assert loaded.header.family == "ldm-kl"
    assert (loaded.data.image_size, loaded.data.channels, loaded.data.value_range) == (SIZE, 3, (-1.0, 1.0))
    assert loaded.model.config.scaling_factor == pytest.approx(ref.config.scaling_factor)

    images = _images(tmp_path / "images")
    code, out = _cli("reconstruct", tmp_path / "sd.safetensors", "--data", images, "--out", tmp_path / "rec")
    assert code == 0, out
    inputs, recs = _load_u8(images), _load_u8(tmp_path / "rec")
    assert set(recs) == set(inputs)
    spread = []
    for name, u8 in inputs.items():
        expected = _diffusers_u8(ref, u8)
        diff = np.abs(recs[name].astype(int) - expected.astype(int))
        assert diff.max() <= 1, f"{name}: {diff.max()} levels off diffusers"
        spread.append(expected.std())
    assert min(spread) > 10  # the reconstructions are real images, not a flat grey


def test_import_legacy_attention_names_and_pipeline_folder(tmp_path):
    """Older diffusers uploads name attention query/key/value/proj_attn; a pipeline keeps the VAE in vae/."""
    ref = reference_vae(seed=1)
    (tmp_path / "pipe" / "vae").mkdir(parents=True)
    ref.save_pretrained(tmp_path / "pipe" / "vae")
    weights = tmp_path / "pipe" / "vae" / "diffusion_pytorch_model.safetensors"
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for k, v in load_file(str(weights)).items():
        for new, legacy in old.items():
            k = k.replace(f".{new}.", f".{legacy}.")
        state[k] = v
    save_file(state, str(weights))
    code, out = _cli("import", tmp_path / "pipe", "--out", tmp_path / "m.safetensors")
    assert code == 0, out
    got = load_model(tmp_path / "m.safetensors").model.state_dict()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(got[k], v)


@pytest.mark.parametrize("kind", ["safetensors", "full-sd-safetensors", "ckpt"])
def test_import_single_file_ldm_layout(tmp_path, kind):
    ref = reference_vae(seed=2, block_out_channels=(8, 8, 16), layers_per_block=2)
    ldm = diffusers_to_ldm(ref.state_dict(), levels=3)
    assert "encoder.down.0.block.0.norm1.weight" in ldm and "decoder.up.2.upsample.conv.weight" in ldm
    if kind == "ckpt":
        src = tmp_path / "vae.ckpt"
        torch.save({"state_dict": {**ldm, "loss.logvar": torch.zeros(())}, "global_step": 10}, src)
    else:
        src = tmp_path / "vae.safetensors"
        if kind == "full-sd-safetensors":  # a whole SD checkpoint: the VAE under first_stage_model.
            ldm = {**{f"first_stage_model.{k}": v for k, v in ldm.items()},
                   "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}
        save_file(ldm, str(src))
    code, out = _cli("import", src, "--out", tmp_path / "m.safetensors", "--norm-num-groups", 4,
                     "--image-size", SIZE)
    assert code == 0, out
    loaded = load_model(tmp_path / "m.safetensors")
    cfg = loaded.model.config
    assert (cfg.block_out_channels, cfg.layers_per_block, cfg.latent_channels) == ((8, 8, 16), 2, 4)
    assert cfg.scaling_factor == pytest.approx(0.18215)  # SD 1.x/2.x default for single files
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).recon, ref(x, sample_posterior=False).sample,
                                   rtol=1e-4, atol=1e-4)


class _NotATensor:
    pass


def test_import_refuses_unsafe_and_unknown_sources(tmp_path, monkeypatch):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "obj": _NotATensor()}, evil)
    code, out = _cli("import", evil, "--out", tmp_path / "m.safetensors")
    assert code == 2 and "weights_only" in out and "never unpickles" in out
    assert len(out.strip().splitlines()) == 1
    (tmp_path / "notes.txt").write_text("hi")
    code, out = _cli("import", tmp_path / "notes.txt", "--out", tmp_path / "m.safetensors")
    assert code == 2 and "cannot import a .txt file" in out
    (tmp_path / "empty").mkdir()
    code, out = _cli("import", tmp_path / "empty", "--out", tmp_path / "m.safetensors")
    assert code == 2 and "config.json" in out
    code, out = _cli("import", tmp_path / "missing", "--out", tmp_path / "m.safetensors")
    assert code == 2 and "does not exist" in out
    cfg = {"_class_name": "VQModel", "block_out_channels": [8]}
    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "config.json").write_text(json.dumps(cfg))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "vq" / "diffusion_pytorch_model.safetensors"))
    code, out = _cli("import", tmp_path / "vq", "--out", tmp_path / "m.safetensors")
    assert code == 2 and "VQModel" in out
    assert not (tmp_path / "m.safetensors").exists()


def test_import_hf_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, out = _cli("import", "hf:stabilityai/sd-vae-ft-mse", "--out", tmp_path / "m.safetensors")
    assert code == 2, out
    assert "huggingface-cli download stabilityai/sd-vae-ft-mse --local-dir DIR" in out
    assert "aecli import DIR" in out and len(out.strip().splitlines()) == 1


def test_import_hf_calls_the_hub_with_the_repo_and_reads_its_folder(tmp_path, monkeypatch):
    """No network here: huggingface_hub's download is replaced by one that records its arguments and
    returns a local snapshot folder, as the real one does."""
    import huggingface_hub

    ref = reference_vae(seed=2)
    ref.save_pretrained(tmp_path / "snapshot" / "vae")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    code, out = _cli("import", "hf:someone/some-pipeline/vae", "--out", tmp_path / "m.safetensors")
    assert code == 0, out
    assert calls == [("someone/some-pipeline",
                      {"allow_patterns": ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"]})]
    model = load_model(tmp_path / "m.safetensors").model
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x).recon, ref(x, sample_posterior=False).sample, rtol=1e-4, atol=1e-4)


# -- export ----------------------------------------------------------------------------------------------
def test_export_loads_in_diffusers_and_reproduces_aecli(tmp_path):
    torch.manual_seed(5)
    model = create_model("ldm-kl", image_size=SIZE, channels=3, scaling_factor=0.3, **TINY).eval()
    ckpt = save_model(tmp_path / "m.safetensors", model, DataSpec(SIZE, 3, (-1.0, 1.0)))
    code, out = _cli("export", ckpt, "--diffusers", tmp_path / "hf")
    assert code == 0, out
    vae = diffusers.AutoencoderKL.from_pretrained(tmp_path / "hf").eval()
    assert vae.config.scaling_factor == pytest.approx(0.3) and vae.config.sample_size == SIZE
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(vae(x, sample_posterior=False).sample, model(x).recon, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(vae.encode(x).latent_dist.mean, model.encode(x).mean, rtol=1e-4, atol=1e-4)
    # and back: importing the exported folder gives the same weights
    code, out = _cli("import", tmp_path / "hf", "--out", tmp_path / "back.safetensors")
    assert code == 0, out
    back = load_model(tmp_path / "back.safetensors").model.state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0)


def test_export_and_info_use_the_scale_measured_by_encode(tmp_path):
    """`aecli encode --scale-to-checkpoint` measures 1/std of the latents; export writes that (not the
    config's 1.0) as diffusers' scaling_factor/shift_factor, and `aecli info` shows it."""
    torch.manual_seed(6)
    model = create_model("ldm-kl", image_size=SIZE, channels=3, **TINY).eval()
    ckpt = save_model(tmp_path / "m.safetensors", model, DataSpec(SIZE, 3, (-1.0, 1.0)))
    code, out = _cli("info", ckpt, "--json")
    assert code == 0, out
    assert json.loads(out)["latent_scale"] == {"scaling_factor": 1.0, "shift_factor": 0.0, "from": "config"}
    code, out = _cli("encode", ckpt, "--data", _images(tmp_path / "images", n=6), "--out",
                     tmp_path / "lat.safetensors", "--scale-to-checkpoint", "--device", "cpu")
    assert code == 0, out
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lat.safetensors"), "pt") as fh:
        meta = fh.metadata()
    scale, shift = json.loads(meta["scale_factor"]), json.loads(meta["shift_factor"])
    assert scale != pytest.approx(1.0, abs=1e-3)  # a measured value, not the config's default
    code, out = _cli("export", ckpt, "--diffusers", tmp_path / "hf")
    assert code == 0, out
    assert f"scaling_factor {scale:.6g}" in out and "aecli encode --scale-to-checkpoint" in out
    vae = diffusers.AutoencoderKL.from_pretrained(tmp_path / "hf")
    assert vae.config.scaling_factor == pytest.approx(scale, rel=1e-12)
    assert vae.config.shift_factor == pytest.approx(shift, rel=1e-12)
    code, out = _cli("info", ckpt, "--json")
    assert code == 0, out
    shown = json.loads(out)["latent_scale"]
    assert shown["scaling_factor"] == pytest.approx(scale, rel=1e-12) and shown["n"] == 6
    assert shown["from"] == "aecli encode --scale-to-checkpoint"


def test_malformed_latent_scale_is_reported_by_info_and_refused_by_export(tmp_path):
    from aecli.checkpoint.format import LATENT_SCALE_KEY, set_metadata

    model = create_model("ldm-kl", image_size=SIZE, channels=3, **TINY).eval()
    ckpt = save_model(tmp_path / "m.safetensors", model, DataSpec(SIZE, 3, (-1.0, 1.0)))
    set_metadata(ckpt, LATENT_SCALE_KEY, {"scale_factor": -2.0})
    code, out = _cli("info", ckpt, "--json")
    assert code == 0, out  # an optional entry: the rest of the summary is still shown
    assert "scale -2.0" in json.loads(out)["latent_scale"]["error"]
    code, out = _cli("export", ckpt, "--diffusers", tmp_path / "hf")
    assert code == 2 and "--scale-to-checkpoint" in out and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "hf" / "config.json").exists()


def test_export_refuses_other_families(tmp_path):
    model = create_model("conv-vae", image_size=SIZE, channels=3, widths=(4, 8), latent_dim=4)
    ckpt = save_model(tmp_path / "c.safetensors", model, DataSpec(SIZE, 3, (-1.0, 1.0)))
    code, out = _cli("export", ckpt, "--diffusers", tmp_path / "hf")
    assert code == 2 and "only ldm-kl" in out
    assert not (tmp_path / "hf").exists()


# -- training with the LDM objective, then the usual commands --------------------------------------------
def test_train_ldm_objective_then_commands(tmp_path):
    run = tmp_path / "run"
    code, out = _cli("train", "ldm-kl", "--data", "shapes:20", "--image-size", SIZE, "-m", "block_out_channels=8,16",
                     "-m", "layers_per_block=1", "-m", "norm_num_groups=4", "--objective", "ldm", "--recon", "l1",
                     "--beta", "1e-6", "--adv", "0.5", "--adv-start", "1", "--epochs", "1", "--batch-size", "8",
                     "--log-every", "1", "--val-count", "4", "--out", run)
    assert code == 0, out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    assert len(steps) == 2
    assert {"d_weight", "logits_real", "logits_fake", "adv_d", "nll", "logvar", "kl"} <= set(steps[-1])
    assert steps[0].get("disc_factor") == 0.0 and steps[-1]["d_weight"] > 0  # the GAN starts at step 1
    from safetensors import safe_open

    with safe_open(str(run / "state.safetensors"), "pt") as fh:
        assert fh.get_tensor("loss.value").item() != 0.0  # the log-variance was trained and is resumable
    ckpt = run / "last.safetensors"
    for args in (("reconstruct", ckpt, "--data", "shapes:20", "--n", 4, "--out", tmp_path / "rec"),
                 ("sample", ckpt, "--n", 4, "--out", tmp_path / "s.png"),
                 ("evaluate", ckpt, "--metrics", "psnr")):
        code, out = _cli(*args)
        assert code == 0, out
    code, out = _cli("export", ckpt, "--diffusers", tmp_path / "hf")
    assert code == 0, out
