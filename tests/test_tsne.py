"""`aecli tsne`: latent maps and latent-quality figures, checked against direct scikit-learn calls."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aecli.cli import app
from conftest import tiny_kwargs

runner = CliRunner()
SIZE = 32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conv-ae trained briefly on the embedded digits (a real, somewhat organised latent space)."""
    from aecli.training import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(family="conv-ae", model=tiny_kwargs("conv-ae", SIZE, 1), epochs=2, batch_size=64,
                      out=str(out), log_every=1000))
    return out / "best.safetensors"


def digits(split: str):
    from aecli.data import open_source

    return open_source("digits", image_size=SIZE, channels=1, split=split)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def invoke(*args: str):
    result = runner.invoke(app, ["tsne", *args])
    assert "Traceback" not in result.output
    return result


def reference_latents(ckpt: Path, images: torch.Tensor) -> np.ndarray:
    """Encode directly, one call, no batching: what the batched pipeline must reproduce."""
    from aecli.checkpoint.format import load_model
    from aecli.data import to_model_input

    loaded = load_model(ckpt, "cpu")
    with torch.no_grad():
        z = loaded.model.encode(to_model_input(images, loaded.data.value_range)).mode()
    return z.flatten(1).numpy()


def test_tsne_digits_matches_sklearn(ckpt: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    out, lat, js = tmp_path / "map" / "tsne.png", tmp_path / "lat.safetensors", tmp_path / "q.json"
    result = invoke(str(ckpt), "--data", "digits", "--split", "val", "--out", str(out), "--save-latents",
                    str(lat), "--json-out", str(js), "--seed", "3", "--batch-size", "50", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = digits("val")
    labels = data.labels.numpy()

    rows = read_csv(out.with_suffix(".csv"))
    assert len(rows) == len(data) == 180
    assert [int(r["label"]) for r in rows] == labels.tolist()
    assert [r["name"] for r in rows] == data.names
    assert [r["class_name"] for r in rows] == [data.class_names[c] for c in labels]
    assert [int(r["index"]) for r in rows] == list(range(180))
    coords = np.array([[float(r["x"]), float(r["y"])] for r in rows])

    # Saved raw latents equal a direct unbatched encoding; the metadata carries names and labels.
    with safe_open(str(lat), framework="numpy") as fh:
        latents = fh.get_tensor("latents")
        meta = fh.metadata()
        np.testing.assert_array_equal(fh.get_tensor("labels"), labels)
    assert json.loads(meta["names"]) == data.names
    np.testing.assert_allclose(latents.reshape(180, -1), reference_latents(ckpt, data.tensor()), rtol=1e-5,
                               atol=1e-5)

    # The figures are exactly scikit-learn's, computed independently on the same latents and split.
    q = json.loads(js.read_text())
    x = latents.reshape(180, -1)
    tr, te = train_test_split(np.arange(180), test_size=0.2, random_state=3, stratify=labels)
    knn = KNeighborsClassifier(n_neighbors=5).fit(x[tr], labels[tr])
    assert q["knn_accuracy"] == pytest.approx(knn.score(x[te], labels[te]), abs=1e-12)
    assert (q["knn_k"], q["knn_train"], q["knn_test"], q["knn_stratified"]) == (5, 144, 36, True)
    assert 0.2 < q["knn_accuracy"] <= 1.0  # chance is ~0.1 for 10 classes
    assert q["silhouette"] == pytest.approx(silhouette_score(x, labels), abs=1e-6)
    assert q["method"] == "tsne" and q["perplexity"] == 30.0 and q["images"] == 180
    assert f"{q['knn_accuracy']:.4f}" in result.output and f"{q['silhouette']:.4f}" in result.output
    assert coords.shape == (180, 2) and np.isfinite(coords).all() and coords.std(0).min() > 0


def test_pca_subsample_npy(ckpt: Path, tmp_path: Path) -> None:
    from sklearn.decomposition import PCA

    def run(seed: int, name: str) -> list[dict[str, str]]:
        out = tmp_path / f"{name}.png"
        result = invoke(str(ckpt), "--split", "all", "--n", "60", "--method", "pca", "--seed", str(seed),
                        "--out", str(out), "--save-latents", str(tmp_path / f"{name}.npy"))
        assert result.exit_code == 0, result.output
        return read_csv(out.with_suffix(".csv"))

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert len(a) == 60 and a == b  # reproducible with the seed (coordinates included)
    assert [r["name"] for r in a] != [r["name"] for r in c]
    full = digits("all")  # --data defaults to the checkpoint's training source: digits
    idx = [int(r["index"]) for r in a]
    assert idx == sorted(set(idx)) and [r["name"] for r in a] == [full.names[i] for i in idx]
    assert [int(r["label"]) for r in a] == full.labels[idx].tolist()
    latents = np.load(tmp_path / "a.npy", allow_pickle=False)
    np.testing.assert_allclose(latents.reshape(60, -1), reference_latents(ckpt, full.take(idx)), rtol=1e-5,
                               atol=1e-5)
    ref = PCA(n_components=2, random_state=0).fit_transform(latents.reshape(60, -1))
    np.testing.assert_allclose([[float(r["x"]), float(r["y"])] for r in a], ref, rtol=1e-4, atol=1e-4)


def _write_folder(root: Path, images: np.ndarray, classes: list[str] | None) -> None:
    from PIL import Image

    for i, img in enumerate(images):
        sub = root / classes[i % len(classes)] if classes else root
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0]).save(sub / f"img {i:03d}.png")


