"""Model families: one contract loop over every registered family, plus the seeds' exact architectures.

The loop reads ``list_models()``, so a family registered later is covered without editing this file.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_kwargs, tiny_model, tiny_size
from torch import nn

from aecli.errors import UsageError
from aecli.models import create_model, get_family, list_models, make_config

FAMILIES = list_models()
# (channels, size): a 1-channel MNIST-like size (28 when the family takes it, else 32) and 3×64×64.
SHAPES = [(1, None), (3, 64)]


def _images(model, n: int = 2, seed: int = 0) -> torch.Tensor:
    cfg = model.config
    lo, hi = model.value_range
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, cfg.channels, cfg.image_size, cfg.image_size, generator=g)


def _in_range(model, y: torch.Tensor) -> bool:
    if model.config.output_activation == "none":  # unbounded decoders (ldm-kl, like diffusers): finite only
        return bool(torch.isfinite(y).all())
    lo, hi = model.value_range
    return bool(torch.isfinite(y).all() and y.min() >= lo and y.max() <= hi)


def _assert_all_grads(model) -> None:
    # an EMA codebook (vq families, ema_codebook=true) is updated by averages, not gradients
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)


# -- the contract, for every family ----------------------------------------------------------------
@pytest.mark.parametrize("channels,size", SHAPES, ids=["1ch-small", "3ch-64"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_contract(family: str, channels: int, size: int | None) -> None:
    torch.manual_seed(0)
    size = size or tiny_size(family)
    model = tiny_model(family, size, channels)
    cls = get_family(family)
    assert model.family == family and cls.description and cls.seed
    x = _images(model)
    shape = (2, channels, size, size)

    if model.has_encoder:
        model.train()
        out = model(x)
        assert out.recon.shape == shape
        assert _in_range(model, out.recon)
        assert tuple(out.posterior.mode().shape[1:]) == model.latent_shape
        assert tuple(out.z.shape[1:]) == model.latent_shape
        loss = (out.recon - x).pow(2).mean() + out.posterior.kl().mean()
        if out.log_det is not None:
            assert out.log_det.shape == (2,) and torch.isfinite(out.log_det).all()
            loss = loss - out.log_det.mean()
        if out.quant is not None:  # vq families: codebook + commitment terms (as the objective adds)
            loss = loss + out.quant.loss
        assert torch.isfinite(loss)
        loss.backward()
        _assert_all_grads(model)

        model.eval()
        with torch.no_grad():
            a, b = model(x).recon, model(x).recon
            assert torch.equal(a, b), "eval-mode reconstruction must be deterministic (posterior mean)"
            assert tuple(model.encode(x).mode().shape[1:]) == model.latent_shape
            if model.decodes_latent:
                assert model.decode(model.encode(x).mode()).shape == shape
    else:
        with pytest.raises(UsageError, match="no encoder"):
            model.encode(x)

    if hasattr(model, "discriminate"):  # GAN: both players train from this graph
        model.train()
        model.zero_grad()
        logits = model.discriminate(x)
        assert logits.shape == (2,)
        (model.discriminate(model.sample(2)).mean() - logits.mean()).backward()
        _assert_all_grads(model)

    model.eval()
    if model.has_prior:
        with torch.no_grad():
            s1 = model.sample(3, generator=torch.Generator().manual_seed(1))
            s2 = model.sample(3, generator=torch.Generator().manual_seed(1))
            s3 = model.sample(3, generator=torch.Generator().manual_seed(2))
        assert s1.shape == (3, channels, size, size)
        assert _in_range(model, s1)
        assert torch.equal(s1, s2)
        assert not torch.equal(s1, s3)
    else:
        with pytest.raises(UsageError, match="no prior"):
            model.sample(2)


@pytest.mark.parametrize("family", FAMILIES)
def test_conditional_or_refused(family: str) -> None:
    kwargs = {**tiny_kwargs(family, tiny_size(family), 1), "num_classes": 3}
    try:
        make_config(family, **kwargs)
    except UsageError as exc:
        assert "num_classes" in str(exc)
        return
    torch.manual_seed(0)
    model = create_model(family, **kwargs)
    assert model.is_conditional
    x = _images(model, 3)
    labels = torch.tensor([0, 1, 2])
    model.train()
    out = model(x, labels)
    assert out.recon.shape == x.shape and _in_range(model, out.recon)
    (out.recon.pow(2).mean() + out.posterior.kl().mean()).backward()
    _assert_all_grads(model)
    assert model.class_embed.weight.grad.abs().sum() > 0
    with pytest.raises(UsageError, match="class labels"):
        model(x)

    model.eval()
    with torch.no_grad():
        z = model.encode(x).mode()[:1].expand(3, *model.latent_shape) if model.has_encoder else None
        if z is not None and model.decodes_latent:
            per_class = model.decode(z, labels)  # same latent, three classes → three images
            assert not torch.equal(per_class[0], per_class[1])
        if model.has_prior:
            g = torch.Generator().manual_seed(0)
            s = model.sample(3, labels=labels, generator=g)
            assert s.shape == x.shape and _in_range(model, s)


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_options_are_named(family: str) -> None:
    kwargs = tiny_kwargs(family, tiny_size(family), 1)
    config = make_config(family, **kwargs)
    valid = config.valid_sizes()
    bad = next(s for s in range(9, config.MAX_IMAGE_SIZE + 2) if s not in valid)
    with pytest.raises(UsageError) as info:
        make_config(family, **{**kwargs, "image_size": bad})
    msg = str(info.value)
    assert f"image size {bad}" in msg and f"multiples of {config.size_multiple()}" in msg
    assert str(valid[0]) in msg

    with pytest.raises(UsageError, match="no option frobnicate"):
        make_config(family, frobnicate=1)

    # A checkpoint stores the config as JSON (tuples come back as lists): it must rebuild identically.
    again = make_config(family, **json.loads(json.dumps(config.to_dict())))
    assert again == config


# -- conv trunk options ----------------------------------------------------------------------------
@pytest.mark.parametrize("family,size,opts,latent", [
    ("conv-ae", 32, {"arch": "plain", "latent": "spatial", "widths": (4, 8)}, (8, 8, 8)),
    ("conv-vae", 32, {"arch": "plain", "latent": "spatial", "widths": (4, 8), "latent_dim": 3}, (3, 8, 8)),
    ("conv-vae", 28, {"arch": "plain", "kernel_size": 3, "widths": (4, 8), "latent_dim": 5}, (5,)),
    ("conv-ae", 32, {"arch": "plain", "final_conv": True, "norm": "group", "activation": "mish", "widths": (4, 8, 8)},
     (32,)),
    # The residual default: a latent_dim-channel spatial code at the 4×4 bottom (patch 4, two stages at 32 px).
    ("conv-ae", 32, {"latent": "spatial", "widths": (4, 8), "latent_dim": 2}, (2, 4, 4)),
    ("conv-vae", 28, {"latent": "spatial", "latent_dim": 3}, (3, 7, 7)),
    ("conv-vae", 64, {"blocks": 2, "patch": 2, "widths": (4, 8, 8), "latent_dim": 6}, (6,)),
    ("conv-vae", 32, {"fc_hidden": 12, "activation": "leakyrelu", "norm": "none", "widths": (4,)}, (32,)),
    ("conv-ae", 32, {"latent_relu": True, "activation": "silu", "widths": (4, 8)}, (32,)),
])
def test_conv_variants(family: str, size: int, opts: dict, latent: tuple) -> None:
    model = create_model(family, image_size=size, channels=1, **opts).eval()
    x = _images(model)
    with torch.no_grad():
        out = model(x)
    assert out.recon.shape == x.shape and model.latent_shape == latent
    assert tuple(out.z.shape[1:]) == latent
    if opts.get("latent_relu"):
        assert out.z.min() >= 0


def test_conv_option_errors() -> None:
    for opts, fragment in [({"kernel_size": 5}, "kernel_size"), ({"norm": "layer"}, "norm"),
                           ({"widths": (8, 0)}, "widths"), ({"widths": (8.0,)}, "widths"),
                           ({"latent": "spatial", "fc_hidden": 8}, "fc_hidden"),
                           ({"num_classes": 2}, "num_classes")]:
        with pytest.raises(UsageError, match=fragment):
            make_config("conv-ae", **opts)
    for opts, fragment in [({"final_conv": True}, "arch='plain'"), ({"arch": "dense"}, "arch"),
                           ({"arch": "plain", "patch": 2}, "patch"), ({"patch": 3}, "patch"),
                           ({"blocks": 0}, "blocks")]:
        with pytest.raises(UsageError, match=fragment):
            make_config("conv-ae", **opts)


def test_default_conv_is_residual_and_sized_from_the_image() -> None:
    """No options: GroupNorm/SiLU residual stages from a 4×4-patch stem down to 4×4, widths 64, 64, 128, …;
    the code is exactly latent_dim numbers."""
    from aecli.models.resnet import ResBlock

    for size, widths in ((32, (64, 64)), (64, (64, 64, 128)), (256, (64, 64, 128, 256, 256))):
        with torch.device("meta"):
            model = create_model("conv-vae", image_size=size, channels=3, latent_dim=64)
        cfg = model.config
        assert (cfg.arch, cfg.norm, cfg.activation, cfg.stage_widths(), model.feat) == \
            ("residual", "group", "silu", widths, 4)
        blocks = [m for m in model.encoder if isinstance(m, ResBlock)]
        assert [b.body[2].out_channels for b in blocks] == list(widths)
        assert isinstance(model.encoder[0], nn.Conv2d) and model.encoder[0].stride == (4, 4)
        assert isinstance(model.decoder[-2], nn.PixelShuffle) and model.latent_shape == (64,)
        assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_default_conv_ae_fits_digits() -> None:
    # `aecli train conv-ae` with no options runs on 1×32×32 digits (and MNIST's 28 px must fit too).
    for size in (28, 32):
        model = create_model("conv-ae", image_size=size, channels=1)
        assert model(_images(model)).recon.shape[-1] == size
    assert sum(p.numel() for p in model.parameters()) < 500_000  # small: trains in about a minute on CPU


# -- seed 001: the 256² Mish/BatchNorm AE and VAE, layer by layer -----------------------------------
def _seed001(widths: tuple[int, ...], vae_latent: int | None) -> nn.Sequential:
    """Seed 001's encoder + decoder literally, with the widths as parameters (64…1024 in the seed)."""
    enc: list[nn.Module] = []
    for cin, cout in zip((3, *widths[:-1]), widths):
        enc += [nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.Mish(inplace=True)]
    if vae_latent:
        enc.append(nn.Conv2d(widths[-1], vae_latent * 2, kernel_size=3, stride=1, padding=1))
    dec: list[nn.Module] = []
    rev = widths[::-1]
    for cin, cout in zip((vae_latent or widths[-1], *rev[:-1]), rev):
        dec += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.Mish(inplace=True)]
    dec += [nn.Conv2d(widths[0], 3, kernel_size=3, stride=1, padding=1), nn.Tanh()]
    return nn.Sequential(nn.Sequential(*enc), nn.Sequential(*dec))


