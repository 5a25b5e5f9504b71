"""aecli.losses.ldm against the published taming/latent-diffusion ``LPIPSWithDiscriminator``.

``reference_*`` below are written out from the published code (ldm/modules/losses/contperceptual.py,
taming/modules/losses/vqperceptual.py: adopt_weight, hinge_d_loss, calculate_adaptive_weight), with
its variable names, on fixed tensors; aecli is never called inside them.
"""

from __future__ import annotations

import lpips
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aecli.errors import UsageError
from aecli.losses import LossConfig, LPIPSLoss, PatchDiscriminator
from aecli.losses.ldm import LDMLoss, LDMLossConfig, LDMObjective
from aecli.models.base import AEOutput
from aecli.models.distributions import DiagonalGaussian


# -- the published formulas, written out --------------------------------------------------------------
def reference_adopt_weight(weight, global_step, threshold=0, value=0.0):
    if global_step < threshold:
        weight = value
    return weight


def reference_hinge_d_loss(logits_real, logits_fake):
    loss_real = torch.mean(F.relu(1.0 - logits_real))
    loss_fake = torch.mean(F.relu(1.0 + logits_fake))
    d_loss = 0.5 * (loss_real + loss_fake)
    return d_loss


def reference_calculate_adaptive_weight(nll_loss, g_loss, last_layer, discriminator_weight):
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    d_weight = torch.clamp(d_weight, 0.0, 1e4).detach()
    d_weight = d_weight * discriminator_weight
    return d_weight


def reference_generator(inputs, reconstructions, mean, logvar_post, logvar, perceptual_loss, discriminator,
                        last_layer, global_step, *, kl_weight, perceptual_weight, disc_start, disc_weight,
                        disc_factor=1.0):
    """LPIPSWithDiscriminator.forward, optimizer_idx == 0 (the autoencoder's update), weights=None."""
    rec_loss = torch.abs(inputs.contiguous() - reconstructions.contiguous())
    if perceptual_weight > 0:
        p_loss = perceptual_loss(inputs.contiguous(), reconstructions.contiguous())
        rec_loss = rec_loss + perceptual_weight * p_loss
    nll_loss = rec_loss / torch.exp(logvar) + logvar
    weighted_nll_loss = nll_loss
    weighted_nll_loss = torch.sum(weighted_nll_loss) / weighted_nll_loss.shape[0]
    nll_loss = torch.sum(nll_loss) / nll_loss.shape[0]
    # DiagonalGaussianDistribution.kl() against N(0, I)
    var = torch.exp(logvar_post)
    kl_loss = 0.5 * torch.sum(torch.pow(mean, 2) + var - 1.0 - logvar_post, dim=[1, 2, 3])
    kl_loss = torch.sum(kl_loss) / kl_loss.shape[0]
    logits_fake = discriminator(reconstructions.contiguous())
    g_loss = -torch.mean(logits_fake)
    if disc_factor > 0.0:
        d_weight = reference_calculate_adaptive_weight(nll_loss, g_loss, last_layer, disc_weight)
    else:
        d_weight = torch.tensor(0.0)
    disc_factor = reference_adopt_weight(disc_factor, global_step, threshold=disc_start)
    loss = weighted_nll_loss + kl_weight * kl_loss + d_weight * disc_factor * g_loss
    return loss, {"nll_loss": nll_loss, "kl_loss": kl_loss, "d_weight": d_weight, "g_loss": g_loss,
                  "disc_factor": disc_factor}


def reference_discriminator(inputs, reconstructions, discriminator, global_step, *, disc_start, disc_factor=1.0):
    """LPIPSWithDiscriminator.forward, optimizer_idx == 1."""
    logits_real = discriminator(inputs.contiguous().detach())
    logits_fake = discriminator(reconstructions.contiguous().detach())
    disc_factor = reference_adopt_weight(disc_factor, global_step, threshold=disc_start)
    d_loss = disc_factor * reference_hinge_d_loss(logits_real, logits_fake)
    return d_loss, logits_real.detach().mean(), logits_fake.detach().mean()


