"""`aecli encode` / `aecli decode`: one latents file per data set, resumable shards, the LDM scale factor,
and decoded images equal to `aecli reconstruct`'s."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from aecli.checkpoint import load_model, read_header, save_model
from aecli.cli import app
from aecli.data.spec import DataSpec
from aecli.errors import UsageError
from aecli.inference import reconstruct
from aecli.inference.encode import decode, encode, parts_dir

SIZE = 32


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _save(path: Path, model, class_names: list[str] | None = None) -> Path:
    cfg = model.config
    return save_model(path, model, DataSpec(cfg.image_size, cfg.channels, model.value_range, class_names or [], "test"))


def _images(folder: Path, count: int) -> Path:
    """Labelled RGB images in class sub-folders, of another size than the models take."""
    rng = np.random.default_rng(0)
    for i in range(count):
        arr = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
        arr[:, : 2 + i % 20] = 255 - 9 * i
        (folder / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / f"c{i % 3}" / f"img {i}.png")
    return folder


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))
            if p.name != "comparison.png"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _images(tmp_path_factory.mktemp("enc") / "imgs", 21)


@pytest.mark.parametrize("family,kw", [("conv-vae", {}), ("flow-vae", {}), ("conv-ae", {}),
                                       ("conv-vae", {"num_classes": 3})], ids=["vae", "flow", "ae", "cvae"])
def test_decode_equals_reconstruct(tmp_path: Path, data: Path, family: str, kw: dict) -> None:
    torch.manual_seed(1)
    model = tiny_model(family, SIZE, 3, **kw)
    ckpt = _save(tmp_path / "m.safetensors", model, ["c0", "c1", "c2"] if kw else None)
    res = encode(ckpt, str(data), tmp_path / "lat.safetensors", batch_size=8, shard_size=10, progress=False)
    assert res.count == 21 and res.latent_shape == tuple(model.latent_shape)
    assert not parts_dir(tmp_path / "lat.safetensors").exists()  # shards merged and removed
    # Batches of the same images: the same pixels. Other batch sizes may round a pixel the other way (the
    # convolutions' float sums depend on the batch shape), never by more than one level.
    decode(ckpt, tmp_path / "lat.safetensors", tmp_path / "dec", batch_size=8, progress=False)
    decode(ckpt, tmp_path / "lat.safetensors", tmp_path / "dec5", batch_size=5, progress=False)
    reconstruct([ckpt], str(data), tmp_path / "rec", batch_size=8, progress=False)
    rec, dec, dec5 = _pngs(tmp_path / "rec"), _pngs(tmp_path / "dec"), _pngs(tmp_path / "dec5")
    assert len(rec) == 21 and rec.keys() == dec.keys() == dec5.keys()
    for name in rec:
        np.testing.assert_array_equal(dec[name], rec[name], err_msg=name)
        assert np.abs(dec5[name].astype(int) - rec[name]).max() <= 1, name
    # The file: posterior means (the encoder called directly), log-variances for VAEs, labels, names.
    with safe_open(str(tmp_path / "lat.safetensors"), framework="pt") as fh:
        keys, meta = set(fh.keys()), fh.metadata()
        z, labels = fh.get_tensor("latents"), fh.get_tensor("labels")
        logvar = fh.get_tensor("logvar") if "logvar" in keys else None
    assert keys == ({"latents", "labels", "logvar"} if family != "conv-ae" else {"latents", "labels"})
    assert labels.tolist() == [int(n.split("/")[0][1]) for n in json.loads(meta["names"])]
    from aecli.data import open_source, to_model_input

    ds = open_source(str(data), image_size=SIZE, channels=3, split="all")
    loaded = load_model(ckpt).model
    with torch.no_grad():
        post = loaded.encode(to_model_input(ds.tensor(), model.value_range))
    torch.testing.assert_close(z, post.mode(), rtol=1e-5, atol=1e-6)
    if logvar is not None:
        torch.testing.assert_close(logvar, post.logvar, rtol=1e-5, atol=1e-6)


def test_vq_files_hold_code_indices_and_decode_from_either(tmp_path: Path, data: Path) -> None:
    torch.manual_seed(6)
    model = tiny_model("vq-vae", SIZE, 3)
    ckpt = _save(tmp_path / "vq.safetensors", model)
    encode(ckpt, str(data), tmp_path / "lat.safetensors", shard_size=8, progress=False)
    with safe_open(str(tmp_path / "lat.safetensors"), framework="pt") as fh:
        z, idx = fh.get_tensor("latents"), fh.get_tensor("indices")
    assert idx.dtype == torch.int64 and tuple(idx.shape) == (21, *model.latent_shape[1:])
    # The latents are exactly the codebook vectors the indices name.
    torch.testing.assert_close(z, load_model(ckpt).model.quantizer.lookup(idx), rtol=0, atol=0)
    reconstruct([ckpt], str(data), tmp_path / "rec", progress=False)
    decode(ckpt, tmp_path / "lat.safetensors", tmp_path / "dec", progress=False)
    np.save(tmp_path / "codes.npy", idx.numpy())  # e.g. what a prior over the codes generates
    decode(ckpt, tmp_path / "codes.npy", tmp_path / "codes", progress=False)
    rec, dec, codes = _pngs(tmp_path / "rec"), _pngs(tmp_path / "dec"), _pngs(tmp_path / "codes")
    assert len(rec) == 21 and rec.keys() == dec.keys()
    for i, name in enumerate(rec):  # codes.npy has no names: its PNGs are numbered in file order
        np.testing.assert_array_equal(dec[name], rec[name])
        np.testing.assert_array_equal(codes[f"{i:06d}.png"], rec[name])
    code, out = _cli("decode", ckpt, tmp_path / "codes.npy", "--out", tmp_path / "x", "--scaled")
    assert code == 2 and "integer code indices" in out


def test_scale_factor_is_ldm_std_and_goes_into_the_checkpoint(tmp_path: Path, data: Path) -> None:
    torch.manual_seed(2)
    model = tiny_model("conv-ae", SIZE, 3)
    ckpt = _save(tmp_path / "ae.safetensors", model)
    before = read_header(ckpt)
    code, out = _cli("encode", ckpt, "--data", data, "--out", tmp_path / "lat.safetensors", "--shard-size", "4",
                     "--scale-to-checkpoint", "--device", "cpu")
    assert code == 0, out
    with safe_open(str(tmp_path / "lat.safetensors"), framework="pt") as fh:
        z, meta = fh.get_tensor("latents").double(), fh.metadata()
    # A plain AE's posterior sample is its code: the factor is exactly 1/std over every element (LDM).
    assert json.loads(meta["scale_factor"]) == pytest.approx(1 / float(z.flatten().std()), rel=1e-9)
    assert json.loads(meta["shift_factor"]) == pytest.approx(float(z.mean()), rel=1e-9, abs=1e-12)
    after = read_header(ckpt)
    entry = json.loads(after.metadata["latent_scale"])
    assert entry["scale_factor"] == pytest.approx(json.loads(meta["scale_factor"]))
    assert entry["n"] == 21
    assert {k: v for k, v in after.metadata.items() if k != "latent_scale"} == before.metadata
    reloaded = load_model(ckpt).model
    for k, v in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[k], v, rtol=0, atol=0)
    # A diffusion model's output is scaled; --scaled maps it back with the checkpoint's factor when the
    # file (here a bare .npy) has none.
    scale, shift = entry["scale_factor"], entry["shift_factor"]
    np.save(tmp_path / "gen.npy", ((z.float() - shift) * scale).numpy())
    np.save(tmp_path / "raw.npy", z.float().numpy())
    assert _cli("decode", ckpt, tmp_path / "gen.npy", "--out", tmp_path / "a", "--scaled")[0] == 0
    assert _cli("decode", ckpt, tmp_path / "raw.npy", "--out", tmp_path / "b")[0] == 0
    a, b = _pngs(tmp_path / "a"), _pngs(tmp_path / "b")
    assert len(a) == 21 and a.keys() == b.keys()
    assert max(np.abs(a[k].astype(int) - b[k].astype(int)).max() for k in a) <= 1  # float round trip


def test_vae_scale_factor_matches_the_posterior_spread(tmp_path: Path, data: Path) -> None:
    """For a VAE the samples' variance is var(mean) + E[exp(logvar)]: check the factor against that."""
    torch.manual_seed(3)
    ckpt = _save(tmp_path / "vae.safetensors", tiny_model("conv-vae", SIZE, 3, latent_dim=64))
    res = encode(ckpt, str(data), tmp_path / "lat.safetensors", progress=False)
    with safe_open(str(tmp_path / "lat.safetensors"), framework="pt") as fh:
        mu, logvar = fh.get_tensor("latents").double(), fh.get_tensor("logvar").double()
    expected_std = float((mu.var() + logvar.exp().mean()).sqrt())
    assert res.scale_factor == pytest.approx(1 / expected_std, rel=0.1)  # 21 × 64 samples: ~3 % noise
    assert res.shift_factor == pytest.approx(float(mu.mean()), abs=0.1 * expected_std)


