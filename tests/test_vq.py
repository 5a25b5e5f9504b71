"""Vector-quantised families (issue 19): the quantiser's math against independent float64 computations
on fixed tensors, checkpoints, exact resume of the EMA codebook, codebook health, and a tiny VQ-VAE
that learns the embedded digits."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_kwargs
from safetensors.torch import load_file
from typer.testing import CliRunner

from aecli.checkpoint import load_model, read_header
from aecli.cli import app
from aecli.errors import Interrupted, UsageError
from aecli.metrics.codebook import CodebookStats
from aecli.models import create_model
from aecli.models.quantizer import VectorQuantizer
from aecli.training import TrainConfig, train
from aecli.training.trainer import Trainer

CODES = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # K = 4 codes, D = 2
# six code vectors as a (1, 2, 2, 3) map; by hand, their nearest codes are 1, 0, 2 / 3, 1, 2
POINTS = np.array([[0.9, 0.1], [0.1, 0.2], [0.2, 0.8], [-0.7, -0.4], [0.6, 0.45], [-0.3, 0.9]])
NEAREST = [1, 0, 2, 3, 1, 2]


def quantizer(codes: np.ndarray = CODES, **kwargs: object) -> VectorQuantizer:
    q = VectorQuantizer(len(codes), codes.shape[1], **kwargs)  # type: ignore[arg-type]
    with torch.no_grad():
        q.codebook.copy_(torch.tensor(codes, dtype=torch.float32))
        if q.ema:
            q.ema_sum.copy_(q.codebook)
    return q


def as_map(points: np.ndarray, h: int = 2, w: int = 3) -> torch.Tensor:
    """(h·w, D) rows → a (1, D, h, w) feature map whose pixel (i, j) is row i·w + j."""
    return torch.tensor(points, dtype=torch.float32).view(1, h, w, -1).permute(0, 3, 1, 2).contiguous()


# -- the quantiser's math --------------------------------------------------------------------------
def test_nearest_code_matches_hand_and_brute_force() -> None:
    q = quantizer()
    assert q(as_map(POINTS)).indices.flatten().tolist() == NEAREST
    rng = np.random.default_rng(0)
    codes, pts = rng.normal(size=(37, 5)), rng.normal(size=(64, 5))
    brute = ((pts[:, None, :] - codes[None]) ** 2).sum(-1).argmin(1)  # float64, every pair
    got = quantizer(codes)(as_map(pts, 8, 8)).indices.flatten().numpy()
    assert (got == brute).all()


@pytest.mark.parametrize("ema", [False, True])
def test_losses_and_straight_through_gradients(ema: bool) -> None:
    beta = 0.3
    q = quantizer(commitment=beta, ema=ema)
    z = as_map(POINTS).requires_grad_(True)
    out = q(z)
    e = CODES[NEAREST]
    mse = ((POINTS - e) ** 2).mean()  # over all 6·2 elements
    assert out.commitment.item() == pytest.approx(mse, rel=1e-6)
    assert out.codebook_term.item() == pytest.approx(mse, rel=1e-6)
    assert out.loss.item() == pytest.approx(beta * mse + (0.0 if ema else mse), rel=1e-6)
    # forward value: the chosen codes, in the input's layout
    assert torch.allclose(out.quantized, as_map(e), atol=0)
    # straight-through: d(Σ w·quantized)/dz = w
    w = torch.randn_like(z)
    (gz,) = torch.autograd.grad((w * out.quantized).sum(), z, retain_graph=True)
    assert torch.allclose(gz, w)
    # d loss/dz = 2β(z - e)/N;  d loss/d e_k = Σ_{j→k} 2(e_k - z_j)/N (no codebook gradient with EMA)
    n = POINTS.size
    out.loss.backward()
    assert np.allclose(z.grad.permute(0, 2, 3, 1).reshape(-1, 2).numpy(), 2 * beta * (POINTS - e) / n, atol=1e-7)
    if ema:
        assert q.codebook.grad is None and not q.codebook.requires_grad
    else:
        want = np.zeros_like(CODES)
        for j, k in enumerate(NEAREST):
            want[k] += 2 * (CODES[k] - POINTS[j]) / n
        assert np.allclose(q.codebook.grad.numpy(), want, atol=1e-7)


def test_ema_update_matches_the_paper_formula_over_two_steps() -> None:
    decay, eps = 0.9, 1e-5
    q = quantizer(ema=True, decay=decay, eps=eps)
    count, total = np.ones(4), CODES.copy()
    codes = CODES.copy()
    batches = [POINTS, POINTS[::-1] * 0.5 + 0.1]
    for pts in batches:
        idx = ((pts[:, None] - codes[None]) ** 2).sum(-1).argmin(1)
        out = q(as_map(pts), update=True)
        assert out.indices.flatten().tolist() == idx.tolist()
        assert torch.allclose(out.quantized, as_map(codes[idx]).float(), atol=1e-6)  # the codes before the update
        n_k = np.bincount(idx, minlength=4)
        s_k = np.zeros_like(codes)
        np.add.at(s_k, idx, pts)
        count = decay * count + (1 - decay) * n_k
        total = decay * total + (1 - decay) * s_k
        smoothed = (count + eps) / (count.sum() + 4 * eps) * count.sum()
        codes = total / smoothed[:, None]
        assert np.allclose(q.ema_count.numpy(), count, atol=1e-6)
        assert np.allclose(q.ema_sum.numpy(), total, atol=1e-6)
        assert np.allclose(q.codebook.detach().numpy(), codes, atol=1e-5)
    assert not np.allclose(codes, CODES)  # the test moved the codebook at all


def test_dead_code_restart_moves_unused_codes_onto_encoder_outputs() -> None:
    codes = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-50.0, -50.0]])  # code 3 is never nearest
    pts = POINTS[[0, 1, 2, 4, 5]].repeat(2, 0)[:9]  # uses codes 0, 1, 2 only
    for ema in (False, True):
        q = quantizer(codes, dead_after=2, ema=ema)
        for step in (1, 2):
            out = q(as_map(pts, 3, 3), update=True)
            assert out.restarted.item() == 0 and q.unused_steps.tolist() == [0, 0, 0, step]
        before = q.codebook.detach().clone()
        out = q(as_map(pts, 3, 3), update=True)  # unused for 2 steps: restarted before quantising
        assert out.restarted.item() == 1
        # the restarted code was put on one of this batch's encoder outputs r (EMA: its averages restart
        # at count 1, sum r, then take this step's update)
        if ema:
            mine = (out.indices.flatten() == 3).numpy()
            moved = (q.ema_sum[3].numpy() - 0.01 * pts[mine].sum(0)) / 0.99
            assert q.ema_count[3].item() == pytest.approx(0.99 + 0.01 * mine.sum())
        else:
            moved = q.codebook[3].detach().numpy()
            assert torch.equal(q.codebook.detach()[:3], before[:3])
        assert any(np.allclose(moved, p, atol=1e-6) for p in pts)
        assert (out.indices == 3).any() and q.unused_steps[3].item() == 0  # and it is chosen at once


def test_inference_changes_nothing() -> None:
    q = quantizer(ema=True, dead_after=1)
    q(as_map(POINTS), update=True)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    for _ in range(3):
        q(as_map(POINTS[::-1].copy()))
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())
    model = create_model("vqgan", **tiny_kwargs("vqgan"))
    model.train()  # encode() never updates, even in training mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(torch.zeros(2, 1, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_codebook_stats_against_hand_numbers() -> None:
    stats = CodebookStats(8)
    stats.update(torch.tensor([[0, 0, 1], [1, 2, 2]]))
    stats.update(torch.tensor([3, 3]))
    s = stats.summary()
    p = np.array([2, 2, 2, 2]) / 8
    assert s["codebook_perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))  # = 4: 4 codes equally
    assert (s["codebook_used"], s["codebook_size"], s["codebook_usage"], s["codebook_dead"]) == (4, 8, 0.5, 4)


# -- model interface ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["vq-vae", "vqgan"])
def test_indices_round_trip_and_bad_indices(family: str) -> None:
    torch.manual_seed(0)
    model = create_model(family, **tiny_kwargs(family)).eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        idx = model.encode_indices(x)
        assert idx.dtype == torch.int64 and tuple(idx.shape) == (3, 16, 16)
        assert torch.equal(model.decode_indices(idx), model(x).recon)
        assert torch.equal(model.quantizer.lookup(idx), model.encode(x).mode())
    with pytest.raises(UsageError, match=r"code indices must be in 0 … 15"):
        model.decode_indices(torch.full((1, 16, 16), 16))
    with pytest.raises(UsageError, match="integer tensor"):
        model.decode_indices(torch.zeros(1, 16, 16))
    with pytest.raises(UsageError, match="no prior over its codes"):
        model.sample(2)


def test_config_is_validated_with_clear_messages() -> None:
    from aecli.models import make_config

    for bad, message in [({"commitment": -1}, "commitment"), ({"ema_decay": 1.0}, "ema_decay"),
                         ({"codebook_size": 1}, "codebook_size"), ({"dead_after": -2}, "dead_after"),
                         ({"ema_codebook": "yes"}, "ema_codebook"), ({"num_classes": 3}, "not conditional"),
                         ({"image_size": 30}, "multiples of 4")]:
        with pytest.raises(UsageError, match=message):
            make_config("vq-vae", **{**tiny_kwargs("vq-vae"), "widths": (8, 8, 16), **bad})


def test_checkpoint_records_the_quantiser_and_keeps_the_codebook(tmp_path: Path) -> None:
    from aecli.checkpoint import save_model
    from aecli.data.spec import DataSpec

    torch.manual_seed(1)
    model = create_model("vqgan", **tiny_kwargs("vqgan"))
    model.train()
    model(torch.rand(4, 1, 32, 32) * 2 - 1)  # one EMA step: buffers differ from their init
    spec = DataSpec(image_size=32, channels=1, value_range=(-1.0, 1.0), source="digits")
    save_model(tmp_path / "m.safetensors", model, spec, {})
    header = read_header(tmp_path / "m.safetensors")
    assert {k: header.config[k] for k in ("codebook_size", "code_dim", "commitment", "ema_codebook", "dead_after")} \
        == {"codebook_size": 16, "code_dim": 4, "commitment": 0.25, "ema_codebook": True, "dead_after": 5}
    tensors = load_file(str(tmp_path / "m.safetensors"))
    codebook = [k for k in tensors if k.endswith("quantizer.codebook")]
    assert len(codebook) == 1 and tuple(tensors[codebook[0]].shape) == (16, 4)
    loaded = load_model(tmp_path / "m.safetensors").model
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert not loaded.quantizer.codebook.requires_grad


# -- training --------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread: None) -> None:
    """Every test and fixture of this module runs on one torch thread (conftest.one_thread)."""


def _cfg(out: Path, family: str = "vqgan", **kw: object) -> TrainConfig:
    """Digits at their own 8 px; 64 codes for 128·16 positions a batch, restarted after 3 idle steps."""
    model = {**tiny_kwargs(family), "widths": (8, 8), "code_dim": 4, "codebook_size": 64, "dead_after": 3}
    model.pop("image_size"), model.pop("channels")
    base = dict(family=family, model=model, data="digits", image_size=8, channels=1, epochs=2, batch_size=128,
                device="cpu", workers=1, grid_size=2, seed=3, out=str(out), log_every=1000)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _same_files(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs"


def test_vq_run_interrupted_mid_epoch_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EMA codebook, its buffers, the unused-step counters and the restart draws all continue exactly."""
    reference = tmp_path / "ref"
    train(_cfg(reference))
    out = tmp_path / "run"
    original = Trainer._update_ema

    def signal_inside_step(self: Trainer) -> None:
        original(self)
        if self.counters.step + 1 == 17:  # mid epoch 2 (12 steps an epoch)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_update_ema", signal_inside_step)
    with pytest.raises(Interrupted):
        train(_cfg(out))
    monkeypatch.undo()
    train(_cfg(out), resume=str(out))
    _same_files(out / "last.safetensors", reference / "last.safetensors")
    ref_state, state = load_file(str(reference / "state.safetensors")), load_file(str(out / "state.safetensors"))
    for k in ("model.quantizer.ema_count", "model.quantizer.ema_sum", "model.quantizer.unused_steps",
              "model.quantizer.codebook"):
        assert torch.equal(ref_state[k], state[k]), k
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rs if r["kind"] == "epoch"]  # noqa: E731
    assert strip(rows) == strip(ref_rows)
    epoch = strip(rows)[-1]
    assert {"vq_loss", "vq_perplexity", "vq_used", "vq_restarted", "vq_commitment"} <= set(epoch)
    assert sum(r.get("vq_restarted", 0) for r in strip(rows) if r["split"] == "train") > 0  # restarts happened


