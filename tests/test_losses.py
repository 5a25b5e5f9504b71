"""aecli.losses against the seeds' own loss formulas and direct library calls."""

from __future__ import annotations

import math

import lpips
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from aecli.errors import UsageError
from aecli.losses import (
    AutoencoderObjective,
    LossConfig,
    LPIPSLoss,
    PatchDiscriminator,
    gan_discriminator_loss,
    gan_generator_loss,
    hinge_d_loss,
    kl_weight,
)
from aecli.models.base import AEOutput
from aecli.models.distributions import DiagonalGaussian, PointLatent


def _vae_out(recon, mu, logvar, z=None):
    return AEOutput(recon=recon, posterior=DiagonalGaussian(mu, logvar), z=mu if z is None else z)


@pytest.fixture(scope="module")
def lpips_net():
    torch.manual_seed(0)
    return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)


# -- seed formulas ---------------------------------------------------------------------------------

def test_seed001_vae_loss_equals_mean_reduction():
    g = torch.Generator().manual_seed(1)
    x, recon = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g)
    mu, logvar = torch.randn(4, 8, 2, 2, generator=g), torch.randn(4, 8, 2, 2, generator=g)

    # seed 001's loss_function, literally
    recon_loss = F.mse_loss(recon, x)
    kld_loss = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
    seed_total = recon_loss + 0.000025 * kld_loss

    obj = AutoencoderObjective(LossConfig(recon="mse", reduction="mean", beta=0.000025), (0.0, 1.0), 100)
    total, parts = obj(x, _vae_out(recon, mu, logvar), step=0)
    assert torch.allclose(total, seed_total, rtol=1e-6, atol=0)
    assert torch.allclose(parts["recon"], recon_loss) and torch.allclose(parts["kl"], kld_loss, rtol=1e-6)
    assert parts["kl_weight"].item() == pytest.approx(0.000025)


def test_seed002_summed_mse_and_std_form_kl():
    """Seed 002 sums over the whole batch; reduction="sum" is per image, so seed = ours × batch size."""
    g = torch.Generator().manual_seed(2)
    b = 5
    imgs, out = torch.rand(b, 1, 28, 28, generator=g), torch.rand(b, 1, 28, 28, generator=g)
    mu, std = torch.randn(b, 20, generator=g), torch.rand(b, 20, generator=g) + 0.2

    reconstruction_loss = ((imgs - out) ** 2).sum()
    kl = ((std**2) / 2 + (mu**2) / 2 - torch.log(std) - 0.5).sum()
    seed_loss = reconstruction_loss + kl

    obj = AutoencoderObjective(LossConfig(recon="mse", reduction="sum", beta=1.0), (0.0, 1.0), 100)
    total, parts = obj(imgs, _vae_out(out, mu, 2 * torch.log(std)), step=0)
    assert torch.allclose(total * b, seed_loss, rtol=1e-5)
    assert torch.allclose(parts["kl"] * b, kl, rtol=1e-5)


def test_seed004_bce_summed_per_image():
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(6, 1, 28, 28, generator=g) > 0.7).float()
    recon = torch.rand(6, 1, 28, 28, generator=g).clamp(0.01, 0.99)
    obj = AutoencoderObjective(LossConfig(recon="bce", reduction="sum"), (0.0, 1.0), 10)
    total, parts = obj(x, AEOutput(recon=recon, posterior=PointLatent(torch.zeros(6, 4)), z=torch.zeros(6, 4)), 0)
    per_image = -(x * recon.log() + (1 - x) * (1 - recon).log()).flatten(1).sum(1)
    assert torch.allclose(parts["recon"], per_image.mean(), rtol=1e-5)
    assert set(parts) == {"recon"}  # a deterministic latent has no KL term
    assert total.item() == pytest.approx(per_image.mean().item(), rel=1e-5)


def test_l1_mean():
    x, r = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    obj = AutoencoderObjective(LossConfig(recon="l1"), (-1.0, 1.0), 10)
    total, _ = obj(x, AEOutput(recon=r, posterior=PointLatent(torch.zeros(2, 3)), z=torch.zeros(2, 3)), 0)
    assert torch.allclose(total, (x - r).abs().mean())