def _seed001_opts(widths: tuple[int, ...], vae: bool, latent: int) -> dict:
    return {"arch": "plain", "image_size": 256, "channels": 3, "widths": widths, "kernel_size": 4, "activation": "mish",
            "norm": "batch", "latent": "spatial", "init": "kaiming", "final_conv": True,
            "output_activation": "tanh", **({"latent_dim": latent} if vae else {})}


def _shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in [*module.parameters(), *module.buffers()]]


@pytest.mark.parametrize("family", ["conv-ae", "conv-vae"])
def test_seed001_full_size_layer_list(family: str) -> None:
    vae = family == "conv-vae"
    widths = (64, 128, 256, 512, 1024)
    with torch.device("meta"):  # ~60M parameters: compare structure without allocating them
        ref = _seed001(widths, 1024 if vae else None)
        ours = get_family(family)(make_config(family, **_seed001_opts(widths, vae, 1024)))
    assert _shapes(ours) == _shapes(ref)
    assert ours.latent_shape == (1024, 8, 8)


@pytest.mark.parametrize("family", ["conv-ae", "conv-vae"])
def test_seed001_same_function(family: str) -> None:
    vae = family == "conv-vae"
    widths = (4, 8, 8, 16, 16)  # the seed's structure at small widths, so the forward pass is cheap
    torch.manual_seed(0)
    ref = _seed001(widths, 6 if vae else None).eval()
    ours = create_model(family, **_seed001_opts(widths, vae, 6)).eval()
    with torch.no_grad():
        for dst, src in zip([*ours.parameters(), *ours.buffers()], [*ref.parameters(), *ref.buffers()]):
            dst.copy_(src)
        x = torch.rand(2, 3, 64, 64) * 2 - 1
        h = ref[0](x)
        z = h.chunk(2, dim=1)[0] if vae else h  # seed 001 VAE: mu, logvar = chunk(2, dim=1)
        assert torch.allclose(ours.encode(x).mode(), z, atol=1e-6)
        assert torch.allclose(ours(x).recon, ref[1](z), atol=1e-6)


