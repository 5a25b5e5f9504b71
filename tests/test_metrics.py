"""Metric functions against independent references: scikit-image, lpips and torch-fidelity themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save_random_inception

# lpips builds its trunk with torchvision's deprecated `pretrained=` argument.
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aecli.images import to_uint8
from aecli.metrics import fidelity
from aecli.metrics import reconstruction as rec
from aecli.metrics.latent_stats import LatentStats
from aecli.metrics.perceptual import lpips_distance, lpips_resize_note
from aecli.pretrained import build_lpips


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    return str(save_random_inception(tmp_path_factory.mktemp("inception") / "kaiming-inception.pth"))


def _images(seed: int, n: int, c: int, h: int, w: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w or h, generator=g, dtype=torch.float64).float()


def _noisy(x: torch.Tensor, seed: int, scale: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + scale * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_l1_mse_match_references_per_image(channels):
    ref = _images(0, 4, channels, 20, 24)
    pred = _noisy(ref, 1, scale=0.05 * (1 + torch.arange(4.0)).view(4, 1, 1, 1))
    ours = rec.psnr(pred, ref)
    for i in range(4):
        expected = peak_signal_noise_ratio(ref[i].numpy().astype(np.float64), pred[i].numpy().astype(np.float64),
                                           data_range=1.0)
        assert abs(float(ours[i]) - expected) < 1e-4
        diff = pred[i].double() - ref[i].double()
        assert abs(float(rec.mse(pred, ref)[i]) - float(diff.pow(2).mean())) < 1e-7
        assert abs(float(rec.l1(pred, ref)[i]) - float(diff.abs().mean())) < 1e-7
    assert len(set(ours.tolist())) == 4  # per image, not the PSNR of a batch mean
    assert float(rec.psnr(ref, ref)[0]) == pytest.approx(100.0)  # perfect → capped, finite


@pytest.mark.parametrize("channels,size", [(1, (32, 32)), (3, (24, 40))])
def test_ssim_matches_skimage_gaussian(channels, size):
    ref = _images(2, 3, channels, *size)
    pred = _noisy(ref, 3, 0.15)
    ours = rec.ssim(pred, ref, data_range=1.0)
    for i in range(3):
        a, b = ref[i].numpy().astype(np.float64), pred[i].numpy().astype(np.float64)
        expected = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1.0, channel_axis=0)
        assert abs(float(ours[i]) - expected) < 1e-4
    # pytorch-msssim's own default data_range=255 gives a different (wrong for [0,1]) number.
    from pytorch_msssim import ssim as raw

    assert abs(float(raw(pred, ref, size_average=False)[0]) - float(ours[0])) > 1e-3


def test_ssim_and_ms_ssim_availability():
    assert rec.ssim_unavailable(16, 16) is None
    assert "11 px" in rec.ssim_unavailable(8, 8)
    assert "160 px" in rec.ms_ssim_unavailable(64, 200)
    assert rec.ms_ssim_unavailable(161, 170) is None


@pytest.fixture(scope="module")
def random_lpips():
    """Our LPIPS (real linear layers, random trunk) and the lpips package's own, with the same trunk."""
    import lpips

    torch.manual_seed(0)
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    ours = build_lpips("alex", random_backbone=True)
    ours.net.load_state_dict(reference.net.state_dict())
    assert not any(p.requires_grad for p in ours.parameters()) and not ours.training
    return ours, reference


def test_lpips_matches_direct_call(random_lpips):
    ours, reference = random_lpips
    a, b = _images(4, 3, 3, 32), _images(5, 3, 3, 32)
    got = lpips_distance(ours, a, b, "alex")
    expected = reference(a * 2 - 1, b * 2 - 1).flatten()
    assert got.shape == (3,)
    assert torch.allclose(got, expected, atol=1e-6)
    assert float(got.min()) > 0


def test_lpips_gray_small_images_are_upsampled_and_said_so(random_lpips):
    ours, reference = random_lpips
    a, b = _images(6, 2, 1, 16), _images(7, 2, 1, 16)
    got = lpips_distance(ours, a, b, "alex")
    up = lambda x: torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear",  # noqa: E731
                                                   align_corners=False).expand(-1, 3, -1, -1)
    expected = reference(up(a) * 2 - 1, up(b) * 2 - 1).flatten()
    assert torch.allclose(got, expected, atol=1e-6)
    assert "32 px" in lpips_resize_note(16, 16, "alex")
    assert lpips_resize_note(64, 64, "alex") is None


def _save_pngs(folder, images_u8):
    folder.mkdir()
    for i, im in enumerate(images_u8):
        arr = im.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(folder / f"{i:03d}.png")


