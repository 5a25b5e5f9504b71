"""conv-ae/-vae's PCA path: a fitted model is exactly PCA (checked against numpy's SVD), saves its PCA in the
checkpoint, and old files without the option load as they were saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aecli.checkpoint import load_model, read_header, save_model
from aecli.data.spec import DataSpec
from aecli.models import create_model
from aecli.models.conv import ConvTrunk

SIZE, K = 16, 6
OPTS = {"image_size": SIZE, "latent_dim": K, "widths": (4, 8)}


def _images(n: int, seed: int) -> torch.Tensor:
    """Smooth random images in [-1, 1] (a few low-frequency waves per channel): structure PCA can find."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    waves = torch.stack([torch.sin(3.1 * (a * xx + b * yy)) for a, b in [(1, 0), (0, 1), (1, 1), (2, 1), (1, 3)]])
    coef = torch.randn(n, 3, waves.shape[0], generator=g)
    x = torch.einsum("ncw,whv->nchv", coef, waves) * 0.3 + 0.05 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return x.clamp(-1, 1)


def _numpy_pca(train: torch.Tensor, test: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent reference: the exact SVD of the centred training matrix (float64)."""
    a = train.flatten(1).double().numpy()
    mean = a.mean(0)
    _, s, vt = np.linalg.svd(a - mean, full_matrices=False)
    t = test.flatten(1).double().numpy()
    recon = np.clip((t - mean) @ vt[:k].T @ vt[:k] + mean, -1, 1)
    code = (t - mean) @ vt[:k].T / (s[:k] / np.sqrt(len(a) - 1))
    return recon.reshape(test.shape), code, vt[:k]


@pytest.mark.parametrize("family", ["conv-ae", "conv-vae"])
def test_fitted_model_is_exactly_pca(family: str) -> None:
    torch.manual_seed(0)
    train, test = _images(80, 0), _images(10, 1)
    model = create_model(family, **OPTS)
    assert model.fits_data
    model.fit_linear(train)
    ref_recon, ref_code, ref_basis = _numpy_pca(train, test, K)
    for mode in ("train", "eval"):  # the learned residual is zero in both; the output is in range
        getattr(model, mode)()
        with torch.no_grad():
            out = model(test, sample_posterior=False)
        np.testing.assert_allclose(out.recon.numpy(), ref_recon, atol=2e-4)
    # The code is the whitened PCA projection, up to each component's sign.
    with torch.no_grad():
        code = model.encode(test).mode().double().numpy()
    signs = np.sign((model.pca_components.double().numpy() * ref_basis).sum(1))
    np.testing.assert_allclose(code * signs, ref_code, atol=2e-3)
    if family == "conv-vae":
        assert torch.equal(model.encode(test).logvar, torch.full((10, K), ConvTrunk.LOGVAR_INIT))


def test_fit_with_fewer_images_than_code_numbers_leaves_the_rest_learned_only() -> None:
    model = create_model("conv-ae", **OPTS)
    model.fit_linear(_images(4, 0))  # 4 images span 3 directions
    norms = model.pca_components.norm(dim=1)
    assert torch.allclose(norms[:3], torch.ones(3), atol=1e-5) and torch.equal(norms[3:], torch.zeros(K - 3))


def test_pca_path_only_on_the_residual_flat_signed_code() -> None:
    for opts in ({"arch": "plain"}, {"latent": "spatial", "latent_dim": 2}, {"latent_relu": True}):
        model = create_model("conv-ae", **{**OPTS, **opts})
        assert not model.fits_data and "pca_mean" not in model.state_dict(), opts
    assert not create_model("conv-vae", **OPTS, pca_path=False).fits_data


def test_pca_travels_in_the_checkpoint(tmp_path: Path) -> None:
    model = create_model("conv-vae", **OPTS)
    model.fit_linear(_images(50, 0))
    path = tmp_path / "m.safetensors"
    save_model(path, model, DataSpec(SIZE, 3, (-1.0, 1.0), [], "unit-test"), {"steps": 0})
    loaded = load_model(path).model.eval()
    x = _images(3, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x).recon, model.eval()(x).recon)
    assert torch.equal(loaded.pca_components, model.pca_components)


# Options added to the residual trunk after checkpoints were written, oldest first, with the value that
# rebuilds those files (ConvConfig.LEGACY).
ADDED = [("pca_path", False), ("pca_refine", False), ("stem_width", 32)]


@pytest.mark.parametrize("first", range(len(ADDED)))
def test_residual_checkpoint_from_before_an_option_loads_without_it(tmp_path: Path, first: int) -> None:
    """A residual conv-ae saved before `pca_path` (no PCA tensors), `pca_refine` (a PCA path without the
    refine conv) or `stem_width` (auto widths 32, 64, …) existed has none of the later keys: it means what
    it meant."""
    missing = dict(ADDED[first:])
    torch.manual_seed(0)
    old = create_model("conv-ae", image_size=SIZE, latent_dim=K, **missing)
    if old.fits_data:
        old.fit_linear(_images(40, 0))
    old.eval()
    path = tmp_path / "old.safetensors"
    save_model(path, old, DataSpec(SIZE, 3, (-1.0, 1.0), [], "unit-test"), {"steps": 0})
    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    config = json.loads(meta["config"])
    assert {k: config.pop(k) for k in missing} == missing
    meta["config"] = json.dumps(config)
    save_file(load_file(str(path)), str(path), metadata=meta)
    assert not set(missing) & set(read_header(path).config)
    loaded = load_model(path).model.eval()
    x = _images(2, 3)
    with torch.no_grad():
        assert {k: getattr(loaded.config, k) for k in missing} == missing
        assert torch.equal(loaded(x).recon, old(x).recon)
    assert loaded.config.stage_widths() == (32,)  # 16 px, 4×4 patches: one stage (new files: 64)
    assert not any(k.startswith("refine.") for k in load_file(str(path)))


def test_refine_sees_the_pca_image_at_the_stem_resolution() -> None:
    """With pca_refine the residual depends on the PCA image through a conv on its space-to-depth patches."""
    model = create_model("conv-ae", **OPTS)
    assert model.refine.in_channels == 3 * 4 * 4 and model.refine.out_channels == OPTS["widths"][0]
    model.fit_linear(_images(40, 0))
    last = [m for m in model.decoder if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.normal_(last.weight, std=0.1)  # a trained residual
    z = torch.randn(2, K)
    with torch.no_grad():
        base = model.decode(z)
        model.refine.weight.zero_()
        model.refine.bias.zero_()
        assert not torch.allclose(model.decode(z), base)


def test_training_fits_the_pca_before_the_first_step(tmp_path: Path, one_thread: None) -> None:
    from aecli.training import TrainConfig, train

    train(TrainConfig(family="conv-ae", data="shapes:40", image_size=SIZE, max_steps=1, batch_size=8,
                      model={"latent_dim": K, "widths": [4, 8]}, out=str(tmp_path / "run"), workers=1))
    model = load_model(tmp_path / "run" / "last.safetensors").model
    c = model.pca_components
    assert torch.allclose(c @ c.T, torch.eye(K), atol=1e-4)  # fitted: orthonormal components
    assert model.pca_scale[0] >= model.pca_scale[-1] > 0