def test_seed001_kaiming_init() -> None:
    torch.manual_seed(0)
    model = create_model("conv-ae", **_seed001_opts((64, 128), False, 0))
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    for m in convs:
        assert torch.count_nonzero(m.bias) == 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # kaiming_normal_(nonlinearity='linear'), fan_in mode: std = 1/sqrt(fan_in); PyTorch's default
    # init would give 1/sqrt(3·fan_in), so this separates the two clearly.
    big = [m for m in convs if m.weight.numel() > 100_000]
    assert big
    for m in big:
        fan_in = m.weight.shape[1] * m.weight[0, 0].numel()
        assert m.weight.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.02)


# -- seed 002: TinyImageNet conv AE (13,912,707 parameters) and the MNIST MLP -----------------------
def _seed002_tinyimagenet(latent: int = 512) -> nn.Module:
    """Seed 002 §2.2's architecture summary, built literally."""
    enc: list[nn.Module] = []
    for cin, cout in zip((3, 64, 128, 256), (64, 128, 256, 512)):
        enc += [nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
    enc += [nn.Flatten(), nn.Linear(512 * 4 * 4, latent), nn.ReLU()]
    dec: list[nn.Module] = [nn.Linear(latent, 512 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (512, 4, 4))]
    for cin, cout in zip((512, 256, 128), (256, 128, 64)):
        dec += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
    dec += [nn.ConvTranspose2d(64, 3, 4, 2, 1), nn.Sigmoid()]
    return nn.Sequential(nn.Sequential(*enc), nn.Sequential(*dec))


def test_seed002_tinyimagenet_conv_ae() -> None:
    torch.manual_seed(0)
    model = create_model("conv-ae", arch="plain", image_size=64, channels=3, widths=(64, 128, 256, 512), kernel_size=4,
                         latent="flat", latent_dim=512, latent_relu=True, activation="relu", norm="batch",
                         output_activation="sigmoid").eval()
    assert sum(p.numel() for p in model.parameters()) == 13_912_707  # printed in seed 002
    ref = _seed002_tinyimagenet().eval()
    assert _shapes(model) == _shapes(ref)
    with torch.no_grad():
        for dst, src in zip([*model.parameters(), *model.buffers()], [*ref.parameters(), *ref.buffers()]):
            dst.copy_(src)
        x = torch.rand(2, 3, 64, 64)
        assert torch.allclose(model(x).recon, ref(x), atol=1e-6)


class _Seed002MLP(nn.Module):
    """Seed 002 §1.2's AE, verbatim."""

    def __init__(self, input_dim: int, z_dim: int, h_dim: int) -> None:
        super().__init__()
        self.common = nn.Linear(input_dim, h_dim)
        self.encoded = nn.Linear(h_dim, z_dim)
        self.l1 = nn.Linear(z_dim, h_dim)
        self.decode = nn.Linear(h_dim, input_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.encoded(torch.relu(self.common(x)))
        return torch.sigmoid(self.decode(torch.relu(self.l1(mu)))), mu


def test_seed002_mlp() -> None:
    torch.manual_seed(0)
    model = create_model("mlp-ae", image_size=28, channels=1).eval()
    ref = _Seed002MLP(784, 20, 200)
    assert _shapes(model) == _shapes(ref)
    assert sum(p.numel() for p in model.parameters()) == 322_804
    with torch.no_grad():
        for dst, src in zip(model.parameters(), ref.parameters()):
            dst.copy_(src)
        x = torch.rand(4, 1, 28, 28)
        out, mu = ref(x.view(-1, 784))
        assert torch.allclose(model.encode(x).mode(), mu, atol=1e-6)
        assert torch.allclose(model(x).recon.view(-1, 784), out, atol=1e-6)
    deeper = create_model("mlp-ae", image_size=28, channels=1, hidden=[256, 64], latent_dim=8)
    widths = [m.out_features for m in deeper.modules() if isinstance(m, nn.Linear)]
    assert widths == [256, 64, 8, 64, 256, 784]


# -- seed 003: GAN and planar flows -----------------------------------------------------------------
def test_seed003_gan_layers() -> None:
    model = create_model("gan", image_size=28, channels=1)
    gen = nn.Sequential(nn.Linear(100, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
                        nn.Linear(512, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 784), nn.Tanh())
    disc = nn.Sequential(nn.Linear(784, 1024), nn.LeakyReLU(0.2), nn.Dropout(0.3),
                         nn.Linear(1024, 512), nn.LeakyReLU(0.2), nn.Dropout(0.3),
                         nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(256, 1))
    assert _shapes(model.generator) == _shapes(gen)
    assert _shapes(model.discriminator) == _shapes(disc)
    drops = [m.p for m in model.discriminator.modules() if isinstance(m, nn.Dropout)]
    slopes = [m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert drops == [0.3] * 3 and slopes == [0.2] * 6
    assert model.latent_shape == (100,) and model.has_prior and not model.has_encoder


def test_planar_flow_log_det_matches_jacobian() -> None:
    from aecli.models.flow import PlanarFlow

    torch.manual_seed(0)
    dim = 5
    flow = PlanarFlow(dim).double()
    with torch.no_grad():
        flow.w.copy_(torch.randn(dim, dtype=torch.float64))
        flow.u.copy_(-3 * flow.w / flow.w.norm() ** 2)  # wᵀu = −3: violates invertibility before û
        flow.b.fill_(0.3)
    u_hat = flow.u_hat()
    wu = (flow.w @ flow.u).item()
    assert (flow.w @ u_hat).item() == pytest.approx(-1 + math.log1p(math.exp(wu)))  # m(wᵀu)
    assert (flow.w @ u_hat).item() >= -1

    z = torch.randn(4, dim, dtype=torch.float64)
    fz, log_det = flow(z)
    assert log_det.shape == (4,)
    expected = z + torch.tanh(z @ flow.w + flow.b).unsqueeze(1) * u_hat
    assert torch.allclose(fz, expected)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v.unsqueeze(0))[0][0], z[i])
        assert log_det[i].item() == pytest.approx(torch.linalg.slogdet(jac).logabsdet.item(), abs=1e-9)


def test_flow_vae_composed_log_det() -> None:
    torch.manual_seed(0)
    model = create_model("flow-vae", image_size=16, channels=1, widths=(4,), latent_dim=6, flows=4).double()
    with torch.no_grad():
        for f in model.flows:  # move away from the near-identity init so the test has teeth
            f.u.normal_()
            f.w.normal_()
    z0 = torch.randn(3, 6, dtype=torch.float64)
    zk, log_det = model.transform_latent(z0)
    assert zk.shape == z0.shape and log_det.shape == (3,)
    assert not torch.allclose(zk, z0)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: model.transform_latent(v.unsqueeze(0))[0][0], z0[i])
        assert log_det[i].item() == pytest.approx(torch.linalg.slogdet(jac).logabsdet.item(), abs=1e-9)
    plain = create_model("flow-vae", image_size=16, channels=1, widths=(4,), latent_dim=6, flows=0)
    z, ld = plain.transform_latent(z0.float())
    assert torch.equal(z, z0.float()) and torch.count_nonzero(ld) == 0


# -- seed 004: LSTM AE and GRU VAE -------------------------------------------------------------------
def test_seed004_lstm_ae_layers() -> None:
    model = create_model("lstm-ae", image_size=28, channels=1)
    ref = [nn.LSTM(28, 128, 2, batch_first=True), nn.Linear(128, 128), nn.Linear(128, 128),
           nn.LSTM(128, 128, 2, batch_first=True), nn.Linear(128, 28)]
    assert _shapes(model) == [s for m in ref for s in _shapes(m)]
    assert model.latent_shape == (128,)
    # Rows are the time steps: the final hidden state has read the last row, so it changes the code.
    x = torch.rand(1, 1, 28, 28)
    y = x.clone()
    y[0, 0, -1] = 1 - y[0, 0, -1]
    assert not torch.allclose(model.encode(x).mode(), model.encode(y).mode())


def test_seed004_gru_vae_layers() -> None:
    model = create_model("gru-vae", image_size=28, channels=1)
    assert model.encoder.bidirectional and model.encoder.input_size == 28
    convs = [m for m in model.decoder if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == 2 and convs[-1].out_channels == 1
    lin = model.decoder[0]
    assert lin.out_features == 64 * 7 * 7  # Linear → C × s/4 × s/4
    assert model.config.output_activation == "sigmoid"


def test_seed002_glasses_vae_matches_the_notebook_layer_for_layer() -> None:
    """Seed 002 §3.2 written out from the notebook (without .cuda()); conv-vae with unnormed=(0, 2) and
    valid_last reproduces it: same layers, and with the notebook's weights copied in, the same mean
    latent and the same decoded images. (The notebook reads its second head as log σ, aecli as log σ²:
    the same Linear layer and output, a different reading.)"""
    import torch.nn.functional as F
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self, latent_dims=100):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.batch2 = nn.BatchNorm2d(16)
            self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=0)
            self.linear1 = nn.Linear(31 * 31 * 32, 1024)
            self.linear2 = nn.Linear(1024, latent_dims)
            self.linear3 = nn.Linear(1024, latent_dims)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.batch2(self.conv2(x)))
            x = F.relu(self.conv3(x))
            x = F.relu(self.linear1(torch.flatten(x, start_dim=1)))
            return self.linear2(x), torch.exp(self.linear3(x))

    class Decoder(nn.Module):
        def __init__(self, latent_dims=100):
            super().__init__()
            self.decoder_lin = nn.Sequential(nn.Linear(latent_dims, 1024), nn.ReLU(True),
                                             nn.Linear(1024, 31 * 31 * 32), nn.ReLU(True))
            self.unflatten = nn.Unflatten(dim=1, unflattened_size=(32, 31, 31))
            self.decoder_conv = nn.Sequential(
                nn.ConvTranspose2d(32, 16, 3, stride=2, output_padding=1), nn.BatchNorm2d(16), nn.ReLU(True),
                nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(8),
                nn.ReLU(True), nn.ConvTranspose2d(8, 3, 3, stride=2, padding=1, output_padding=1))

        def forward(self, x):
            return torch.sigmoid(self.decoder_conv(self.unflatten(self.decoder_lin(x))))

    torch.manual_seed(0)
    enc, dec = Encoder().eval(), Decoder().eval()
    ours = create_model("conv-vae", arch="plain", image_size=256, channels=3, widths=(8, 16, 32), kernel_size=3,
                        activation="relu", norm="batch", latent="flat", fc_hidden=1024, latent_dim=100,
                        output_activation="sigmoid", unnormed=(0, 2), valid_last=True).eval()
    n_ref = sum(p.numel() for p in (*enc.parameters(), *dec.parameters()))
    assert sum(p.numel() for p in ours.parameters()) == n_ref
    with torch.no_grad():
        convs = [m for m in ours.encoder if isinstance(m, nn.Conv2d)]
        for mine, theirs in zip(convs, (enc.conv1, enc.conv2, enc.conv3)):
            mine.load_state_dict(theirs.state_dict())
        [bn] = [m for m in ours.encoder if isinstance(m, nn.BatchNorm2d)]
        bn.load_state_dict(enc.batch2.state_dict())
        lin1, head = [m for m in ours.to_latent if isinstance(m, nn.Linear)]
        lin1.load_state_dict(enc.linear1.state_dict())
        head.weight.copy_(torch.cat([enc.linear2.weight, enc.linear3.weight]))
        head.bias.copy_(torch.cat([enc.linear2.bias, enc.linear3.bias]))
        fro = [m for m in ours.from_latent if isinstance(m, nn.Linear)]
        for mine, theirs in zip(fro, [m for m in dec.decoder_lin if isinstance(m, nn.Linear)]):
            mine.load_state_dict(theirs.state_dict())
        mine_dec = [m for m in ours.decoder if isinstance(m, (nn.ConvTranspose2d, nn.BatchNorm2d))]
        theirs_dec = [m for m in dec.decoder_conv if isinstance(m, (nn.ConvTranspose2d, nn.BatchNorm2d))]
        assert [type(m) for m in mine_dec] == [type(m) for m in theirs_dec]
        for mine, theirs in zip(mine_dec, theirs_dec):
            mine.load_state_dict(theirs.state_dict())
        x = torch.rand(2, 3, 256, 256)
        mu, std = enc(x)
        post = ours.encode(x)
        assert torch.allclose(post.mean, mu, atol=1e-5)
        assert torch.allclose(post.logvar, torch.log(std), atol=1e-5)  # the same head output, read as log σ²
        z = torch.randn(2, 100)
        assert torch.allclose(ours.decode(z), dec(z), atol=1e-6)
