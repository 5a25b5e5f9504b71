"""reconstruct / sample / interpolate / arithmetic: every command on every family that supports it,
clear refusals for the others, and the numbers checked against the models called directly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_kwargs, tiny_model
from PIL import Image
from typer.testing import CliRunner

from aecli.checkpoint import load_model, save_model
from aecli.cli import app
from aecli.models import supported_commands
from aecli.data import open_source, to_model_input
from aecli.data.spec import DataSpec
from aecli.errors import UsageError
from aecli.images import PAD, grid_layout, tile_size_for
from aecli.inference import (
    arithmetic,
    expression,
    fit_gaussian,
    interpolate,
    interpolate_latents,
    lerp,
    load_latents,
    reconstruct,
    sample,
    slerp,
)
from aecli.inference.common import output_name, unique_output_names
from aecli.inference.interpolate import walk_labels
from aecli.inference.sample import MANIFEST, draw_eps
from aecli.models import get_family, list_models
from aecli.progress import Progress

SIZE = 32
FAMILIES = list_models()


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def _grid_shape(rows: int, cols: int, size: int = SIZE, **labels: object) -> tuple[int, int]:
    """(height, width) of a grid PNG of rows × cols tiles with these labels (see aecli.images)."""
    lay = grid_layout(rows * cols, size, cols, **labels)  # type: ignore[arg-type]
    assert lay.rows == rows and lay.tile == tile_size_for(size)
    return lay.height, lay.width


def _tile(path: Path, rows: int, cols: int, r: int, c: int, size: int = SIZE) -> np.ndarray:
    """Tile (r, c) of a grid PNG back at the images' own size. Tiles end at the bottom-right corner
    (labels sit left and above), and small images are enlarged by a whole factor (nearest), so every
    f-th pixel is the original."""
    grid, tile = _png(path).astype(int), tile_size_for(size)
    step, f = tile + PAD, tile // size
    y = grid.shape[0] - (rows - r) * step
    x = grid.shape[1] - (cols - c) * step
    block = grid[y : y + tile, x : x + tile]
    assert np.array_equal(block, np.repeat(np.repeat(block[::f, ::f], f, 0), f, 1)), "not a nearest enlargement"
    return block[::f, ::f]


def _save(path: Path, model, class_names: list[str] | None = None) -> Path:
    cfg = model.config
    spec = DataSpec(cfg.image_size, cfg.channels, model.value_range, class_names or [], "test")
    return save_model(path, model, spec)


def _write_images(folder: Path, count: int, seed: int, prefix: str = "img ") -> list[Path]:
    """RGB PNGs of another size than the models take (the commands resize/convert them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        arr = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
        arr[:, : 4 + 3 * i] = 255 - 40 * i  # a distinct band per image
        p = folder / f"{prefix}{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inference")


@pytest.fixture(scope="module")
def images(work: Path) -> dict[str, Path]:
    for name, count, seed in (("inputs", 5, 0), ("plus", 3, 1), ("minus", 3, 2), ("apply", 2, 3)):
        _write_images(work / name, count, seed)
    return {name: work / name for name in ("inputs", "plus", "minus", "apply")}


@pytest.fixture(scope="module")
def trained(work: Path) -> dict[str, Path]:
    """conv-ae and conv-vae trained for a few steps (4) by the real training engine."""
    from aecli.training import TrainConfig, train

    out = {}
    for family in ("conv-ae", "conv-vae"):
        cfg = TrainConfig(family=family, model=tiny_kwargs(family, SIZE, 1), data="shapes:40", channels=1,
                          image_size=SIZE, val_count=8, epochs=1, batch_size=8, out=str(work / f"run-{family}"),
                          log_every=1000, device="cpu", seed=0)
        out[family] = train(cfg).run_dir / "last.safetensors"
    return out


@pytest.fixture(scope="module")
def family_ckpts(work: Path) -> dict[str, Path]:
    """A tiny checkpoint of every registered family (random weights), plus a conditional and a
    spatial-latent VAE."""
    torch.manual_seed(0)
    paths = {f: _save(work / f"{f}.safetensors", tiny_model(f, SIZE, 1)) for f in FAMILIES}
    paths["cond-vae"] = _save(work / "cond.safetensors", tiny_model("conv-vae", SIZE, 1, num_classes=3),
                              ["a", "b", "c"])
    paths["spatial-vae"] = _save(work / "spatial.safetensors",
                                 tiny_model("conv-vae", SIZE, 1, latent="spatial", latent_dim=2))
    paths["spatial-ae"] = _save(work / "spatial-ae.safetensors", tiny_model("conv-ae", SIZE, 1, latent="spatial"))
    return paths


