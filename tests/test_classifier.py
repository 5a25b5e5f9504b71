"""`aecli evaluate --metrics class-acc` (seed 004): a real-data MLP classifier scores conditional samples."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import tiny_kwargs, tiny_model
from safetensors import safe_open
from typer.testing import CliRunner

import aecli.metrics.classifier as classifier_mod
from aecli.checkpoint import load_model, save_model
from aecli.cli import app
from aecli.data import open_source
from aecli.data.spec import DataSpec
from aecli.errors import UsageError
from aecli.metrics.evaluate import EvalConfig, evaluate_checkpoints

SAMPLES = 12  # draws per class: enough for a real fraction, small enough for a 2-core CPU


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread: None) -> None:
    """Every test and fixture of this module runs on one torch thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def ckpts(one_thread, tmp_path_factory):
    from aecli.training import TrainConfig, train

    root = tmp_path_factory.mktemp("classacc")
    model = {k: v for k, v in tiny_kwargs("conv-vae", 32, 1).items() if k not in ("image_size", "channels")}
    run = train(TrainConfig(family="conv-vae", model={**model, "num_classes": 10}, data="digits", epochs=2,
                            batch_size=128, device="cpu", out=str(root / "run"), grid_size=2, log_every=1000))
    torch.manual_seed(0)
    plain = tiny_model("conv-vae", image_size=16, channels=1)
    save_model(root / "plain.safetensors", plain, DataSpec(16, 1, plain.value_range, source="digits"))
    return {"cond": run.run_dir / "last.safetensors", "plain": root / "plain.safetensors", "cache": root / "cache"}


def _cfg(ckpts, **kw):
    return EvalConfig(metrics=["class-acc"], device="cpu", class_samples=SAMPLES, n=8,
                      cache_dir=str(kw.pop("cache", ckpts["cache"])), **kw)


def _hand_classifier(cache):
    """The cached classifier read with plain safetensors and applied with plain tensor ops."""
    (path,) = cache.glob("classifier-*.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        w = {k: fh.get_tensor(k).double() for k in fh.keys()}
    layers = sorted({k.rsplit(".", 1)[0] for k in w}, key=lambda name: int(name.split(".")[1]))

    def probs(x):
        h = x.double().flatten(1)
        for i, layer in enumerate(layers):
            h = h @ w[f"{layer}.weight"].T + w[f"{layer}.bias"]
            h = h.relu() if i < len(layers) - 1 else h
        return h.softmax(1)

    return probs, json.loads(path.with_suffix(".json").read_text())


def test_class_acc_ceiling_and_sample_scores_match_hand_computation(ckpts):
    row = evaluate_checkpoints([ckpts["cond"]], _cfg(ckpts)).rows[0]
    probs, meta = _hand_classifier(ckpts["cache"])
    loaded = load_model(ckpts["cond"], "cpu")
    spec, model = loaded.data, loaded.model
    val = open_source("digits", image_size=32, channels=1, split="val")
    train = open_source("digits", image_size=32, channels=1, split="train")
    assert meta["identity"]["data"] == train.source_id and meta["identity"]["value_range"] == list(spec.value_range)
    assert meta["identity"]["image_size"] == 32 and meta["identity"]["channels"] == 1

    pred = probs(spec.to_model_range(val.images.double() / 255)).argmax(1)
    per_class = [float((pred[val.labels == k] == k).double().mean()) for k in range(10)]
    assert row.values["class_ceiling"] == pytest.approx(sum(per_class) / 10, abs=1e-12)
    assert row.values["class_ceiling"] > 0.5  # 10 classes: chance is 0.1
    for k in range(10):
        assert row.values[f"class_ceiling[{k}]"] == pytest.approx(per_class[k], abs=1e-12)

    gen = torch.Generator().manual_seed(0)  # the evaluation's seed; classes drawn in order
    for k in range(10):
        with torch.no_grad():
            x = model.sample(SAMPLES, labels=torch.full((SAMPLES,), k), generator=gen)
        p = probs(spec.to_model_range(spec.to_unit_range(x)))
        acc, conf = row.values[f"class_acc[{k}]"], row.values[f"class_conf[{k}]"]
        assert 0.0 <= acc <= 1.0 and 0.0 < conf < 1.0
        assert acc == pytest.approx(float((p.argmax(1) == k).double().mean()), abs=1e-12)
        assert conf == pytest.approx(float(p[:, k].mean()), abs=1e-6)
    for key in ("class_acc", "class_conf", "class_ceiling"):
        assert row.values[key] == pytest.approx(sum(row.values[f"{key}[{k}]"] for k in range(10)) / 10)
    assert f"{SAMPLES} draws per class" in row.notes["class-acc"]


def test_second_call_hits_the_classifier_cache(ckpts, monkeypatch, tmp_path):
    first = evaluate_checkpoints([ckpts["cond"]], _cfg(ckpts))

    def no_training(*args, **kwargs):
        raise AssertionError("the classifier was retrained despite the cache")

    monkeypatch.setattr(classifier_mod, "train_classifier", no_training)
    again = evaluate_checkpoints([ckpts["cond"]], _cfg(ckpts))
    assert again.info["classifier_cache"]["trained"] == 0 and again.info["classifier_cache"]["hits"] == 1
    assert again.rows[0].values == first.rows[0].values
    assert len(list(ckpts["cache"].glob("classifier-*.json"))) == 1
    # Another hyperparameter set is another cache entry: here it would have to be trained.
    three_epochs = classifier_mod.ClassifierConfig(epochs=3)
    monkeypatch.setattr(classifier_mod, "ClassifierConfig", lambda: three_epochs)
    with pytest.raises(AssertionError, match="retrained"):
        evaluate_checkpoints([ckpts["cond"]], _cfg(ckpts))


def test_non_conditional_checkpoint_is_na_and_wrong_data_is_an_error(ckpts):
    row = evaluate_checkpoints([ckpts["plain"]], _cfg(ckpts)).rows[0]
    assert row.values["class_acc"] is None and row.values["class_ceiling"] is None
    assert "not class-conditional" in row.notes["class-acc"] and "--num-classes" in row.notes["class-acc"]
    with pytest.raises(UsageError, match="--data"):
        evaluate_checkpoints([ckpts["cond"]], _cfg(ckpts, data="shapes"))


def test_cli_shows_class_columns_and_writes_json_csv(ckpts, tmp_path):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    result = CliRunner().invoke(app, [
        "evaluate", str(ckpts["cond"]), str(ckpts["plain"]), "--metrics", "class-acc", "--class-samples",
        str(SAMPLES), "--n", "8", "--device", "cpu", "--cache-dir", str(ckpts["cache"]), "--json-out", str(out_json),
        "--csv-out", str(out_csv)])
    assert result.exit_code == 0, result.output
    for text in ("class_acc", "class_conf", "class_ceiling", "per class", "not class-conditional"):
        assert text in result.output
    data = json.loads(out_json.read_text())
    cond, plain = data["rows"]
    assert 0 <= cond["values"]["class_acc"] <= 1 and cond["values"]["class_ceiling"] > 0.5
    assert set(cond["values"]) >= {f"class_conf[{k}]" for k in range(10)}
    assert plain["values"]["class_acc"] is None and plain["values"]["class_acc[3]"] is None
    assert data["classifier_cache"]["dir"] == str(ckpts["cache"])
    rows = list(csv.DictReader(out_csv.open()))
    assert float(rows[0]["class_acc[3]"]) == pytest.approx(cond["values"]["class_acc[3]"])
    assert rows[1]["class_acc"] == ""
