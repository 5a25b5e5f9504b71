"""`evaluate --fid-backend torch-fidelity|clean-fid`: both run from explicit local files, agree where
their protocols are the same, differ where they are not, and every number names its protocol.

The Inception is random (no download here): torch-fidelity's architecture with Kaiming weights, and a
TorchScript stand-in for clean-fid's file built from the same weights, so the two backends run the
same network and any difference comes from their protocols.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import save_random_clean_fid_inception, save_random_inception
from PIL import Image
from typer.testing import CliRunner

from aecli.cli import app
from aecli.errors import UsageError, WeightsMissingError
from aecli.metrics import fidelity

cleanfid = pytest.importorskip("cleanfid")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidw")
    tf = save_random_inception(root / "tf-inception.pth")
    cf = save_random_clean_fid_inception(root / "cf-inception.pt", tf)
    return {"torch-fidelity": str(tf), "clean-fid": str(cf)}


@pytest.fixture(scope="module")
def nets(weights):
    tf = fidelity.make_backend("torch-fidelity")
    out = {"torch-fidelity": (tf, tf.load(weights["torch-fidelity"], "cpu"))}
    for mode in fidelity.CLEAN_FID_MODES:
        backend = fidelity.make_backend("clean-fid", mode)
        out[mode] = (backend, backend.load(weights["clean-fid"], "cpu"))
    return out


def _u8(seed: int, n: int, c: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def _features(nets, name: str, images: torch.Tensor) -> torch.Tensor:
    backend, model = nets[name]
    return backend.features(model, images)["2048"]


def test_same_protocol_same_features_other_resize_other_features(nets) -> None:
    small = _u8(0, 3, 1, 16)  # gray, far from 299 px: the resize decides
    ref = _features(nets, "torch-fidelity", small)
    scale = float(ref.abs().mean())
    # legacy_tensorflow resizes inside the network like torch-fidelity: same features up to float error.
    torch.testing.assert_close(_features(nets, "legacy_tensorflow", small), ref, rtol=0, atol=1e-4 * scale)
    # clean resizes with PIL bicubic first: a different protocol, different features.
    assert float((_features(nets, "clean", small) - ref).abs().max()) > 1e-2 * scale
    # At 299 px no resize happens in any protocol: all three agree.
    full = _u8(1, 2, 3, 299)
    ref = _features(nets, "torch-fidelity", full)
    for mode in fidelity.CLEAN_FID_MODES:
        torch.testing.assert_close(_features(nets, mode, full), ref, rtol=0, atol=1e-4 * scale)


def test_formulas_agree_with_each_other_and_with_clean_fid() -> None:
    from cleanfid.fid import fid_from_feats

    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 24, generator=g, dtype=torch.float64)
    b = torch.randn(300, 24, generator=g, dtype=torch.float64) * 1.2 + 0.3
    tf, cf = fidelity.make_backend("torch-fidelity"), fidelity.make_backend("clean-fid", "clean")
    # Full-rank covariances: torch-fidelity's and clean-fid's formulas give the same Fréchet distance.
    assert cf.fid(a, b) == pytest.approx(tf.fid(a, b), rel=1e-5)
    assert cf.fid(a, b) == pytest.approx(float(fid_from_feats(a.numpy(), b.numpy())), rel=1e-12)
    # Fewer images than dimensions: the exact low-rank route equals clean-fid's own sqrtm route.
    small_a, small_b = a[:10], b[:12]
    assert cf.fid(small_a, small_b) == pytest.approx(float(fid_from_feats(small_a.numpy(), small_b.numpy())),
                                                     rel=1e-6)
    # KID with subsets as large as the sets: every subset is the whole set, so both are the same
    # unbiased MMD² whatever their random draws.
    tf_kid, _, tf_subset = tf.kid(a[:40], b[:40])
    cf_kid, cf_std, cf_subset = cf.kid(a[:40], b[:40])
    assert tf_subset == cf_subset == 40 and cf_std is None
    assert cf_kid == pytest.approx(tf_kid, rel=1e-6)


def _folder(path, seed: int, n: int = 4) -> None:
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path / f"{i}.png")


def test_cli_names_the_protocol_next_to_every_number(weights, tmp_path) -> None:
    _folder(tmp_path / "pred", 0)
    _folder(tmp_path / "ref", 1)
    runs = {}
    for backend, mode in (("torch-fidelity", "clean"), ("clean-fid", "legacy_tensorflow"), ("clean-fid", "clean")):
        out = tmp_path / f"{backend}-{mode}.json"
        result = CliRunner().invoke(app, [
            "evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--metrics", "fid,kid,is",
            "--device", "cpu", "--fid-backend", backend, "--clean-fid-mode", mode, "--inception-weights",
            weights[backend], "--cache-dir", str(tmp_path / f"cache-{backend}-{mode}"), "--json-out", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        row = report["rows"][0]
        tag = f"clean-fid {fidelity.clean_fid_version()} mode={mode}" if backend == "clean-fid" else "torch-fidelity"
        assert tag in row["notes"]["fid"] and tag in row["notes"]["kid"] and tag in report["fid_backend"]
        # The footnote under the table (is shares torch-fidelity's note, so they are listed together).
        assert re.search(rf"fid(, is)?: protocol {re.escape(tag)}", result.output), result.output
        runs[(backend, mode)] = row["values"]
        if backend == "clean-fid":
            assert row["values"]["is"] is None and "no Inception Score" in row["notes"]["is"]
            assert report["versions"]["clean_fid"] == fidelity.clean_fid_version()
    tf, legacy, clean = runs[("torch-fidelity", "clean")], runs[("clean-fid", "legacy_tensorflow")], \
        runs[("clean-fid", "clean")]
    assert legacy["fid"] == pytest.approx(tf["fid"], rel=1e-3)  # same protocol
    assert legacy["kid"] == pytest.approx(tf["kid"], rel=1e-3)
    assert abs(clean["fid"] - tf["fid"]) > 1e-3 * tf["fid"]  # another resize: not comparable


def test_bad_backend_options_are_clear(weights, tmp_path) -> None:
    with pytest.raises(UsageError, match="--fid-backend"):
        fidelity.make_backend("pytorch-fid")
    with pytest.raises(UsageError, match="--clean-fid-mode"):
        fidelity.make_backend("clean-fid", "legacy_pytorch")
    with pytest.raises(WeightsMissingError, match="TorchScript"):  # a state dict is not clean-fid's file
        fidelity.load_clean_fid_inception(weights["torch-fidelity"], "cpu", resize_inside=True)
    result = CliRunner().invoke(app, ["evaluate", "--pred", str(tmp_path), "--ref", str(tmp_path), "--metrics",
                                      "fid", "--fid-backend", "clean-fid", "--weights-dir", str(tmp_path)])
    assert result.exit_code == 2 and "inception-2015-12-05.pt" in result.output
    assert "--fid-backend clean-fid" in result.output and len(result.output.strip().splitlines()) == 1
