"""`aecli weights` and the offline weights contract: find files, check them, never download implicitly."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import torch

# lpips builds its trunk with torchvision's deprecated `pretrained=` argument.
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
import torchvision
from typer.testing import CliRunner

from aecli import pretrained, weights
from aecli.cli import app
from aecli.errors import WeightsMissingError


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    home = tmp_path / "torch-home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A torchvision AlexNet state dict (random weights: the real file cannot be downloaded here)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tv") / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def test_weights_dir_follows_torch_home(empty_home, tmp_path):
    assert weights.weights_dir() == empty_home / "hub" / "checkpoints"
    assert weights.weights_dir() == weights.Path(torch.hub.get_dir()) / "checkpoints"
    assert weights.weights_dir(str(tmp_path)) == tmp_path
    assert weights.export_line() == f"export TORCH_HOME={empty_home}"


def test_require_weights_lists_paths_and_remedy(empty_home):
    weights.require_weights([])  # nothing pretrained needed: no error
    with pytest.raises(WeightsMissingError) as err:
        weights.require_weights(["lpips", "inception"], lpips_net="vgg")
    with pytest.raises(ValueError, match="unknown pretrained group"):  # metric names are the metrics layer's
        weights.require_weights(["fid"])
    msg = str(err.value)
    ckpts = empty_home / "hub" / "checkpoints"
    assert str(ckpts / "vgg16-397923af.pth") in msg
    assert str(ckpts / "weights-inception-2015-12-05-6726825d.pth") in msg
    assert "aecli weights download --metrics fid,lpips --lpips-net vgg" in msg
    assert f"export TORCH_HOME={empty_home}" in msg
    with pytest.raises(WeightsMissingError, match="custom.pth"):
        weights.require_weights(["inception"], inception_weights=str(empty_home / "custom.pth"))


def test_require_weights_accepts_present_files(empty_home, alexnet_file):
    ckpts = empty_home / "hub" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "alexnet-owt-7be5be79.pth").write_bytes(b"x")  # existence is all the fast check looks at
    weights.require_weights(["lpips"])
    weights.require_weights(["lpips"], lpips_weights=str(alexnet_file))
    (ckpts / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    with pytest.raises(WeightsMissingError, match="is empty"):
        weights.require_weights(["lpips"])


def test_require_weights_is_fast_and_imports_no_torch(tmp_path):
    code = ("import sys, time; t = time.time(); from aecli.weights import require_weights\n"
            "try:\n    require_weights(['lpips', 'inception'])\nexcept Exception as e:\n    print(type(e).__name__)\n"
            "print('torch' in sys.modules, time.time() - t)")
    env = {**os.environ, "TORCH_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    name, line = out.stdout.split("\n")[:2]
    loaded, seconds = line.split()
    assert name == "WeightsMissingError" and loaded == "False" and float(seconds) < 0.5


def test_check_files_hash_and_strict_load(empty_home, alexnet_file, monkeypatch):
    ckpts = empty_home / "hub" / "checkpoints"
    ckpts.mkdir(parents=True)
    target = ckpts / "alexnet-owt-7be5be79.pth"
    target.write_bytes(alexnet_file.read_bytes())
    status = {s.need.key: s for s in pretrained.check_files(["lpips"])}
    assert not status["alex"].ok and "does not start with 7be5be79" in status["alex"].detail
    assert status["lpips-linear"].ok and status["lpips-linear"].detail == "strict load ok"
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    entry = weights.WEIGHT_FILES["alex"]
    monkeypatch.setitem(weights.WEIGHT_FILES, "alex", (entry[0], digest[:8], entry[2], entry[3]))
    assert all(s.ok for s in pretrained.check_files(["lpips"]))
    # A custom backbone has no published hash: it is strictly loaded instead.
    custom = pretrained.check_files(["lpips"], lpips_weights=str(alexnet_file))
    assert custom[0].ok and custom[0].detail == "strict load ok"


def test_strict_load_refuses_wrong_or_unsafe_files(tmp_path, alexnet_file):
    state = torch.load(alexnet_file, weights_only=True)
    state.pop("features.0.bias")
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(WeightsMissingError, match="missing features.0.bias"):
        pretrained.build_lpips("alex", weights_file=str(partial))
    with pytest.raises(WeightsMissingError, match="does not match"):
        pretrained.backbone_features("vgg", alexnet_file)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"w": torch.zeros(1), "obj": WeightsMissingError("x")}, unsafe)  # a pickled object
    with pytest.raises(WeightsMissingError, match="not a readable PyTorch state dict"):
        pretrained.build_lpips("alex", weights_file=str(unsafe))


def test_build_lpips_from_backbone_file_equals_lpips_with_that_trunk(alexnet_file):
    import lpips

    ours = pretrained.build_lpips("alex", weights_file=str(alexnet_file))
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    tv = torchvision.models.alexnet()
    tv.load_state_dict(torch.load(alexnet_file, weights_only=True))
    for i, layer in enumerate(tv.features):  # lpips slices keep torchvision's layer indices
        for slice_ in (reference.net.slice1, reference.net.slice2, reference.net.slice3, reference.net.slice4,
                       reference.net.slice5):
            if str(i) in slice_._modules:
                slice_._modules[str(i)].load_state_dict(layer.state_dict())
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(ours(a, b), reference(a, b), atol=1e-6)
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())


def test_build_lpips_missing_file_names_remedy(empty_home):
    with pytest.raises(WeightsMissingError, match="aecli weights download --metrics lpips"):
        pretrained.build_lpips("alex")


def test_download_verifies_hash_via_file_url(empty_home, alexnet_file, monkeypatch):
    digest = hashlib.sha256(alexnet_file.read_bytes()).hexdigest()
    name, _, _, purpose = weights.WEIGHT_FILES["alex"]
    url = alexnet_file.as_uri()  # file:// — urllib serves it like a download
    monkeypatch.setitem(weights.WEIGHT_FILES, "alex", (name, "deadbeef", url, purpose))
    with pytest.raises(WeightsMissingError, match="corrupted"):
        weights.download(["lpips"], "alex")
    target = empty_home / "hub" / "checkpoints" / name
    assert not target.exists()  # a bad download never lands under the real name
    monkeypatch.setitem(weights.WEIGHT_FILES, "alex", (name, digest[:8], url, purpose))
    assert weights.download(["lpips"], "alex") == [target]
    assert target.read_bytes() == alexnet_file.read_bytes()
    weights.require_weights(["lpips"])


def test_cli_weights_check_reports_and_fails(empty_home, alexnet_file):
    runner = CliRunner()
    result = runner.invoke(app, ["weights", "check", "--metrics", "lpips,fid"])
    assert result.exit_code == 2
    out = result.output
    assert "weights-inception-2015-12-05-6726825d.pth" in out and "alexnet-owt-7be5be79.pth" in out
    assert f"export TORCH_HOME={empty_home}" in out
    assert "aecli weights download" in out
    ok = runner.invoke(app, ["weights", "check", "--metrics", "lpips", "--lpips-weights", str(alexnet_file)])
    assert ok.exit_code == 0, ok.output
    assert "strict load ok" in ok.output


def test_cli_weights_download_prints_export_line(empty_home, alexnet_file, monkeypatch):
    digest = hashlib.sha256(alexnet_file.read_bytes()).hexdigest()
    name, _, _, purpose = weights.WEIGHT_FILES["alex"]
    monkeypatch.setitem(weights.WEIGHT_FILES, "alex", (name, digest[:8], alexnet_file.as_uri(), purpose))
    result = CliRunner().invoke(app, ["weights", "download", "--metrics", "lpips"])
    assert result.exit_code == 0, result.output
    assert f"export TORCH_HOME={empty_home}" in result.output


def test_missing_weights_cli_fails_fast_without_network(tmp_path):
    """Empty TORCH_HOME and a dead proxy: a clear error before torch is even imported (so in well under a
    second), never a download attempt."""
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "aecli", "evaluate",
                          str(tmp_path / "model.safetensors"), "--metrics", "psnr,lpips,fid"],
                         capture_output=True, text=True, env=env, timeout=60)
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "aecli.weights" in imported and "torch" not in imported
    out.stderr = "\n".join(line for line in out.stderr.splitlines() if not line.startswith("import time:"))
    assert out.returncode == 2
    assert "pretrained weights missing" in out.stderr
    assert "weights-inception-2015-12-05-6726825d.pth" in out.stderr
    assert "aecli weights download" in out.stderr and "Traceback" not in out.stderr