def test_encode_resumes_from_shards(tmp_path: Path, data: Path, monkeypatch) -> None:
    torch.manual_seed(4)
    ckpt = _save(tmp_path / "vae.safetensors", tiny_model("conv-vae", SIZE, 3))
    fresh = encode(ckpt, str(data), tmp_path / "fresh.safetensors", shard_size=5, progress=False)
    out = tmp_path / "lat.safetensors"

    import aecli.inference.encode as encode_module

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(encode_module, "concat_shards", killed)
    with pytest.raises(KeyboardInterrupt):
        encode(ckpt, str(data), out, shard_size=5, progress=False)
    monkeypatch.undo()
    shards = sorted(parts_dir(out).glob("0*.safetensors"))
    assert len(shards) == 5 and not out.exists()
    shards[-2].unlink()  # a kill before the 4th shard was written
    calls = []
    model_encode = type(load_model(ckpt).model).encode
    monkeypatch.setattr(type(load_model(ckpt).model), "encode",
                        lambda self, x: calls.append(len(x)) or model_encode(self, x))
    res = encode(ckpt, str(data), out, shard_size=5, progress=False)
    assert res.resumed_shards == 4 and sum(calls) == 5  # only the missing shard was encoded again
    assert res.scale_factor == fresh.scale_factor and res.shift_factor == fresh.shift_factor
    with safe_open(str(out), framework="pt") as a, safe_open(str(fresh.out), framework="pt") as b:
        assert set(a.keys()) == set(b.keys())
        for k in a.keys():
            torch.testing.assert_close(a.get_tensor(k), b.get_tensor(k), rtol=0, atol=0)
        assert json.loads(a.metadata()["names"]) == json.loads(b.metadata()["names"])
    # Leftover shards of other settings are never mixed in.
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(encode_module, "concat_shards", killed)
        encode(ckpt, str(data), out, shard_size=5, progress=False)
    monkeypatch.undo()
    code, text = _cli("encode", ckpt, "--data", data, "--out", out, "--shard-size", "5", "--seed", "9")
    assert code == 2 and "another encoding" in text and len(text.strip().splitlines()) == 1