def test_gaussian_is_the_nll_of_a_normal_with_each_images_mse_as_variance():
    """Against torch.distributions: σ_i² = MSE_i is the maximum-likelihood variance of image i."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    recon = x + torch.randn(4, 3, 8, 8, generator=g) * torch.tensor([0.01, 0.1, 0.3, 1.0]).view(4, 1, 1, 1)
    sigma = (recon - x).pow(2).flatten(1).mean(1).sqrt().view(4, 1, 1, 1)
    nll = -Normal(recon, sigma.expand_as(recon)).log_prob(x)  # nats per element
    lat = PointLatent(torch.zeros(4, 2))
    for reduction, ref in (("mean", nll.mean()), ("sum", nll.flatten(1).sum(1).mean())):
        obj = AutoencoderObjective(LossConfig(recon="gaussian", reduction=reduction), (-1.0, 1.0), 10)
        total, parts = obj(x, AEOutput(recon=recon, posterior=lat, z=lat.mean), 0)
        assert total.item() == pytest.approx(ref.item(), rel=1e-5)


def test_gaussian_weights_each_image_by_its_relative_error():
    """Its gradient is MSE's divided by 2·MSE_i: an image with 100× less error pulls as hard (per-image PSNR)."""
    x = torch.zeros(2, 1, 4, 4)
    recon = torch.cat([torch.full((1, 1, 4, 4), 0.01), torch.full((1, 1, 4, 4), 0.1)]).requires_grad_()
    obj = AutoencoderObjective(LossConfig(recon="gaussian", reduction="mean"), (-1.0, 1.0), 10)
    total, _ = obj(x, AEOutput(recon=recon, posterior=PointLatent(torch.zeros(2, 2)), z=torch.zeros(2, 2)), 0)
    total.backward()
    # d/dr of ½·log(mean r²) per image, averaged over 2 images: r / (16 · r²) / 2 per pixel
    assert recon.grad[0].flatten() == pytest.approx(torch.full((16,), 1 / (0.01 * 32)).tolist(), rel=1e-5)
    assert recon.grad[1].flatten() == pytest.approx(torch.full((16,), 1 / (0.1 * 32)).tolist(), rel=1e-5)
    # a perfect reconstruction is floored, not -inf
    total, _ = obj(x, AEOutput(recon=x.clone(), posterior=PointLatent(torch.zeros(2, 2)), z=torch.zeros(2, 2)), 0)
    assert math.isfinite(total.item())


def test_bce_refuses_tanh_range():
    with pytest.raises(UsageError, match=r"--recon bce.*sigmoid"):
        AutoencoderObjective(LossConfig(recon="bce"), (-1.0, 1.0), 10)


@pytest.mark.parametrize("cfg", [LossConfig(recon="huber"), LossConfig(reduction="max"), LossConfig(beta=-1),
                                 LossConfig(kl_cycle_ratio=0.0), LossConfig(kl_warmup_steps=-3),
                                 LossConfig(lpips=0.1), LossConfig(adv=0.5),
                                 LossConfig(kl_cycles=20)])
def test_bad_configs_are_usage_errors(cfg):
    with pytest.raises(UsageError):
        AutoencoderObjective(cfg, (-1.0, 1.0), total_steps=10)


# -- schedules -------------------------------------------------------------------------------------

def test_warmup_linear():
    cfg = LossConfig(beta=2.0, kl_warmup_steps=10_000)
    for step, want in [(0, 0.0), (1, 2e-4), (2500, 0.5), (5000, 1.0), (9999, 1.9998), (10_000, 2.0), (50_000, 2.0)]:
        assert kl_weight(cfg, step, 100_000) == pytest.approx(want)


def test_cyclical_annealing():
    cfg = LossConfig(beta=1.5, kl_cycles=4, kl_cycle_ratio=0.5)
    total = 1000  # cycle length 250, ramp over 125 steps
    for start in (0, 250, 500, 750, 1000):
        assert kl_weight(cfg, start, total) == 0.0
        assert kl_weight(cfg, start + 125, total) == pytest.approx(1.5)
        assert kl_weight(cfg, start + 249, total) == pytest.approx(1.5)
        assert kl_weight(cfg, start + 50, total) == pytest.approx(1.5 * 50 / 125)
    assert [kl_weight(cfg, s, total) for s in range(250)] == [kl_weight(cfg, s + 500, total) for s in range(250)]
    # a cycle length that is not a whole number of steps still starts each cycle at exactly 0
    assert kl_weight(LossConfig(kl_cycles=3), 0, 1000) == 0.0 and kl_weight(LossConfig(kl_cycles=3), 1000, 1000) == 0.0