def test_tiny_vq_vae_learns_digits_with_a_healthy_codebook(tmp_path: Path) -> None:
    """≥ 50 % of the codebook in use on the validation digits, and far better than the mean image."""
    from aecli.data import open_for
    from aecli.metrics.evaluate import EvalConfig, evaluate_checkpoints

    cfg = _cfg(tmp_path / "run", family="vq-vae", epochs=3, batch_size=32, lr=3e-3, seed=0,
               model={"widths": (16, 32), "blocks_per_stage": 1, "codebook_size": 32, "code_dim": 8,
                      "dead_after": 20})
    train(cfg)
    ckpt = tmp_path / "run" / "best.safetensors"
    report = evaluate_checkpoints([ckpt], EvalConfig(metrics=["psnr", "codebook"], device="cpu",
                                                     codebook_plots=str(tmp_path / "plots")))
    values = report.rows[0].values
    assert values["codebook_usage"] >= 0.5, values
    assert (tmp_path / "plots" / "run_best_codebook.png").stat().st_size > 1000
    # the mean image of the training split, scored on the same validation images, per image as evaluate does
    spec = read_header(ckpt).data
    train_x = open_for(spec, "digits", split="train").images.double() / 255
    val_x = open_for(spec, "digits", split="val").images.double() / 255
    mse = ((val_x - train_x.mean(0)) ** 2).flatten(1).mean(1)
    mean_psnr = float((10 * torch.log10(1 / mse)).mean())
    assert values["psnr"] > mean_psnr + 6, (values["psnr"], mean_psnr)