def _latents_of(model, files: list[Path], spec) -> torch.Tensor:
    """Independent reference: read the files, encode, posterior mean (pushed through flows, if any)."""
    x = to_model_input(open_source([str(f) for f in files], image_size=spec.image_size,
                                   channels=spec.channels).images, spec.value_range)
    with torch.no_grad():
        z, _ = model.transform_latent(model.encode(x).mode())
    return z


# -- reconstruct ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_reconstruct_every_family(family: str, family_ckpts, images, tmp_path: Path) -> None:
    cls = get_family(family)
    if not cls.has_encoder:
        code, out = _cli("reconstruct", family_ckpts[family], "--data", images["inputs"], "--out", tmp_path / "r",
                         "--device", "cpu")
        assert code == 2 and "no encoder" in out and family in out and "reconstruct" not in supported_commands(cls)
        return
    res = reconstruct([family_ckpts[family]], str(images["inputs"]), tmp_path / "r", n=3, device="cpu")
    files = sorted((tmp_path / "r").glob("*.png"))
    assert [f.name for f in files] == ["comparison.png", "img 0.png", "img 1.png", "img 2.png"]
    assert _png(files[1]).shape == (SIZE, SIZE)
    assert _png(res.comparison).shape == _grid_shape(2, 3, row_labels=["ground truth", family_ckpts[family].stem])
    # Row 2, column 1 of the comparison grid is the second input's reconstruction, as written alone.
    assert np.array_equal(_tile(res.comparison, 2, 3, 1, 1), _png(files[2]))
    assert math.isfinite(res.psnr[family_ckpts[family].stem])


def test_reconstruction_pixels_match_the_model(trained, images, tmp_path: Path) -> None:
    ckpt = load_model(trained["conv-vae"])
    files = sorted(images["inputs"].glob("*.png"))
    x_u8 = open_source([str(f) for f in files], image_size=SIZE, channels=1).images
    with torch.no_grad():
        ref = ckpt.data.to_unit_range(ckpt.model(to_model_input(x_u8, ckpt.data.value_range),
                                                 sample_posterior=False).recon)
    reconstruct([trained["conv-vae"]], str(images["inputs"]), tmp_path, device="cpu", batch_size=2)
    for f, r in zip(files, ref):
        got = _png(tmp_path / f.name).astype(int)
        assert np.abs(got - (r[0].numpy() * 255).round().astype(int)).max() <= 1