# -- fixtures: fixed tensors, a tiny "decoder" whose last layer the adaptive weight looks at ----------
@pytest.fixture(scope="module")
def lpips_net():
    torch.manual_seed(0)
    return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()


@pytest.fixture()
def setup():
    torch.manual_seed(3)
    b, size = 2, 64  # 64 px: LPIPS sees the images as they are (no resizing), as in taming
    inputs = torch.rand(b, 3, size, size) * 2 - 1
    h = torch.randn(b, 8, size, size)
    conv_out = nn.Conv2d(8, 3, 3, 1, 1)  # the decoder's last layer
    mean, logvar_post = torch.randn(b, 4, 8, 8), torch.randn(b, 4, 8, 8) * 0.5
    disc = PatchDiscriminator(3, ndf=8).eval()  # eval: BatchNorm statistics fixed, both calls see the same net
    return inputs, h, conv_out, mean, logvar_post, disc


@pytest.mark.parametrize("step", [0, 5])
def test_generator_loss_matches_reference(setup, lpips_net, step):
    inputs, h, conv_out, mean, logvar_post, disc = setup
    cfg = LDMLossConfig(reg_weight=1e-2, perceptual_weight=0.7, disc_weight=0.5, disc_start=3, logvar_init=0.3)
    loss_fn = LDMLoss(cfg, lpips=LPIPSLoss(lpips_net, (-1.0, 1.0)), discriminator=disc)
    recon = conv_out(h)
    kl = DiagonalGaussian(mean, logvar_post).kl().mean()
    ours, parts = loss_fn.generator_loss(inputs, recon, step, conv_out.weight, kl)

    recon_ref = conv_out(h)
    ref, rparts = reference_generator(inputs, recon_ref, mean, logvar_post, torch.tensor(0.3), lpips_net, disc,
                                      conv_out.weight, step, kl_weight=1e-2, perceptual_weight=0.7,
                                      disc_start=3, disc_weight=0.5)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(parts["nll"], rparts["nll_loss"].detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(parts["reg"], rparts["kl_loss"], rtol=1e-5, atol=1e-5)
    assert parts["disc_factor"].item() == rparts["disc_factor"] == (1.0 if step >= 3 else 0.0)
    if step >= 3:  # the adaptive weight is computed (and used) once the discriminator is on
        assert parts["d_weight"].item() > 0
        torch.testing.assert_close(parts["d_weight"], rparts["d_weight"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(parts["adv_g"], rparts["g_loss"].detach())
        # the GAN term really enters the gradient: the loss differs from the pure nll + KL by it
        assert abs(ours.item() - (rparts["nll_loss"] + 1e-2 * rparts["kl_loss"]).item()) > 1e-4
    # the learned log-variance receives the gradient of  Σ(rec/e^logvar + logvar)/B
    ours.backward()
    rec = (inputs - recon.detach()).abs() + 0.7 * lpips_net(inputs, recon.detach())
    expected = (-rec / torch.exp(torch.tensor(0.3)) + 1).sum() / inputs.shape[0]
    torch.testing.assert_close(loss_fn.logvar.value.grad, expected, rtol=1e-4, atol=1e-3)


def test_adaptive_weight_without_perceptual_and_clamp(setup):
    """No LPIPS (weight 0): rec is the plain L1; and a vanishing GAN gradient is clamped at 1e4."""
    inputs, h, conv_out, mean, logvar_post, disc = setup
    loss_fn = LDMLoss(LDMLossConfig(reg_weight=1e-6, perceptual_weight=0.0, disc_weight=0.8, disc_start=0),
                      discriminator=disc)
    recon = conv_out(h)
    kl = DiagonalGaussian(mean, logvar_post).kl().mean()
    ours, parts = loss_fn.generator_loss(inputs, recon, 0, conv_out.weight, kl)
    ref, rparts = reference_generator(inputs, conv_out(h), mean, logvar_post, torch.tensor(0.0), None, disc,
                                      conv_out.weight, 0, kl_weight=1e-6, perceptual_weight=0.0,
                                      disc_start=0, disc_weight=0.8)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(parts["d_weight"], rparts["d_weight"], rtol=1e-5, atol=1e-7)

    class Flat(nn.Module):  # a discriminator whose logits ignore the image: zero GAN gradient
        def forward(self, x):
            return x.mean() * 0.0 + torch.ones(x.shape[0], 1, 2, 2)

    flat = LDMLoss(LDMLossConfig(perceptual_weight=0.0, disc_weight=0.5, disc_start=0), discriminator=Flat())
    _, parts = flat.generator_loss(inputs, conv_out(h), 0, conv_out.weight, kl)
    nll_grad = torch.autograd.grad(parts["nll"].new_tensor(0.0) + (inputs - conv_out(h)).abs().sum() / 2,
                                   conv_out.weight)[0]
    expected = min(torch.norm(nll_grad).item() / 1e-4, 1e4) * 0.5
    assert parts["d_weight"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("step", [1, 4])
def test_discriminator_loss_matches_reference(setup, step):
    inputs, h, conv_out, _, _, disc = setup
    loss_fn = LDMLoss(LDMLossConfig(perceptual_weight=0.0, disc_start=2), discriminator=disc)
    recon = conv_out(h)
    ours, parts = loss_fn.discriminator_loss(inputs, recon, step)
    ref, real, fake = reference_discriminator(inputs, recon, disc, step, disc_start=2)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(parts["logits_real"], real)
    torch.testing.assert_close(parts["logits_fake"], fake)
    assert (ours.item() == 0.0) == (step < 2)


def test_validation_has_no_adaptive_weight(setup):
    """Without gradients (validation) taming falls back to d_weight 0; so do we."""
    inputs, h, conv_out, mean, logvar_post, disc = setup
    loss_fn = LDMLoss(LDMLossConfig(perceptual_weight=0.0, disc_start=0), discriminator=disc)
    kl = DiagonalGaussian(mean, logvar_post).kl().mean()
    with torch.no_grad():
        loss, parts = loss_fn.generator_loss(inputs, conv_out(h), 10, conv_out.weight, kl)
    assert parts["d_weight"].item() == 0.0
    torch.testing.assert_close(loss, parts["nll"] + 1e-6 * kl)


def test_objective_maps_train_flags(setup):
    """--objective ldm: --recon l1, --beta = kl weight (with its warm-up), --adv = disc weight, --adv-start."""
    inputs, h, conv_out, mean, logvar_post, disc = setup
    cfg = LossConfig(recon="l1", beta=1e-3, kl_warmup_steps=10, adv=0.5, adv_start=2)
    obj = LDMObjective(cfg, (-1.0, 1.0), 100, last_layer=lambda: conv_out.weight, discriminator=disc)
    out = AEOutput(recon=conv_out(h), posterior=DiagonalGaussian(mean, logvar_post), z=mean)
    loss, parts = obj(inputs, out, step=5)
    ref, rparts = reference_generator(inputs, conv_out(h), mean, logvar_post, torch.tensor(0.0), None, disc,
                                      conv_out.weight, 5, kl_weight=1e-3 * 5 / 10, perceptual_weight=0.0,
                                      disc_start=2, disc_weight=0.5)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    assert parts["kl_weight"].item() == pytest.approx(5e-4)
    assert set(parts) >= {"recon", "nll", "logvar", "kl", "kl_weight", "adv_g", "d_weight", "disc_factor"}
    assert list(obj.trainable.parameters())[0] is obj.logvar.value
    with pytest.raises(UsageError, match="free bits"):
        LDMObjective(LossConfig(recon="l1", free_bits=0.5), (-1.0, 1.0), 100, last_layer=None)
    with pytest.raises(UsageError, match="last layer"):
        LDMObjective(LossConfig(recon="l1", adv=0.5), (-1.0, 1.0), 100, last_layer=None, discriminator=disc)
    with pytest.raises(UsageError, match="pixel loss"):
        LDMObjective(LossConfig(recon="bce"), (0.0, 1.0), 100, last_layer=None)
