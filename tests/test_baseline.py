"""`aecli evaluate --baseline pca`: the best linear autoencoder at the checkpoint's code size, one row beside
the checkpoint's, checked against a PCA computed independently with numpy's SVD."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_model
from typer.testing import CliRunner

from aecli.checkpoint import save_model
from aecli.cli import app
from aecli.data import open_source
from aecli.data.spec import DataSpec
from aecli.errors import UsageError
from aecli.metrics.baseline import PCA, parse_baseline

SIZE = 16


def _numpy_pca_reconstruction(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    mean = train.mean(0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    v = vt[:k]
    return (test - mean) @ v.T @ v + mean


@pytest.mark.parametrize("exact", [True, False], ids=["torch-svd", "sklearn-randomized"])
def test_pca_matches_numpy_svd(exact: bool) -> None:
    rng = np.random.default_rng(0)
    # A clear spectrum (a rank-6 signal plus small noise) so the top-5 subspace is well defined.
    basis = rng.normal(size=(6, 40)) * np.array([10, 8, 6, 4, 3, 0.5])[:, None]
    train = rng.normal(size=(120, 6)) @ basis + 0.05 * rng.normal(size=(120, 40)) + 3
    test = rng.normal(size=(30, 6)) @ basis + 0.05 * rng.normal(size=(30, 40)) + 3
    pca = PCA.fit(torch.tensor(train, dtype=torch.float32), 5, torch.device("cpu"), exact=exact)
    ours = pca.reconstruct(torch.tensor(test, dtype=torch.float32)).double().numpy()
    ref = _numpy_pca_reconstruction(train, test, 5)
    assert np.abs(ours - ref).max() < 2e-3 * np.abs(ref).max()
    assert pca.k == 5 and torch.allclose(pca.components @ pca.components.T, torch.eye(5), atol=1e-4)


def test_parse_baseline_and_refusals() -> None:
    assert (parse_baseline(None), parse_baseline("pca"), parse_baseline("PCA:64")) == (None, 0, 64)
    for bad in ("pcb", "pca:0", "pca:x", "pca:-3"):
        with pytest.raises(UsageError, match="--baseline"):
            parse_baseline(bad)
    with pytest.raises(UsageError, match="lower K"):
        PCA.fit(torch.zeros(4, 10), 5, torch.device("cpu"))


def test_evaluate_baseline_row_equals_an_independent_pca(tmp_path) -> None:
    torch.manual_seed(0)
    model = tiny_model("conv-ae", image_size=SIZE, channels=1)  # a flat 8-number code
    ckpt = tmp_path / "ae.safetensors"
    save_model(ckpt, model, DataSpec(SIZE, 1, model.value_range, source="digits"))
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["evaluate", str(ckpt), "--metrics", "psnr,mse,kl", "--baseline", "pca",
                                   "--device", "cpu", "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["family"] for r in rows] == ["conv-ae", "pca"]
    base = rows[1]
    assert "[pca-8]" in base["name"] and "[pca-8]" in res.output

    train = open_source("digits", image_size=SIZE, channels=1, split="train").tensor().flatten(1).double() / 255
    val = open_source("digits", image_size=SIZE, channels=1, split="val").tensor().flatten(1).double() / 255
    pred = np.clip(_numpy_pca_reconstruction(train.numpy(), val.numpy(), 8), 0, 1)
    mse = ((pred - val.numpy()) ** 2).mean(1)
    assert base["n"] == len(val)
    assert base["values"]["mse"] == pytest.approx(mse.mean(), rel=1e-3)
    assert base["values"]["psnr"] == pytest.approx((10 * np.log10(1 / mse)).mean(), abs=0.01)
    others = {k: v for k, v in base["values"].items() if not k.startswith(("psnr", "mse"))}
    assert others and all(v is None for v in others.values()), others  # reconstruction metrics only (kl: n/a)

    res = CliRunner().invoke(app, ["evaluate", str(ckpt), "--metrics", "psnr", "--baseline", "pca:3",
                                   "--device", "cpu", "--json-out", str(out)])
    assert res.exit_code == 0 and "[pca-3]" in json.loads(out.read_text())["rows"][1]["name"]
    for bad, fragment in (("pca:100000", "lower K"), ("linear", "--baseline")):
        res = CliRunner().invoke(app, ["evaluate", str(ckpt), "--metrics", "psnr", "--baseline", bad])
        assert res.exit_code == 2 and fragment in res.output and "Traceback" not in res.output