def test_reconstruct_two_checkpoints_random_and_latents(trained, images, tmp_path: Path) -> None:
    ae, vae = trained["conv-ae"], trained["conv-vae"]
    lat = tmp_path / "lat.safetensors"
    args = ["reconstruct", ae, vae, "--data", images["inputs"], "--n", 3, "--random",
            "--device", "cpu", "--save-latents", lat, "--seed", 4]
    code, out = _cli(*args, "--out", tmp_path / "a")
    assert code == 0, out
    assert "PSNR" in out
    # Two checkpoints named last.safetensors in two runs get distinct sub-folders.
    dirs = sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir())
    assert dirs == ["run-conv-ae-last", "run-conv-vae-last"]
    picked = sorted(p.name for p in (tmp_path / "a" / dirs[0]).glob("*.png"))
    assert len(picked) == 3 and picked == sorted(p.name for p in (tmp_path / "a" / dirs[1]).glob("*.png"))
    assert _png(tmp_path / "a" / "comparison.png").shape == _grid_shape(3, 3, row_labels=["ground truth", *dirs])
    # --random picks randperm(N)[:n] of a generator seeded with --seed; the same seed picks the same.
    expected = sorted(torch.randperm(5, generator=torch.Generator().manual_seed(4))[:3].tolist())
    assert picked == [f"img {i}.png" for i in expected]
    _cli(*args, "--out", tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b" / dirs[0]).glob("*.png")) == picked
    _cli(*args[:-4], "--seed", 2, "--out", tmp_path / "c", "--device", "cpu")  # seed 2 picks images 1, 3, 4
    assert sorted(p.name for p in (tmp_path / "c" / dirs[0]).glob("*.png")) == ["img 1.png", "img 3.png", "img 4.png"]
    # The latents file: names of the inputs, and latents equal to encoding them directly.
    tensors, names, meta = load_latents(lat)
    assert [Path(n).name for n in names] == picked
    files = [images["inputs"] / n for n in names]
    for path, key in ((ae, "latents.run-conv-ae-last"), (vae, "latents.run-conv-vae-last")):
        model = load_model(path)
        torch.testing.assert_close(tensors[key], _latents_of(model.model, files, model.data), rtol=1e-5, atol=1e-5)
    assert "logvar.run-conv-vae-last" in tensors and "logvar.run-conv-ae-last" not in tensors
    assert [c["family"] for c in meta["checkpoints"]] == ["conv-ae", "conv-vae"]


def test_output_names_stay_inside(family_ckpts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert output_name("../../etc/passwd") == "etc/passwd.png"
    assert output_name("/abs/dir/x.jpg") == "x.png"
    assert output_name("cls/sub/x.jpeg") == "cls/sub/x.png"
    assert output_name("digits:3") == "digits_3.png"
    assert output_name("..") == "image.png"
    assert output_name("b/../a/x.png") == "b/a/x.png"
    assert unique_output_names(["a/x.jpg", "a/x.png", "/q/a/x.bmp"]) == ["a/x.png", "a/x-1.png", "x.png"]
    # A relative input name with '..' parts: the output lands inside --out, never beside the input.
    nested = tmp_path / "deep" / "er"
    nested.mkdir(parents=True)
    _write_images(tmp_path / "src", 1, 0)
    monkeypatch.chdir(nested)
    out = tmp_path / "out"
    res = reconstruct([family_ckpts["mlp-ae"]], ["../../src/img 0.png"], out, device="cpu")
    written = sorted(tmp_path.rglob("*.png"))
    assert written == [tmp_path / "out" / "comparison.png", tmp_path / "out" / "src" / "img 0.png",
                       tmp_path / "src" / "img 0.png"]
    assert res.names == ["../../src/img 0.png"]


def test_size_the_model_cannot_take(family_ckpts, images, tmp_path: Path) -> None:
    code, out = _cli("reconstruct", family_ckpts["mlp-ae"], "--data", images["inputs"], "--out", tmp_path / "a",
                     "--image-size", 64, "--device", "cpu")
    assert code == 2 and "cannot take 64 px" in out and out.count("\n") == 1
    # A fully convolutional model (spatial conv-ae) runs at another size.
    res = reconstruct([family_ckpts["spatial-ae"]], str(images["inputs"]), tmp_path / "b", image_size=64, n=2,
                      device="cpu")
    assert _png(res.files["spatial-ae"][0]).shape == (64, 64)


def test_reconstruct_bad_options(family_ckpts, images, tmp_path: Path) -> None:
    ckpt = family_ckpts["conv-ae"]
    for extra, words in ((["--split", "test"], "--split"), (["--n", 0], "--n"),
                         (["--save-latents", tmp_path / "x.pt"], ".safetensors"),
                         (["--class", "a"], "conditional"), (["--device", "cuda:7"], "device")):
        code, out = _cli("reconstruct", ckpt, "--data", images["inputs"], "--out", tmp_path / "o", *extra)
        assert code == 2 and words in out, (extra, out)


# -- sample -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_sample_every_family(family: str, family_ckpts, images, tmp_path: Path) -> None:
    cls, ckpt = get_family(family), family_ckpts[family]
    if cls.has_prior:
        res = sample(ckpt, tmp_path / "g.png", n=6, device="cpu")
        assert res.rows == 2 and res.columns == 3 and res.prior == "N(0, I) prior"
        assert _png(tmp_path / "g.png").shape == _grid_shape(2, 3)
        res = sample(ckpt, tmp_path / "dir", n=5, batch_size=2, device="cpu")
        assert sorted(p.name for p in (tmp_path / "dir").glob("*.png")) == [f"sample_{i:06d}.png" for i in range(5)]
        return
    code, out = _cli("sample", ckpt, "--n", 4, "--out", tmp_path / "g.png", "--device", "cpu")
    if cls.sample_refusal:  # vq families: neither the prior nor --fit (no prior over codes)
        assert code == 2 and "no prior over its codes" in out and family in out and "--fit" not in out, out
        code, out = _cli("sample", ckpt, "--n", 4, "--out", tmp_path / "g.png", "--fit", images["inputs"],
                         "--fit-split", "all", "--device", "cpu")
        assert code == 2 and "no prior over its codes" in out and "`sample --fit`" in out, out
        assert not (tmp_path / "g.png").exists()
        return
    assert code == 2 and "no prior" in out and "--fit" in out, out
    code, out = _cli("sample", ckpt, "--n", 4, "--out", tmp_path / "g.png", "--fit", images["inputs"],
                     "--fit-split", "all", "--device", "cpu")
    if not cls.decodes_latent:  # skip-ae
        assert code == 2 and "skip features" in out and family in out, out
        return
    assert code == 0, out
    assert "Gaussian fitted to 5 latents" in out and ("diagonal" in out or "full-covariance" in out)
    assert _png(tmp_path / "g.png").shape == _grid_shape(2, 2)


def test_sample_fit_draws_from_the_fitted_gaussian(trained, tmp_path: Path) -> None:
    ckpt = load_model(trained["conv-ae"])
    res = sample(trained["conv-ae"], tmp_path / "g.png", n=3, fit="shapes:40", fit_split="all", fit_kind="diag",
                 device="cpu")
    assert res.prior.startswith("diagonal Gaussian fitted to 40 latents")
    data = open_source("shapes:40", image_size=SIZE, channels=1, split="all")
    with torch.no_grad():
        z = ckpt.model.encode(to_model_input(data.images, ckpt.data.value_range)).mode()
        eps = draw_eps(ckpt.model.latent_shape, 0, range(3))
        ref = ckpt.data.to_unit_range(ckpt.model.decode((z.mean(0) + eps * z.std(0)).float()))
    first = _tile(tmp_path / "g.png", 1, 3, 0, 0)  # 3 samples: one row, no empty cell
    assert np.abs(first - (ref[0, 0].numpy() * 255).round()).max() <= 1


def test_sample_seed_determinism_and_batch_independence(family_ckpts, tmp_path: Path) -> None:
    vae = family_ckpts["conv-vae"]  # random weights: its images depend visibly on z
    sample(vae, tmp_path / "a.png", n=8, seed=3, batch_size=3, device="cpu")
    sample(vae, tmp_path / "b.png", n=8, seed=3, batch_size=8, device="cpu")
    sample(vae, tmp_path / "c.png", n=8, seed=4, device="cpu")
    # The same draws whatever the batch size; conv kernels may round differently per batch shape (≤ 1 level).
    assert np.abs(_png(tmp_path / "a.png").astype(int) - _png(tmp_path / "b.png")).max() <= 1
    assert not np.array_equal(_png(tmp_path / "a.png"), _png(tmp_path / "c.png"))
    eps = draw_eps((4000,), 7, range(3))
    assert abs(float(eps.mean())) < 0.05 and abs(float(eps.std()) - 1) < 0.05
    assert not torch.equal(eps, draw_eps((4000,), 8, range(3))) and torch.equal(eps[2], draw_eps((4000,), 7, [2])[0])
    # The numbers: sample i is decode(T · N(0, I) draw seeded by (seed, i)).
    ckpt = load_model(vae)
    sample(vae, tmp_path / "t.png", n=1, seed=3, temperature=0.5, device="cpu")
    with torch.no_grad():
        ref = ckpt.data.to_unit_range(ckpt.model.decode(draw_eps(ckpt.model.latent_shape, 3, [0]) * 0.5))
    got = _tile(tmp_path / "t.png", 1, 1, 0, 0)  # a one-image grid is the image itself, enlarged
    assert np.abs(got - (ref[0, 0].numpy() * 255).round()).max() <= 1


def test_sample_folder_rerun_completes_without_duplicates(trained, tmp_path: Path) -> None:
    vae, out = trained["conv-vae"], tmp_path / "samples"
    first = sample(vae, out, n=7, batch_size=3, device="cpu")
    assert (first.written, first.skipped) == (7, 0)
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    again = sample(vae, out, n=7, batch_size=3, device="cpu")
    assert (again.written, again.skipped) == (0, 7) and len(list(out.glob("*.png"))) == 7
    # An "interrupted" run: two files missing and a temp file left by a kill during a write.
    (out / "sample_000002.png").unlink()
    (out / "sample_000006.png").unlink()
    (out / ".sample_000006.png.abc123.tmp").write_bytes(b"half")
    resumed = sample(vae, out, n=7, batch_size=4, device="cpu")
    assert (resumed.written, resumed.skipped) == (2, 5)
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before
    assert not list(out.glob(".*.tmp")) and json.loads((out / MANIFEST).read_text())["seed"] == 0
    # Growing the set keeps the first files; other settings are refused (no mixed sample sets).
    assert sample(vae, out, n=9, device="cpu").written == 2
    code, msg = _cli("sample", vae, "--n", 9, "--out", out, "--seed", 1, "--device", "cpu")
    assert code == 2 and "other settings" in msg


def test_sample_conditional_per_class_and_class(family_ckpts, tmp_path: Path) -> None:
    ckpt = family_ckpts["cond-vae"]
    res = sample(ckpt, tmp_path / "pc.png", per_class=4, device="cpu")
    assert (res.rows, res.columns) == (3, 4)
    assert _png(tmp_path / "pc.png").shape == _grid_shape(3, 4, row_labels=["a", "b", "c"])
    # Row c is decoded as class c: compare row 2, column 1 (sample index 2·4 + 1) with a direct decode.
    model = load_model(ckpt)
    with torch.no_grad():
        ref = model.data.to_unit_range(model.model.decode(draw_eps(model.model.latent_shape, 0, [9]),
                                                          torch.tensor([2])))
    got = _tile(tmp_path / "pc.png", 3, 4, 2, 1)
    assert np.abs(got - (ref[0, 0].numpy() * 255).round()).max() <= 1
    folder = sample(ckpt, tmp_path / "pcdir", per_class=2, device="cpu")
    assert folder.count == 6 and sorted(p.parent.name for p in (tmp_path / "pcdir").rglob("*.png")) == \
        ["a", "a", "b", "b", "c", "c"]
    assert sample(ckpt, tmp_path / "b.png", n=2, class_name="b", device="cpu").count == 2
    code, out = _cli("sample", ckpt, "--class", "z", "--out", tmp_path / "x.png", "--device", "cpu")
    assert code == 2 and "not a class" in out
    code, out = _cli("sample", family_ckpts["conv-vae"], "--per-class", 2, "--out", tmp_path / "x.png")
    assert code == 2 and "conditional" in out


def test_fit_gaussian_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    data = rng.normal(size=(5000, 4)) @ a.T + np.arange(4)
    full = fit_gaussian(torch.tensor(data, dtype=torch.float32).view(5000, 2, 2), "auto")
    assert full.kind == "full" and full.shape == (2, 2)
    np.testing.assert_allclose(full.mean.numpy(), data.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose((full.scale @ full.scale.T).numpy(), np.cov(data.astype(np.float32).T),
                               rtol=1e-3, atol=1e-3)
    draws = full.transform(torch.randn(20000, 2, 2, generator=torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(np.cov(draws.view(20000, 4).numpy().T), np.cov(data.T), rtol=0.1, atol=0.1)
    diag = fit_gaussian(torch.tensor(data[:3]), "auto")  # N ≤ D: too few for a covariance
    assert diag.kind == "diag"
    np.testing.assert_allclose(diag.scale.numpy(), data[:3].std(0, ddof=1))


# -- interpolate ------------------------------------------------------------------------------------------
def test_lerp_slerp_against_formulas() -> None:
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    for fn in (lerp, slerp):
        assert torch.equal(fn(a, b, 0.0), a) and torch.equal(fn(a, b, 1.0), b)
    torch.testing.assert_close(lerp(a, b, 0.25), torch.tensor([0.75, 0.5, 0.0]))
    # Orthogonal: slerp(t) = sin((1-t)π/2)·a + sin(tπ/2)·b.
    torch.testing.assert_close(slerp(a, b, 1 / 3), torch.tensor([math.sin(math.pi / 3), 2 * math.sin(math.pi / 6), 0]))
    walk = interpolate_latents(a.view(1, 3), b.view(1, 3), 5, "slerp")
    assert walk.shape == (5, 1, 3)
    assert torch.equal(slerp(a, 2 * a, 0.5), lerp(a, 2 * a, 0.5))  # parallel: falls back to lerp
    with pytest.raises(UsageError, match="--steps"):
        interpolate_latents(a, b, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_interpolate_every_family(family: str, family_ckpts, images, tmp_path: Path) -> None:
    cls, ckpt = get_family(family), family_ckpts[family]
    if not cls.decodes_latent:
        code, out = _cli("interpolate", ckpt, "--out", tmp_path / "i.png", "--from", images["inputs"] / "img 0.png",
                         "--to", images["inputs"] / "img 1.png", "--device", "cpu")
        assert code == 2 and "skip features" in out, out
        return
    if cls.has_prior:
        res = interpolate(ckpt, tmp_path / "p.png", steps=4, method="slerp", seed=2, device="cpu")
        torch.testing.assert_close(res.latents[[0, -1]], draw_eps(res.latents.shape[1:], 2, [0, 1]))
        ends = ("prior draw 0 (seed 2)", "prior draw 1 (seed 2)")
        assert _png(tmp_path / "p.png").shape == _grid_shape(1, 4, column_labels=walk_labels(4, *ends),
                                                             title="slerp in latent space")
    if not cls.has_encoder:  # gan: image end points need an encoder
        code, out = _cli("interpolate", ckpt, "--out", tmp_path / "i.png", "--from", images["inputs"] / "img 0.png",
                         "--to", images["inputs"] / "img 1.png", "--device", "cpu")
        assert code == 2 and "no encoder" in out, out
        return
    if not cls.has_prior:
        # No prior: the walk defaults to items 0 and 1 of the training data, which is not here.
        code, out = _cli("interpolate", ckpt, "--out", tmp_path / "x.png", "--device", "cpu")
        assert code == 2 and "'test' not found" in out and "recorded in" in out and "pass --data SRC" in out, out
    files = [images["inputs"] / "img 0.png", images["inputs"] / "img 3.png"]
    res = interpolate(ckpt, tmp_path / "i.png", from_image=str(files[0]), to_image=str(files[1]), steps=5,
                      method="lerp", device="cpu")
    loaded = load_model(ckpt)
    ends = _latents_of(loaded.model, files, loaded.data)
    assert torch.equal(res.latents[0], ends[0]) and torch.equal(res.latents[-1], ends[1])
    assert _png(tmp_path / "i.png").shape == _grid_shape(1, 5, column_labels=walk_labels(5, "img 0.png", "img 3.png"),
                                                         title="lerp in latent space")


@pytest.mark.parametrize("which", ["conv-vae", "spatial-vae", "flow-vae"])
@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolation_endpoints_are_the_inputs_latents(which: str, method: str, family_ckpts, images,
                                                        tmp_path: Path) -> None:
    ckpt, files = family_ckpts[which], [images["inputs"] / "img 1.png", images["inputs"] / "img 4.png"]
    res = interpolate(ckpt, tmp_path / "i.png", from_image=str(files[0]), to_image=str(files[1]), steps=6,
                      method=method, device="cpu", gif=tmp_path / "i.gif", frame_ms=50)
    loaded = load_model(ckpt)
    ends = _latents_of(loaded.model, files, loaded.data)
    assert res.latents.shape == (6, *loaded.model.latent_shape)
    torch.testing.assert_close(res.latents[0], ends[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(res.latents[-1], ends[1], rtol=0, atol=1e-6)
    with torch.no_grad():
        ref = loaded.data.to_unit_range(loaded.model.decode(res.latents[2:3]))
    torch.testing.assert_close(res.images[2:3], ref)
    with Image.open(tmp_path / "i.gif") as gif:
        assert gif.n_frames == 2 * 6 - 2 and gif.size == (128, 128)


def test_interpolate_dataset_indices_and_conditional(family_ckpts, trained, tmp_path: Path) -> None:
    code, out = _cli("interpolate", trained["conv-vae"], "--data", "shapes:40", "--from-index", 3, "--to-index", 7,
                     "--steps", 3, "--out", tmp_path / "i.png", "--gif", tmp_path / "i.gif", "--device", "cpu")
    assert code == 0 and "indices" in out and (tmp_path / "i.gif").exists(), out
    code, out = _cli("interpolate", trained["conv-vae"], "--data", "shapes:40", "--from-index", 3, "--to-index", 40,
                     "--out", tmp_path / "i.png")
    assert code == 2 and "out of range" in out
    code, out = _cli("interpolate", trained["conv-vae"], "--from", "x.png", "--out", tmp_path / "i.png")
    assert code == 2 and "--to" in out
    code, out = _cli("interpolate", trained["conv-vae"], "--method", "cubic", "--out", tmp_path / "i.png")
    assert code == 2 and "lerp" in out
    res = interpolate(family_ckpts["cond-vae"], tmp_path / "c.png", class_name="c", steps=3, device="cpu")
    model = load_model(family_ckpts["cond-vae"])
    with torch.no_grad():
        ref = model.data.to_unit_range(model.model.decode(res.latents, torch.full((3,), 2)))
    torch.testing.assert_close(res.images, ref)


# -- arithmetic -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_arithmetic_every_family(family: str, family_ckpts, images, tmp_path: Path) -> None:
    cls, ckpt = get_family(family), family_ckpts[family]
    args = ["arithmetic", ckpt, "--plus", images["plus"], "--minus", images["minus"], "--apply", images["apply"],
            "--scale", "0,1,2", "--out", tmp_path / "a.png", "--device", "cpu"]
    code, out = _cli(*args)
    if "arithmetic" not in supported_commands(cls):
        assert code == 2 and ("no encoder" in out or "skip features" in out) and family in out, out
        return
    assert code == 0, out
    names = sorted(p.name for p in images["apply"].glob("*.png"))
    assert _png(tmp_path / "a.png").shape == _grid_shape(2, 4, row_labels=names, title="v = …",
                                                         column_labels=["original", "scale 0", "scale 1", "scale 2"])


def test_arithmetic_numbers(trained, images, tmp_path: Path) -> None:
    loaded = load_model(trained["conv-vae"])
    model, spec = loaded.model, loaded.data
    res = arithmetic(trained["conv-vae"], tmp_path / "a.png", plus=str(images["plus"]), minus=str(images["minus"]),
                     apply=str(images["apply"]), scales=[0.5, 3.0], device="cpu",
                     save_vector=tmp_path / "v.safetensors")
    z_plus = _latents_of(model, sorted(images["plus"].glob("*.png")), spec)
    z_minus = _latents_of(model, sorted(images["minus"].glob("*.png")), spec)
    vector = z_plus.mean(0) - z_minus.mean(0)
    torch.testing.assert_close(res.vector, vector, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(load_latents(tmp_path / "v.safetensors")[0]["vector"], res.vector)
    targets = sorted(images["apply"].glob("*.png"))
    z = _latents_of(model, targets, spec)
    with torch.no_grad():
        edit = spec.to_unit_range(model.decode(z[1:2] + 3.0 * vector))
    assert (res.rows, res.columns) == (2, 3)
    torch.testing.assert_close(res.images[1 * 3 + 2], edit[0], rtol=1e-4, atol=1e-4)
    original = open_source([str(t) for t in targets], image_size=SIZE, channels=1).images.float() / 255
    torch.testing.assert_close(res.images[0], original[0])
    # Expression over single images (and a weighted folder mean): A - B + 0.5·mean(plus).
    a, b = images["inputs"] / "img 0.png", images["inputs"] / "img 2.png"
    expr = f'"{a}" - "{b}" + 0.5*{images["plus"]}'
    code, out = _cli("arithmetic", trained["conv-vae"], "--expr", expr, "--out", tmp_path / "e.png", "--device", "cpu")
    assert code == 0 and "1×4 grid" in out, out
    res = expression(trained["conv-vae"], expr, tmp_path / "e.png", device="cpu")
    za, zb = _latents_of(model, [a, b], spec)
    torch.testing.assert_close(res.vector, za - zb + 0.5 * z_plus.mean(0), rtol=1e-5, atol=1e-5)
    for bad in ("a.png b.png", "a.png - - b.png", "a.png +", "x*a.png"):
        code, out = _cli("arithmetic", trained["conv-vae"], "--expr", bad, "--out", tmp_path / "e.png")
        assert code == 2 and "--expr" in out, (bad, out)
    code, out = _cli("arithmetic", trained["conv-vae"], "--plus", images["plus"], "--out", tmp_path / "e.png")
    assert code == 2 and "--minus" in out


def test_progress_plain_lines_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(1000, "work") as bar:
        for _ in range(100):
            bar.advance(10)
    lines = capsys.readouterr().out.strip().splitlines()
    assert 9 <= len(lines) <= 11 and lines[-1].split("] ")[1].startswith("work: 1000/1000")
