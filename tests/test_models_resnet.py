"""Family-specific tests for skip-ae, resnet-ae, resnet-vae and resnet-attn-ae (seed 000 A, B, D)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aecli.errors import UsageError
from aecli.models import DiagonalGaussian, PointLatent, create_model, make_config
from aecli.models.resnet import ResNetAE, SelfAttention

SKIP_TINY = {"base_channels": 8, "latent_dim": 16}
RESNET_TINY = {"widths": (8, 8, 16, 16, 16), "latent_dim": 16, "heads": 2}


def _tiny(family: str, size: int, channels: int, **extra: object) -> nn.Module:
    torch.manual_seed(0)
    kwargs = dict(SKIP_TINY if family == "skip-ae" else RESNET_TINY)
    if family in ("resnet-ae", "resnet-vae"):
        kwargs.pop("heads")
    kwargs.update(extra)
    return create_model(family, image_size=size, channels=channels, **kwargs)


# -- independent parameter counts, from the layer shapes -----------------------------------------
def conv(cin: int, cout: int, k: int) -> int:  # Conv2d and ConvTranspose2d with bias
    return cin * cout * k * k + cout


def linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def norm(c: int) -> int:  # BatchNorm2d and GroupNorm both have an affine weight and bias
    return 2 * c


def skip_count(size: int, ch: int, base: int, latent: int, blocks: int = 4) -> int:
    w = [base * 2 ** i for i in range(blocks)]
    n, cin = 0, ch
    for wi in w:
        n += conv(cin, wi, 4) + norm(wi) + conv(wi, wi, 3) + norm(wi)
        cin = wi
    flat = w[-1] * (size // 2 ** blocks) ** 2
    n += linear(flat, latent) + linear(latent, flat)
    for i in range(blocks - 1, 0, -1):
        n += conv(w[i], w[i - 1], 4) + norm(w[i - 1]) + conv(2 * w[i - 1], w[i - 1], 3) + norm(w[i - 1])
    return n + conv(w[0], w[0], 4) + norm(w[0]) + conv(w[0], ch, 3)


def resnet_count(size: int, ch: int, widths: tuple[int, ...], latent: int, attn: tuple[int, ...] = (),
                 vae: bool = False, classes: int = 0) -> int:
    res = lambda c: 2 * (norm(c) + conv(c, c, 3))  # noqa: E731
    att = lambda c: norm(c) + conv(c, 3 * c, 1) + conv(c, c, 1)  # noqa: E731
    sizes = [size // 2 ** (i + 1) for i in range(len(widths))]
    n, cin = conv(ch, widths[0], 3), widths[0]
    for wi, s in zip(widths, sizes):
        n += conv(cin, wi, 4) + res(wi) + (att(wi) if s in attn else 0)
        cin = wi
    flat = widths[-1] * sizes[-1] ** 2
    n += norm(widths[-1]) + linear(flat, latent) * (2 if vae else 1) + linear(latent, flat)
    for i in range(len(widths) - 1, -1, -1):
        n += res(widths[i]) + (att(widths[i]) if sizes[i] in attn else 0) + conv(widths[i], widths[max(i - 1, 0)], 4)
    return n + norm(widths[0]) + conv(widths[0], ch, 3) + classes * latent


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size,ch", [(32, 1), (64, 3)])
def test_parameter_counts_match_layer_shapes(size: int, ch: int) -> None:
    w, lat = RESNET_TINY["widths"], 16
    assert n_params(_tiny("skip-ae", size, ch)) == skip_count(size, ch, 8, 16)
    assert n_params(_tiny("resnet-ae", size, ch)) == resnet_count(size, ch, w, lat)
    assert n_params(_tiny("resnet-vae", size, ch)) == resnet_count(size, ch, w, lat, vae=True)
    assert n_params(_tiny("resnet-vae", size, ch, num_classes=5)) == resnet_count(size, ch, w, lat, vae=True,
                                                                                  classes=5)
    assert n_params(_tiny("resnet-attn-ae", size, ch)) == resnet_count(size, ch, w, lat, attn=(16, 32))


# -- skip-ae --------------------------------------------------------------------------------------
def test_skip_connections_are_used() -> None:
    model = _tiny("skip-ae", 32, 1).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        post, skips = model.encode_with_skips(x)
        assert isinstance(post, PointLatent) and post.mean.shape == (2, 16)
        assert [s.shape[-1] for s in skips] == [16, 8, 4]  # the deepest (2×2) feature is not a skip
        ref = model.decode_with_skips(post.mode(), skips)
        assert torch.equal(model(x).recon, ref)
        for i in range(len(skips)):
            zeroed = [torch.zeros_like(s) if j == i else s for j, s in enumerate(skips)]
            assert (model.decode_with_skips(post.mode(), zeroed) - ref).abs().max() > 1e-4, f"skip {i} unused"


def test_skip_ae_refuses_decoding_a_latent_alone() -> None:
    model = _tiny("skip-ae", 32, 1)
    assert not model.decodes_latent and not model.has_prior
    with pytest.raises(UsageError, match="skip features"):
        model.decode(torch.zeros(1, 16))
    with pytest.raises(UsageError):
        model.sample(2)
    with pytest.raises(UsageError, match="not conditional"):
        make_config("skip-ae", num_classes=3)


def test_skip_ae_seed_defaults_and_options() -> None:
    cfg = make_config("skip-ae", image_size=256)
    assert (cfg.base_channels, cfg.num_blocks, cfg.latent_dim, cfg.norm, cfg.activation) == (
        32, 4, 256, "group", "silu")
    with torch.device("meta"):
        a3 = create_model("skip-ae", image_size=256, activation="leakyrelu", norm="batch", base_channels=48)
    leaky = [m for m in a3.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky and all(m.negative_slope == 0.2 for m in leaky)
    assert any(isinstance(m, nn.BatchNorm2d) for m in a3.modules())
    assert isinstance(a3.head[-1], nn.Tanh)
    with pytest.raises(UsageError, match="multiples of 16"):
        make_config("skip-ae", image_size=40)


# -- resnet families ------------------------------------------------------------------------------
def _attention_sizes(model: nn.Module, x: torch.Tensor) -> list[int]:
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
             for m in model.modules() if isinstance(m, SelfAttention)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sorted(seen)


def test_attention_only_at_requested_resolutions() -> None:
    # Stage sizes at 64 px: 32, 16, 8, 4, 2 → attention at 32 and 16, in encoder and decoder.
    assert _attention_sizes(_tiny("resnet-attn-ae", 64, 3).eval(), torch.randn(1, 3, 64, 64)) == [16, 16, 32, 32]
    # At 32 px only a 16×16 map exists.
    assert _attention_sizes(_tiny("resnet-attn-ae", 32, 1).eval(), torch.randn(1, 1, 32, 32)) == [16, 16]
    assert _attention_sizes(_tiny("resnet-ae", 64, 3).eval(), torch.randn(1, 3, 64, 64)) == []
    model = _tiny("resnet-attn-ae", 64, 3)
    assert all(isinstance(m, nn.GroupNorm) for m in model.modules() if "Norm" in type(m).__name__)
    with pytest.raises(UsageError, match="multiple of heads"):
        make_config("resnet-attn-ae", image_size=64, widths=(8, 8, 16, 16, 16), heads=3)


def test_self_attention_matches_torch_multihead_attention() -> None:
    torch.manual_seed(1)
    attn = SelfAttention(16, 4, "none").eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight.view(48, 16))
        ref.in_proj_bias.copy_(attn.qkv.bias)
        ref.out_proj.weight.copy_(attn.proj.weight.view(16, 16))
        ref.out_proj.bias.copy_(attn.proj.bias)
        x = torch.randn(2, 16, 4, 4)
        seq = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        expected = x + ref(seq, seq, seq, need_weights=False)[0].transpose(1, 2).reshape(2, 16, 4, 4)
        torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_resnet_seed_defaults_at_256() -> None:
    with torch.device("meta"):
        ae = create_model("resnet-ae", image_size=256)
        d3 = create_model("resnet-attn-ae", image_size=256)
    assert isinstance(ae, ResNetAE) and len(ae.down) == 5 and len(ae.up) == 5 and ae.latent_shape == (256,)
    assert any(isinstance(m, nn.BatchNorm2d) for m in ae.modules())
    assert all(m.negative_slope == 0.2 for m in ae.modules() if isinstance(m, nn.LeakyReLU))
    heads = {m.heads for m in d3.modules() if isinstance(m, SelfAttention)}
    assert heads == {8} and sum(isinstance(m, SelfAttention) for m in d3.modules()) == 4
    with pytest.raises(UsageError, match="multiples of 32"):
        make_config("resnet-ae", image_size=48)
    with pytest.raises(UsageError, match="not conditional"):
        make_config("resnet-ae", num_classes=2)


def test_resnet_vae_heads_give_gaussian_with_finite_kl() -> None:
    model = _tiny("resnet-vae", 32, 1)
    x = torch.randn(3, 1, 32, 32)
    post = model.encode(x)
    assert isinstance(post, DiagonalGaussian) and post.mean.shape == (3, 16)
    kl = post.kl()
    assert kl.shape == (3,) and torch.isfinite(kl).all() and (kl > 0).all()
    m, lv = post.mean, post.logvar
    torch.testing.assert_close(kl, 0.5 * (m**2 + lv.exp() - 1 - lv).sum(1))
    model.train()
    assert not torch.equal(model(x).z, model(x).z)  # training samples the posterior
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out.z, out.posterior.mean)  # eval uses the mean
    assert model.sample(4).shape == (4, 1, 32, 32)


def test_conditional_resnet_vae() -> None:
    model = _tiny("resnet-vae", 64, 3, num_classes=4).eval()
    assert model.is_conditional
    z = torch.randn(2, 16)
    with torch.no_grad():
        a = model.decode(z, torch.tensor([0, 0]))
        b = model.decode(z, torch.tensor([3, 3]))
        assert a.shape == (2, 3, 64, 64) and (a - b).abs().max() > 1e-4  # the class changes the image
        assert model.sample(3, labels=torch.tensor([1, 2, 3])).shape == (3, 3, 64, 64)
        out = model(torch.randn(2, 3, 64, 64), torch.tensor([1, 2]))
    assert torch.isfinite(out.recon).all()
    with pytest.raises(UsageError, match="class labels"):
        model.decode(z)