def test_warmup_and_cycles_multiply():
    cfg = LossConfig(beta=1.0, kl_warmup_steps=500, kl_cycles=4, kl_cycle_ratio=0.5)
    assert kl_weight(cfg, 125, 1000) == pytest.approx(125 / 500)  # cycle at its peak, envelope at 1/4
    assert kl_weight(cfg, 375, 1000) == pytest.approx(0.75)
    assert kl_weight(cfg, 625, 1000) == pytest.approx(1.0)
    assert kl_weight(cfg, 500, 1000) == 0.0


def test_kl_weight_used_by_objective():
    x = torch.rand(2, 1, 8, 8)
    mu, logvar = torch.randn(2, 4), torch.randn(2, 4)
    obj = AutoencoderObjective(LossConfig(beta=1.0, kl_warmup_steps=100), (0.0, 1.0), 1000)
    t0, p0 = obj(x, _vae_out(x.clone(), mu, logvar), step=0)
    t50, p50 = obj(x, _vae_out(x.clone(), mu, logvar), step=50)
    assert t0.item() == 0.0 and p0["kl_weight"].item() == 0.0
    assert t50.item() == pytest.approx(0.5 * p50["kl"].item(), rel=1e-6)


# -- free bits and flows ---------------------------------------------------------------------------

def test_free_bits_clamps_per_dimension():
    b, d = 8, 4
    mu = torch.zeros(b, d)
    mu[:, 0] = 3.0  # KL 4.5 nats, above the threshold
    mu[:, 1] = 0.3  # KL 0.045 nats, below
    logvar = torch.zeros(b, d)  # dims 2, 3: KL exactly 0
    mu.requires_grad_(True)
    out = _vae_out(torch.zeros(b, 1, 4, 4), mu, logvar)
    obj = AutoencoderObjective(LossConfig(reduction="sum", beta=1.0, free_bits=0.5), (0.0, 1.0), 10)
    total, parts = obj(torch.zeros(b, 1, 4, 4), out, step=5)
    assert parts["kl_free_bits"].item() == pytest.approx(4.5 + 3 * 0.5)
    assert parts["kl"].item() == pytest.approx(4.5 + 0.045)
    total.backward()
    assert mu.grad[:, 1].abs().max() == 0  # a clamped dimension gets no gradient
    assert mu.grad[:, 0].abs().min() > 0

    obj_mean = AutoencoderObjective(LossConfig(reduction="mean", free_bits=0.5), (0.0, 1.0), 10)
    _, pm = obj_mean(torch.zeros(b, 1, 4, 4), _vae_out(torch.zeros(b, 1, 4, 4), mu.detach(), logvar), 5)
    assert pm["kl_free_bits"].item() == pytest.approx((4.5 + 1.5) / d)


def _flow_out(b=6, d=5, seed=3):
    g = torch.Generator().manual_seed(seed)
    mu, logvar = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g) * 0.5
    z0 = mu + (0.5 * logvar).exp() * torch.randn(b, d, generator=g)
    z = z0 + 0.3 * torch.tanh(z0)  # stands in for the flows; only the numbers matter here
    log_det = torch.randn(b, generator=g)
    out = AEOutput(recon=torch.rand(b, 1, 8, 8, generator=g), posterior=DiagonalGaussian(mu, logvar),
                   z=z, z0=z0, log_det=log_det)
    return out, mu, logvar, z0, z, log_det