def test_unlabelled_folder_reports_na(ckpt: Path, tmp_path: Path) -> None:
    _write_folder(tmp_path / "imgs", digits("val").tensor()[:24].numpy(), None)
    out, js = tmp_path / "u.png", tmp_path / "u.json"
    # 24 images with the default perplexity 30: lowered, with a note, instead of failing.
    result = invoke(str(ckpt), "--data", str(tmp_path / "imgs"), "--split", "all", "--out", str(out),
                    "--json-out", str(js))
    assert result.exit_code == 0, result.output
    rows = read_csv(out.with_suffix(".csv"))
    assert len(rows) == 24 and {r["label"] for r in rows} == {"-1"} and {r["class_name"] for r in rows} == {""}
    q = json.loads(js.read_text())
    assert q["knn_accuracy"] is None and q["silhouette"] is None and q["labelled"] == 0
    assert q["perplexity"] < 24 and any("perplexity" in n for n in q["notes"])
    assert "k-NN accuracy (k=5): n/a" in result.output and "silhouette of the labels in latent space: n/a" in result.output


def test_labelled_folder_uses_folder_names(ckpt: Path, tmp_path: Path) -> None:
    _write_folder(tmp_path / "imgs", digits("val").tensor()[:30].numpy(), ["cat", "dog", "emu"])
    out = tmp_path / "f.png"
    result = invoke(str(ckpt), "--data", str(tmp_path / "imgs"), "--split", "all", "--method", "pca",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = read_csv(out.with_suffix(".csv"))
    assert len(rows) == 30
    assert all(r["name"].split("/")[0] == r["class_name"] for r in rows)
    assert {r["class_name"] for r in rows} == {"cat", "dog", "emu"}
    assert "n/a" not in result.output  # labelled: both figures are real numbers


def test_gan_refused_clearly(tmp_path: Path) -> None:
    from aecli.checkpoint.format import save_model
    from aecli.data.spec import DataSpec
    from aecli.models import create_model

    gan = create_model("gan", **tiny_kwargs("gan", SIZE, 1))
    path = save_model(tmp_path / "gan.safetensors", gan, DataSpec(SIZE, 1, source="digits"))
    result = invoke(str(path), "--out", str(tmp_path / "t.png"))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "no encoder" in result.output and not (tmp_path / "t.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--method", "umap"], "--method"),
    (["--perplexity", "0"], "--perplexity"),
    (["--out", "x.jpg"], "--out"),
    (["--n", "0"], "--n"),
    (["--save-latents", "z.pt"], "--save-latents"),
])
def test_bad_options(ckpt: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke(str(ckpt), *args) if "--out" in args else invoke(str(ckpt), "--out", str(tmp_path / "t.png"), *args)
    assert result.exit_code == 2 and message in result.output


def test_project_is_pca_then_sklearn_tsne() -> None:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from aecli.analysis import project

    x = np.random.default_rng(0).normal(size=(40, 60)).astype(np.float32)
    proj = project(x, "tsne", perplexity=10.0, seed=1)
    reduced = PCA(n_components=40, random_state=1).fit_transform(x)  # min(50, N, D) components
    ref = TSNE(perplexity=10.0, init="pca", learning_rate="auto", random_state=1).fit_transform(reduced)
    assert proj.pca_dims == 40 and proj.perplexity == 10.0 and not proj.notes
    np.testing.assert_allclose(proj.coords, ref, rtol=1e-4, atol=1e-4)


def test_quality_edge_cases() -> None:
    from aecli.analysis import latent_quality

    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    one_class = latent_quality(x, np.zeros(20, dtype=np.int64))
    assert one_class.knn_accuracy is None and one_class.silhouette is None and one_class.notes
    # Unlabelled images are left out of both figures.
    mixed = np.array([0, 1] * 8 + [-1] * 4)
    q = latent_quality(x, mixed, seed=0)
    assert q.labelled == 16 and q.knn_train + q.knn_test == 16 and q.silhouette is not None


def test_many_classes_have_distinct_colours(tmp_path: Path) -> None:
    from aecli.analysis.plot import class_colours, plot_embedding

    for n in (10, 20, 60, 120):
        colours = {tuple(np.round(c, 4)) for c in class_colours(n)}
        assert len(colours) == n
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 60, 600)
    plot_embedding(rng.normal(size=(600, 2)), labels, [f"class {i}" for i in range(60)], tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_encode_spatial_vae_uses_posterior_mean() -> None:
    """Spatial VAE latents: batched encoding gives the posterior mean, flattened per image."""
    from aecli.analysis.embed import encode_images, flatten
    from aecli.data.imageset import ImageSet
    from conftest import tiny_model

    torch.manual_seed(0)
    model = tiny_model("conv-vae", SIZE, 1, latent="spatial").eval()
    images = torch.randint(0, 256, (10, 1, SIZE, SIZE), dtype=torch.uint8)
    z = encode_images(model, ImageSet(images), (-1.0, 1.0), batch_size=3)
    with torch.no_grad():
        post = model.encode(images.float() / 127.5 - 1.0)
    assert z.shape == (10, *model.latent_shape) and len(model.latent_shape) == 3
    np.testing.assert_allclose(z, post.mean.numpy(), rtol=1e-5, atol=1e-6)
    assert flatten(z).shape == (10, int(np.prod(model.latent_shape)))
