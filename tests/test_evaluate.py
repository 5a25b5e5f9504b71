"""`aecli evaluate` end to end: checkpoints and paired folders, one pass, cached reference statistics."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torchvision
from conftest import save_random_inception, tiny_model
from PIL import Image
from typer.testing import CliRunner

from aecli.checkpoint import save_model
from aecli.cli import app
from aecli.data import open_source, to_model_input
from aecli.data.spec import DataSpec
from aecli.errors import DataError, UsageError
from aecli.metrics import reconstruction as rec
from aecli.metrics.evaluate import EvalConfig, evaluate_checkpoints, evaluate_folders

SIZE = 16


def _save(path, family, source="digits", **overrides):
    torch.manual_seed(0)
    model = tiny_model(family, image_size=SIZE, channels=1, **overrides)
    save_model(path, model, DataSpec(SIZE, 1, model.value_range, source=source))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), root / "alexnet.pth")
    return {
        "root": root,
        "inception": str(save_random_inception(root / "inception.pth")),
        "alexnet": str(root / "alexnet.pth"),
        "mlp": _save(root / "mlp.safetensors", "mlp-ae"),
        "vae": _save(root / "vae.safetensors", "conv-vae"),
        "gan": _save(root / "gan.safetensors", "gan"),
    }


def test_reconstruction_metrics_and_latent_stats_match_direct_computation(files):
    cfg = EvalConfig(metrics=["l1", "mse", "psnr", "ssim", "ms-ssim", "kl", "latent"], n=24, batch_size=10,
                     device="cpu")
    report = evaluate_checkpoints([files["mlp"]], cfg)
    row = report.rows[0]
    from aecli.checkpoint import load_model

    loaded = load_model(files["mlp"], "cpu")
    ds = open_source("digits", image_size=SIZE, channels=1, split="val", limit=24)
    x_u8 = ds.images
    with torch.no_grad():
        out = loaded.model(to_model_input(x_u8, loaded.data.value_range))
    pred, ref = loaded.data.to_unit_range(out.recon), x_u8.float() / 255
    psnr = rec.psnr(pred, ref).double()
    assert row.n == 24
    assert row.values["psnr"] == pytest.approx(float(psnr.mean()), abs=1e-4)
    assert row.values["psnr_std"] == pytest.approx(float(psnr.std()), abs=1e-4)
    assert row.values["mse"] == pytest.approx(float((pred - ref).pow(2).mean()), rel=1e-5)
    assert row.values["ssim"] == pytest.approx(float(rec.ssim(pred, ref).mean()), abs=1e-5)
    assert row.values["ms-ssim"] is None and "160 px" in row.notes["ms-ssim"]
    assert row.values["kl_per_image"] is None and "not a VAE" in row.notes["kl_per_image"]
    z = out.posterior.mode().double()
    var = z.var(0)
    assert row.values["latent_dims"] == z.shape[1]
    assert row.values["active_dims"] == int((var > 0.01).sum())
    assert row.values["total_variance"] == pytest.approx(float(var.sum()), rel=1e-6)
    assert row.values["mean_abs_activation"] == pytest.approx(float(z.abs().mean()), rel=1e-6)


def test_sweep_two_checkpoints_one_reference_pass(files, tmp_path):
    """A VAE and a GAN in one call: two rows, the reference features computed once and then reused
    (memory, then disk on a second call), generative metrics on --samples draws with the small-N warning."""
    cache = tmp_path / "cache"
    cfg = EvalConfig(metrics=["psnr", "kl", "rfid", "fid", "kid", "is"], n=4, samples=4, device="cpu",
                     inception_weights=files["inception"], cache_dir=str(cache))
    report = evaluate_checkpoints([files["vae"], files["gan"]], cfg)
    vae, gan = report.rows
    assert [r.family for r in report.rows] == ["conv-vae", "gan"]
    assert report.info["reference_cache"]["passes"] == 1
    assert report.info["reference_cache"]["hits"] == 1
    assert len(list(cache.glob("*.safetensors"))) == 1
    for row in (vae, gan):
        assert row.samples == 4
        assert row.values["fid"] > 0 and np.isfinite(row.values["kid"]) and row.values["is"] >= 1.0 - 1e-9  # exp(KL) ≥ 1 up to rounding
    assert vae.values["rfid"] > 0 and vae.values["kl_per_image"] > 0 and vae.values["psnr"] > 0
    assert gan.values["psnr"] is None and "no encoder" in gan.notes["psnr"]
    assert any("N=4" in w and "2048" in w for w in report.warnings)
    assert "TF1 bilinear resize to 299" in report.info["fid_protocol"]
    assert "sha256:" in report.info["weights"]["inception"]

    again = evaluate_checkpoints([files["gan"]], cfg)
    assert again.info["reference_cache"] == {"dir": str(cache), "passes": 0, "hits": 1}
    assert again.rows[0].values["fid"] == pytest.approx(gan.values["fid"], rel=1e-9)  # same seed, same ref


def test_plain_autoencoder_has_no_prior_for_fid(files, tmp_path):
    cfg = EvalConfig(metrics=["fid"], n=4, device="cpu", inception_weights=files["inception"],
                     cache_dir=str(tmp_path))
    row = evaluate_checkpoints([files["mlp"]], cfg).rows[0]
    assert row.values["fid"] is None and "no prior" in row.notes["fid"]


def test_default_data_and_errors(files, tmp_path):
    no_source = _save(tmp_path / "nosrc.safetensors", "mlp-ae", source="")
    with pytest.raises(UsageError, match="--data"):
        evaluate_checkpoints([no_source], EvalConfig(metrics=["psnr"], n=4, device="cpu"))
    report = evaluate_checkpoints([no_source], EvalConfig(metrics=["psnr"], data="digits", n=4, device="cpu"))
    assert report.rows[0].n == 4
    with pytest.raises(UsageError, match="unknown metric 'psnrr'"):
        evaluate_checkpoints([files["mlp"]], EvalConfig(metrics=["psnrr"]))


def _write(folder, name, arr):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_paired_folders(tmp_path):
    rng = np.random.default_rng(0)
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    refs = {f"sub/{i}": rng.integers(0, 256, (20, 24), dtype=np.uint8) for i in range(3)}
    for key, arr in refs.items():
        _write(ref_dir, f"{key}.png", arr)
        noisy = np.clip(arr.astype(int) + rng.integers(-20, 21, arr.shape), 0, 255).astype(np.uint8)
        _write(pred_dir, f"{key}.png", noisy)
    cfg = EvalConfig(metrics=["psnr", "l1", "kl"], device="cpu")
    row = evaluate_folders(str(pred_dir), str(ref_dir), cfg).rows[0]
    expected = []
    for key, arr in refs.items():
        p = np.asarray(Image.open(pred_dir / f"{key}.png"), dtype=np.float64) / 255
        expected.append(10 * np.log10(1 / np.mean((p - arr / 255) ** 2)))
    assert row.n == 3 and row.image_size == "20x24x1"
    assert row.values["psnr"] == pytest.approx(float(np.mean(expected)), abs=1e-4)
    assert row.values["kl_per_image"] is None

    _write(pred_dir, "extra.png", refs["sub/0"])  # no reference
    _write(ref_dir, "sub/big.png", np.zeros((30, 30), np.uint8))  # size mismatch
    _write(pred_dir, "sub/big.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(DataError) as err:
        evaluate_folders(str(pred_dir), str(ref_dir), cfg)
    assert "extra.png has no reference" in str(err.value) and "big.png is 20x20" in str(err.value)
    skipped = evaluate_folders(str(pred_dir), str(ref_dir), cfg, skip_unpaired=True)
    assert skipped.rows[0].n == 3 and any("skipped 2" in w for w in skipped.warnings)


def test_cli_evaluate_writes_json_and_csv_with_lpips(files, tmp_path):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    result = CliRunner().invoke(app, [
        "evaluate", str(files["mlp"]), str(files["vae"]), "--metrics", "psnr,lpips", "--n", "6",
        "--device", "cpu", "--lpips-weights", files["alexnet"], "--json-out", str(out_json), "--csv-out", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert "mlp.safetensors" in result.output and "upsampled" in result.output
    data = json.loads(out_json.read_text())
    assert [r["family"] for r in data["rows"]] == ["mlp-ae", "conv-vae"]
    assert data["rows"][0]["n"] == 6 and data["rows"][0]["image_size"] == "16x16x1"
    assert 0 < data["rows"][0]["values"]["lpips"] < 2
    assert "torch" in data["versions"] and "torch_fidelity" in data["versions"]
    assert "sha256:" in data["weights"]["lpips-alex"] and data["device"] == "cpu"
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 and float(rows[1]["psnr"]) == pytest.approx(data["rows"][1]["values"]["psnr"])


def test_cli_paired_mode_arguments(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["evaluate", "--pred", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["evaluate"]).exit_code == 2


def test_display_names_disambiguate_sweeps():
    from aecli.metrics.evaluate import Row, display_names

    rows = [Row("runs/a/best.safetensors", "x"), Row("runs/b/best.safetensors", "x"), Row("c.safetensors", "x")]
    assert display_names(rows) == ["a/best.safetensors", "b/best.safetensors", "c.safetensors"]
    assert display_names(rows[2:]) == ["c.safetensors"]


def test_json_turns_non_finite_values_into_null_with_note(tmp_path):
    from aecli.metrics.evaluate import EvalReport, Row
    from aecli.metrics.report import write_json

    row = Row("m.safetensors", "mlp-ae", n=2, values={"psnr": float("nan"), "psnr_std": 0.0})
    write_json(EvalReport([row], ["psnr"], "cpu", {}, []), tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rows"][0]["values"]["psnr"] is None and "non-finite" in data["rows"][0]["notes"]["psnr"]


def test_default_metrics_work_offline_and_say_what_was_skipped(files, tmp_path, monkeypatch):
    """No --metrics on a machine without the LPIPS backbone: the weight-free metrics, and a note naming
    lpips, the missing file and the command that fetches it; with the file present lpips is scored."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["evaluate", str(files["mlp"]), "--n", "6", "--device", "cpu",
                                      "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(out.read_text())["rows"][0]["values"]) == \
        ["l1", "l1_std", "mse", "mse_std", "psnr", "psnr_std", "ssim", "ssim_std"]
    note = next(line for line in result.stderr.splitlines() if line.startswith("note: skipped lpips"))
    assert "alexnet-owt-7be5be79.pth does not exist" in note and "aecli weights download --metrics lpips" in note
    # Asked for explicitly, a missing file is still an error (exit 2) rather than a silent skip.
    asked = CliRunner().invoke(app, ["evaluate", str(files["mlp"]), "--metrics", "psnr,lpips", "--device", "cpu"])
    assert asked.exit_code == 2 and "aecli weights download" in asked.output
    present = CliRunner().invoke(app, ["evaluate", str(files["mlp"]), "--n", "6", "--device", "cpu",
                                       "--lpips-weights", files["alexnet"], "--json-out", str(out)])
    assert present.exit_code == 0 and "skipped" not in present.output, present.output
    assert "lpips" in json.loads(out.read_text())["rows"][0]["values"]