def test_bad_inputs_are_one_line_errors(tmp_path: Path, data: Path) -> None:
    torch.manual_seed(5)
    ckpt = _save(tmp_path / "vae.safetensors", tiny_model("conv-vae", SIZE, 3))
    gan = _save(tmp_path / "gan.safetensors", tiny_model("gan", SIZE, 3))
    np.save(tmp_path / "wrong.npy", np.zeros((3, 7), dtype=np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((3, 8), dtype=np.int64))
    cases = [
        (("decode", ckpt, tmp_path / "wrong.npy", "--out", tmp_path / "o"), "do not fit"),
        (("decode", ckpt, tmp_path / "ints.npy", "--out", tmp_path / "o"), "holds integer tensors, not latents"),
        (("decode", ckpt, tmp_path / "nope.npy", "--out", tmp_path / "o"), "does not exist"),
        (("decode", ckpt, tmp_path / "wrong.npy", "--out", tmp_path / "o", "--scaled"), "do not fit"),
        (("encode", gan, "--data", data, "--out", tmp_path / "x.safetensors"), "no encoder"),
        (("encode", ckpt, "--data", data, "--out", tmp_path / "x.pt"), ".safetensors"),
        (("encode", ckpt, "--data", data, "--out", tmp_path / "x.safetensors", "--shard-size", "0"), "--shard-size"),
    ]
    for args, needle in cases:
        code, out = _cli(*args)
        assert code == 2 and needle in out and len(out.strip().splitlines()) == 1, (args, out)
    np.save(tmp_path / "right.npy", np.zeros((2, 8), dtype=np.float32))
    with pytest.raises(UsageError, match="scale factor"):
        decode(ckpt, tmp_path / "right.npy", tmp_path / "o", scaled=True, progress=False)


def test_scaled_falls_back_to_the_families_own_convention(tmp_path: Path, data: Path) -> None:
    """An ldm-kl checkpoint (e.g. an imported SD VAE) carries scaling_factor/shift_factor in its config:
    without a factor in the file or the metadata, --scaled uses them; encode/decode keep its spatial shape."""
    torch.manual_seed(7)
    model = tiny_model("ldm-kl", SIZE, 3, scaling_factor=0.5, shift_factor=0.25)
    ckpt = _save(tmp_path / "kl.safetensors", model)
    res = encode(ckpt, str(data), tmp_path / "lat.safetensors", n=4, progress=False)
    assert res.latent_shape == tuple(model.latent_shape) and len(res.latent_shape) == 3
    g = torch.randn(3, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "gen.npy", g.numpy())
    np.save(tmp_path / "raw.npy", (g / 0.5 + 0.25).numpy())
    decode(ckpt, tmp_path / "gen.npy", tmp_path / "a", scaled=True, progress=False)
    decode(ckpt, tmp_path / "raw.npy", tmp_path / "b", progress=False)
    a, b = _pngs(tmp_path / "a"), _pngs(tmp_path / "b")
    assert len(a) == 3 and all(np.abs(a[k].astype(int) - b[k].astype(int)).max() <= 1 for k in a)
    decode(ckpt, tmp_path / "gen.npy", tmp_path / "c", progress=False)  # unscaled: other images
    c = _pngs(tmp_path / "c")
    assert any(np.abs(a[k].astype(int) - c[k].astype(int)).max() > 1 for k in a)