def test_flow_kl_single_sample_estimate():
    out, mu, logvar, z0, z, log_det = _flow_out()
    x = torch.rand_like(out.recon)
    obj = AutoencoderObjective(LossConfig(reduction="sum", beta=1.0), (0.0, 1.0), 10)
    total, parts = obj(x, out, step=3)
    log_q0 = Normal(mu, (0.5 * logvar).exp()).log_prob(z0).sum(1)
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(1)
    want = (log_q0 - log_det - log_pz).mean()
    assert parts["kl"].item() == pytest.approx(want.item(), rel=1e-5)
    assert parts["flow_log_det"].item() == pytest.approx(log_det.mean().item(), rel=1e-6)
    assert total.item() == pytest.approx(parts["recon"].item() + want.item(), rel=1e-5)

    obj_mean = AutoencoderObjective(LossConfig(reduction="mean"), (0.0, 1.0), 10)
    _, pm = obj_mean(x, out, step=3)
    assert pm["kl"].item() == pytest.approx(want.item() / 5, rel=1e-5)
    assert pm["flow_log_det"].item() == pytest.approx(log_det.mean().item() / 5, rel=1e-5)


def test_flow_free_bits_on_base_kl():
    out, mu, logvar, *_ = _flow_out()
    x = torch.rand_like(out.recon)
    obj = AutoencoderObjective(LossConfig(reduction="sum", free_bits=2.0), (0.0, 1.0), 10)
    _, parts = obj(x, out, step=0)
    base = DiagonalGaussian(mu, logvar).kl_per_dim().mean(0)
    deficit = (2.0 - base).clamp_min(0).sum()
    assert deficit > 0
    assert parts["kl_free_bits"].item() == pytest.approx(parts["kl"].item() + deficit.item(), rel=1e-5)


# -- LPIPS -----------------------------------------------------------------------------------------

def test_lpips_loss_equals_direct_call(lpips_net):
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    loss = LPIPSLoss(lpips_net, (0.0, 1.0))
    got = loss(x, y)

    # the conversion written out: [0,1] → [-1,1], gray → RGB; 32 px is alex's minimum: no resize
    want = lpips_net(x.repeat(1, 3, 1, 1) * 2 - 1, y.repeat(1, 3, 1, 1) * 2 - 1).flatten()
    assert got.shape == (2,) and torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert (got > 0).all()
    assert loss(x, x).abs().max().item() < 1e-7

    def up(t):  # below the minimum: bilinear to 32 px, the rule `aecli evaluate`'s lpips uses too
        return F.interpolate(t.repeat(1, 3, 1, 1) * 2 - 1, size=(32, 32), mode="bilinear", align_corners=False)

    small_x, small_y = x[..., :16, :16], y[..., :16, :16]
    want = lpips_net(up(small_x), up(small_y)).flatten()
    assert torch.allclose(loss(small_x, small_y), want, rtol=1e-5, atol=1e-7)

    # [-1, 1] RGB at 64 px goes to lpips unchanged
    a, b = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    assert torch.allclose(LPIPSLoss(lpips_net, (-1.0, 1.0))(a, b), lpips_net(a, b).flatten(), rtol=1e-5)


def test_lpips_in_objective_gradients_and_frozen(lpips_net):
    x = torch.rand(2, 3, 32, 32)
    recon = torch.rand(2, 3, 32, 32, requires_grad=True)
    obj = AutoencoderObjective(LossConfig(recon="l1", lpips=0.1), (0.0, 1.0), 10, lpips_model=lpips_net)
    obj.train()
    assert not obj.lpips.net.training  # dropout in the lin layers stays off
    total, parts = obj(x, AEOutput(recon=recon, posterior=PointLatent(torch.zeros(2, 4)), z=torch.zeros(2, 4)), 0)
    lp = LPIPSLoss(lpips_net, (0.0, 1.0))(recon, x).mean()
    assert total.item() == pytest.approx((recon - x).abs().mean().item() + 0.1 * lp.item(), rel=1e-5)
    total.backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0 and torch.isfinite(recon.grad).all()
    assert all(p.grad is None for p in lpips_net.parameters())


# -- adversarial -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size,channels,side", [(32, 1, 2), (64, 3, 6), (256, 3, 30)])
def test_patch_discriminator_shapes(size, channels, side):
    d = PatchDiscriminator(channels, ndf=8 if size == 256 else 64)
    assert d(torch.randn(2, channels, size, size)).shape == (2, 1, side, side)
    assert d.output_size(size) == side


def test_patch_discriminator_too_small():
    with pytest.raises(UsageError, match="at least"):
        PatchDiscriminator(1, ndf=8)(torch.randn(1, 1, 8, 8))


def test_hinge_losses_known_values():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # real: relu(1 - r) = [0, 0.5, 2] → mean 5/6; fake: relu(1 + f) = [0, 1, 2] → mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))