def test_cli_train_evaluate_and_sample_refusal(tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train", "vq-vae", "--data", "digits", "--image-size", "16", "--epochs", "1", "--out", str(run),
            "--device", "cpu", "-m", "widths=8,8", "-m", "codebook_size=8", "-m", "code_dim=4",
            "-m", "blocks_per_stage=1", "-m", "ema_codebook=true", "--grid-columns", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert read_header(run / "best.safetensors").config["ema_codebook"] is True
    res = runner.invoke(app, ["evaluate", str(run / "best.safetensors"), "--metrics", "codebook", "--device", "cpu",
                              "--json-out", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    row = json.loads((tmp_path / "e.json").read_text())["rows"][0]["values"]
    assert row["codebook_size"] == 8 and row["codebook_used"] + row["codebook_dead"] == 8
    res = runner.invoke(app, ["sample", str(run / "best.safetensors"), "--n", "4", "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 2 and "no prior over its codes" in res.output
    res = runner.invoke(app, ["models", "--json"])
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert {"vq-vae", "vqgan"} <= set(rows)
    assert "sample" not in " ".join(rows["vq-vae"]["commands"])
    assert rows["vqgan"]["options"]["codebook_size"] == 1024


# -- vqgan with the shared LDM/taming objective ------------------------------------------------------
def test_ldm_objective_on_a_vq_model_is_tamings_vq_loss() -> None:
    """`--objective ldm` on a VQ family = VQLPIPSWithDiscriminator: mean L1 + codebook_weight·(codebook +
    β·commitment) + disc_weight·λ·g, λ = ‖∇nll‖ / (‖∇g‖ + 1e-4) at the decoder's last layer."""
    from aecli.losses import LossConfig, PatchDiscriminator
    from aecli.losses.ldm import LDMObjective

    torch.manual_seed(0)
    model = create_model("vqgan", **tiny_kwargs("vqgan")).train()
    disc = PatchDiscriminator(1)
    cfg = LossConfig(recon="l1", beta=0.7, adv=0.5, adv_start=0)
    objective = LDMObjective(cfg, (-1.0, 1.0), 10, last_layer=model.last_layer, discriminator=disc)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    out = model(x)
    loss, parts = objective(x, out, step=0)
    # the reference, written out from taming's formulas
    nll = (x - out.recon).abs().mean()
    g = -disc(out.recon).mean()
    last = model.decoder[-2].weight
    gn = torch.autograd.grad(nll, last, retain_graph=True)[0].norm()
    gg = torch.autograd.grad(g, last, retain_graph=True)[0].norm()
    lam = 0.5 * torch.clamp(gn / (gg + 1e-4), 0.0, 1e4)
    want = nll + 0.7 * out.quant.loss + lam * g
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert parts["d_weight"].item() == pytest.approx(lam.item(), rel=1e-5)
    assert parts["codebook_weight"].item() == pytest.approx(0.7)
    assert "logvar" not in parts and {"vq_loss", "vq_perplexity", "vq_used"} <= set(parts)
    loss.backward()  # and the encoder learns through the straight-through estimator
    assert model.encoder[0].weight.grad is not None and model.encoder[0].weight.grad.abs().sum() > 0