def test_fid_kid_is_match_torch_fidelity_on_folders(tmp_path, inception_file, monkeypatch):
    import torch_fidelity

    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")  # its torch.load passes weights_only=False

    n = 6
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(n, 1, 16, 16, generator=g) * 255).to(torch.uint8)
    b = (torch.rand(n, 1, 16, 16, generator=g) * 160 + 40).to(torch.uint8)
    _save_pngs(tmp_path / "a", a)
    _save_pngs(tmp_path / "b", b)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # its 2048² eigvals: threads only contend on 2 cores
        expected = torch_fidelity.calculate_metrics(
            input1=str(tmp_path / "a"), input2=str(tmp_path / "b"), cuda=False, fid=True, kid=True, isc=True,
            kid_subset_size=n, isc_splits=n, feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=inception_file, cache=False, verbose=False, save_cpu_ram=True)

    model = fidelity.load_inception(inception_file, "cpu")
    fa, fb = fidelity.inception_features(model, a), fidelity.inception_features(model, b)
    got_fid = fidelity.fid(fa["2048"], fb["2048"])
    kid_mean, kid_std, subset = fidelity.kid(fa["2048"], fb["2048"])
    is_mean, is_std = fidelity.inception_score(fa["logits_unbiased"])
    assert got_fid > 1.0  # a live random Inception, not the all-zero features of default init
    assert got_fid == pytest.approx(expected["frechet_inception_distance"], abs=1e-3)
    assert kid_mean == pytest.approx(expected["kernel_inception_distance_mean"], abs=1e-3)
    assert kid_std == pytest.approx(expected["kernel_inception_distance_std"], abs=1e-3)
    assert subset == n
    assert is_mean == pytest.approx(expected["inception_score_mean"], abs=1e-3)
    assert abs(fidelity.fid(fa["2048"], fa["2048"])) < 1e-3


def test_fid_low_rank_route_equals_torch_fidelity_formula():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = torch.Generator().manual_seed(1)
    for n1, n2, d in [(5, 9, 32), (30, 30, 64)]:
        a, b = torch.randn(n1, d, generator=g) * 2 + 1, torch.randn(n2, d, generator=g).pow(2)
        expected = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b),
                                            False)["frechet_inception_distance"]
        assert fidelity.fid(a, b) == pytest.approx(expected, rel=1e-6, abs=1e-4)


def test_to_uint8_rounds():
    x = torch.tensor([0.0, 0.5 / 255, 1.6 / 255, 1.2, -0.3]).view(1, 1, 1, 5)
    assert to_uint8(x).flatten().tolist() == [0, 0, 2, 255, 0]  # round half to even at .5


def test_latent_stats_match_direct_computation():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 2, 3, generator=g) * torch.tensor([0.01, 0.05, 1.0, 2.0, 0.001, 0.5]).view(1, 2, 3)
    stats = LatentStats()
    for chunk in z.split(16):
        stats.update(chunk)
    flat = z.flatten(1).double()
    var = flat.var(0)
    out = stats.summary(threshold=0.01)
    assert out["latent_dims"] == 6
    assert out["active_dims"] == int((var > 0.01).sum()) == 3
    assert out["total_variance"] == pytest.approx(float(var.sum()), rel=1e-9)
    assert out["mean_abs_activation"] == pytest.approx(float(flat.abs().mean()), rel=1e-9)


def test_reference_cache_roundtrip_and_identity(tmp_path):
    feats = {"2048": torch.randn(4, 2048), "logits_unbiased": torch.randn(4, 1008)}
    ident = {"data": "abc", "n": 4, "inception_sha256": "00"}
    cache = fidelity.ReferenceCache(tmp_path)
    assert cache.get(ident) is None
    cache.put(ident, feats)
    fresh = fidelity.ReferenceCache(tmp_path)
    got = fresh.get(ident)
    assert got is not None and torch.equal(got["2048"], feats["2048"]) and fresh.hits == 1
    assert fresh.get({**ident, "inception_sha256": "11"}) is None  # other weights: no reuse


def test_lpips_loss_and_metric_prepare_inputs_by_one_rule(random_lpips):
    """Training's LPIPS loss and evaluate's lpips see the same tensors (aecli.pretrained.lpips_input), and
    the loss's gradients flow through the upsampling of small images."""
    from aecli.losses import LPIPSLoss

    ours, _ = random_lpips
    a, b = _images(8, 2, 1, 20), _images(9, 2, 1, 20)  # gray, below alex's 32 px
    metric = lpips_distance(ours, a, b, "alex")
    assert torch.allclose(LPIPSLoss(ours, (0.0, 1.0))(a, b), metric, atol=1e-6)
    assert torch.allclose(LPIPSLoss(ours, (-1.0, 1.0))(a * 2 - 1, b * 2 - 1), metric, atol=1e-6)
    x = a.clone().requires_grad_(True)
    LPIPSLoss(ours, (0.0, 1.0))(x, b).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