def test_objective_adversarial_term_and_disc_loss():
    torch.manual_seed(0)
    d = PatchDiscriminator(1, ndf=8)
    x = torch.rand(2, 1, 32, 32)
    recon = torch.rand(2, 1, 32, 32, requires_grad=True)
    out = AEOutput(recon=recon, posterior=PointLatent(torch.zeros(2, 4)), z=torch.zeros(2, 4))
    obj = AutoencoderObjective(LossConfig(adv=0.5, adv_start=10), (0.0, 1.0), 100, discriminator=d)
    obj.eval()  # BatchNorm with running stats: the same logits on every call
    t_before, p_before = obj(x, out, step=9)
    assert p_before["adv_g"].item() == 0.0 and not obj.adv_active(9)
    t_after, p_after = obj(x, out, step=10)
    g = -d(recon).mean()
    assert p_after["adv_g"].item() == pytest.approx(g.item(), rel=1e-5)
    assert t_after.item() == pytest.approx(t_before.item() + 0.5 * g.item(), rel=1e-5)

    loss, info = obj.discriminator_loss(x, recon, step=10)
    want = 0.5 * (F.relu(1 - d(x)).mean() + F.relu(1 + d(recon)).mean())
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert loss.requires_grad and set(info) == {"adv_d", "logits_real", "logits_fake"}
    loss.backward()
    assert recon.grad is None  # the discriminator step must not reach the autoencoder
    assert obj.discriminator_loss(x, recon, step=3)[0].item() == 0.0


def test_gan_bce_losses():
    real, fake = torch.tensor([[1.5], [-0.3], [0.2]]), torch.tensor([[-1.0], [0.4], [2.0]])

    def bce(logits, t):  # binary cross-entropy of sigmoid(logits) against target t, by hand
        p = torch.sigmoid(logits)
        return -(t * p.log() + (1 - t) * (1 - p).log()).mean()

    want_d = bce(real, 0.9) + bce(fake, 0.0)
    assert gan_discriminator_loss(real, fake).item() == pytest.approx(want_d.item(), rel=1e-6)
    assert gan_discriminator_loss(real, fake).item() == pytest.approx(
        (F.binary_cross_entropy_with_logits(real, torch.full_like(real, 0.9))
         + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))).item(), rel=1e-6)
    assert gan_discriminator_loss(real, fake, real_label=1.0).item() == pytest.approx(
        (bce(real, 1.0) + bce(fake, 0.0)).item(), rel=1e-6)
    assert gan_generator_loss(fake).item() == pytest.approx(bce(fake, 1.0).item(), rel=1e-6)


# -- everything together ---------------------------------------------------------------------------

def test_all_components_finite_and_detached(lpips_net):
    torch.manual_seed(1)
    out, *_ = _flow_out(b=2, d=6)
    out.recon = torch.rand(2, 3, 32, 32, requires_grad=True)
    x = torch.rand(2, 3, 32, 32)
    cfg = LossConfig(recon="bce", reduction="sum", beta=1.0, kl_warmup_steps=10, kl_cycles=2,
                     free_bits=0.5, lpips=0.1, adv=0.1)
    obj = AutoencoderObjective(cfg, (0.0, 1.0), 100, lpips_model=lpips_net, discriminator=PatchDiscriminator(3, 8))
    total, parts = obj(x, out, step=7)
    assert set(parts) == {"recon", "kl", "kl_weight", "kl_free_bits", "flow_log_det", "lpips", "adv_g"}
    assert math.isfinite(total.item())
    for name, v in parts.items():
        assert v.dim() == 0 and not v.requires_grad and torch.isfinite(v), name
    total.backward()
    assert torch.isfinite(out.recon.grad).all()


def test_bf16_autocast_bce():
    x = torch.rand(2, 1, 8, 8)
    recon = torch.rand(2, 1, 8, 8).clamp(0.05, 0.95)
    obj = AutoencoderObjective(LossConfig(recon="bce"), (0.0, 1.0), 10)
    out = _vae_out(recon.bfloat16(), torch.randn(2, 3).bfloat16(), torch.randn(2, 3).bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = obj(x, out, step=5)
    assert total.dtype == torch.float32 and torch.isfinite(total)
