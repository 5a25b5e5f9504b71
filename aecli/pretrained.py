"""The pretrained networks metrics and losses run: LPIPS and Inception-v3, built only from local files.

Below aecli.metrics and aecli.losses (both import it; it imports neither). Which files exist, where they
live and how to fetch them is aecli.weights (torch-free, for the CLI's fast checks); this module loads
them strictly (``torch.load(weights_only=True)``, exact keys and shapes) and says how to get a missing
file. It also holds the one LPIPS input rule (``lpips_input``) that the loss and the metric share.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import torch
import torch.nn.functional as F

from aecli.errors import WeightsMissingError
from aecli.hashing import sha256_file
from aecli.weights import Needed, file_problem, check_net, lpips_linear_path, needed_files, remedy, weight_file

if TYPE_CHECKING:
    import lpips

INCEPTION_FEATURES = ("2048", "logits_unbiased")  # pool3 features (FID, KID) and logits (IS)
CLEAN_FID_SIZE = 299
# torchvision constructor per LPIPS backbone, used to check a state dict's keys and shapes.
_TV_ARCH = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
# Smallest square input each LPIPS trunk accepts (measured: alex fails below 31, squeeze below 17).
LPIPS_MIN_SIZE = {"alex": 32, "vgg": 16, "squeeze": 24}


# -- LPIPS input ---------------------------------------------------------------------------------------
def lpips_input(x: torch.Tensor, net: str, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """The tensor an LPIPS ``net`` sees for images in ``value_range``: the one rule for the training loss
    (aecli.losses.perceptual) and the evaluation metric (aecli.metrics).

    Values are mapped to [-1, 1] (lpips' convention) and gray images repeated to RGB. Images whose
    shorter side is below the trunk's minimum (``LPIPS_MIN_SIZE``: alex 32, vgg 16, squeeze 24 px) are
    upsampled bilinearly so that side reaches it, keeping the aspect ratio; larger images are used as
    they are. Differentiable: the loss's gradients flow through it.
    """
    need = LPIPS_MIN_SIZE[net]
    h, w = x.shape[-2:]
    if min(h, w) < need:
        scale = need / min(h, w)
        size = (max(need, round(h * scale)), max(need, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    lo, hi = float(value_range[0]), float(value_range[1])
    return (x - lo) * (2.0 / (hi - lo)) - 1.0


def lpips_resize_note(height: int, width: int, net: str) -> str | None:
    """Why (and how) ``lpips_input`` resizes images of this size for ``net``; None when it does not."""
    need = LPIPS_MIN_SIZE[net]
    if min(height, width) >= need:
        return None
    return (f"images upsampled (bilinear) from {height}x{width} to at least {need} px: the {net} trunk "
            "cannot take smaller inputs")


def lpips_net_name(model: Any) -> str:
    """The trunk (alex, vgg, squeeze) of a built ``lpips.LPIPS``."""
    name = getattr(model, "pnet_type", "alex")
    return "vgg" if name == "vgg16" else name


# -- strict loading ------------------------------------------------------------------------------------
def _torch_load(path: Path, what: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsMissingError(f"{what} {path} does not exist") from None
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise WeightsMissingError(f"{what} {path} is not a readable PyTorch state dict ({str(exc)[:120]}); "
                                  "re-download it with `aecli weights download`") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMissingError(f"{what} {path} is not a state dict of tensors")
    return state


def strict_match(state: dict[str, Any], expected: dict[str, Any], path: Path, what: str) -> None:
    """Raise unless ``state`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    bad = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or extra or bad:
        detail = "; ".join(p for p in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(extra[:3])}" if extra else "",
            f"wrong shape {', '.join(bad[:3])}" if bad else "") if p)
        raise WeightsMissingError(f"{what} {path} does not match the expected network ({detail}); "
                                  "give the matching file")


def backbone_features(net: str, path: Path) -> dict[str, Any]:
    """Strictly check a torchvision backbone state dict; return its ``features.*`` part, prefix removed."""
    import torchvision

    state = _torch_load(path, f"LPIPS {net} backbone")
    with torch.device("meta"):  # key/shape reference without allocating or initialising 138M params
        expected = getattr(torchvision.models, _TV_ARCH[net])().state_dict()
    strict_match(state, expected, path, f"LPIPS {net} backbone")
    return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}


def lpips_linear_state(net: str, path: Path) -> dict[str, Any]:
    state = _torch_load(path, "LPIPS linear layers")
    n_layers = 7 if net == "squeeze" else 5
    expected = {f"lin{i}.model.1.weight" for i in range(n_layers)}
    if set(state) != expected:
        raise WeightsMissingError(f"LPIPS linear layers {path} do not match --lpips-net {net}; "
                                  "reinstall the lpips package")
    return state


def build_lpips(net: str = "alex", *, weights_dir: str | None = None, weights_file: str | None = None,
                random_backbone: bool = False, device: Any = "cpu") -> "lpips.LPIPS":
    """LPIPS (v0.1) in eval mode with frozen parameters, loaded only from local files.

    The lpips package would fetch the backbone through torchvision (a download) and unpickle its
    linear layers itself; here both are loaded with ``torch.load(weights_only=True)`` and checked
    strictly. ``weights_file``: a torchvision state dict for the backbone instead of the hub file.
    ``random_backbone``: keep the random trunk (tests only; the linear layers are still the real ones).
    """
    import lpips

    check_net(net)
    with warnings.catch_warnings():  # torchvision deprecation noise about `pretrained=`
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    lin = lpips_linear_state(net, lpips_linear_path(net))
    model.load_state_dict(lin, strict=False)  # strict=False: the backbone and scaling buffers are not in it
    if not random_backbone:
        path = weight_file(net, weights_dir, weights_file)
        if not path.exists():
            raise WeightsMissingError(f"LPIPS backbone {path} does not exist. Fix: "
                                      + remedy(["lpips"], net, weights_dir))
        features = backbone_features(net, path)
        # LPIPS splits torchvision's `features` Sequential into slices but keeps the layer indices.
        trunk = {k: features[k.split(".", 1)[1]] for k in model.net.state_dict()}
        model.net.load_state_dict(trunk, strict=True)
    model.requires_grad_(False)
    return model.eval().to(device)


# -- Inception -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """torch-fidelity calls ``torch.load(path, weights_only=False)``; this env switch makes torch
    load it with weights_only=True anyway, so a hostile weights file cannot run pickled code."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def load_inception(path: str | os.PathLike[str], device: Any) -> Any:
    """torch-fidelity's FeatureExtractorInceptionV3 from a local file, strictly loaded, in eval mode."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    p = Path(path)
    if not p.is_file():
        raise WeightsMissingError(f"Inception weights {p} do not exist; run `aecli weights download "
                                  "--metrics fid` on a machine with internet or pass --inception-weights FILE")
    try:
        with _weights_only_loads():
            model = FeatureExtractorInceptionV3("inception-v3-compat", list(INCEPTION_FEATURES),
                                                feature_extractor_weights_path=str(p))
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise WeightsMissingError(f"Inception weights {p} cannot be loaded strictly ({str(exc)[:160]}); "
                                  "give torch-fidelity's weights-inception-2015-12-05 file") from None
    return model.to(device)


def load_clean_fid_inception(path: str | os.PathLike[str], device: Any, resize_inside: bool) -> Any:
    """clean-fid's InceptionV3W from an explicit local file, never downloading.

    InceptionV3W takes a folder and loads ``inception-2015-12-05.pt`` from it (downloading it when
    asked); a file of another name is linked into a temporary folder under that name. The file is a
    TorchScript archive: torch.jit.load runs no Python pickle code, only the archive's TorchScript graph.
    """
    from cleanfid.inception_torchscript import InceptionV3W

    p = Path(path)
    if not p.is_file():
        raise WeightsMissingError(f"clean-fid Inception weights {p} do not exist; run `aecli weights download "
                                  "--metrics fid --fid-backend clean-fid` on a machine with internet or pass "
                                  "--inception-weights FILE")
    try:
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # "deprecated" notices
        if p.name == "inception-2015-12-05.pt":
            model = InceptionV3W(str(p.parent), download=False, resize_inside=resize_inside)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                os.symlink(p.resolve(), Path(tmp) / "inception-2015-12-05.pt")
                model = InceptionV3W(tmp, download=False, resize_inside=resize_inside)
        model = model.eval().to(device)
        with torch.no_grad():  # the interface clean-fid relies on: [B, 2048] features of a 299² input
            out = model(torch.zeros(1, 3, CLEAN_FID_SIZE, CLEAN_FID_SIZE, device=device))
        if tuple(out.shape) != (1, 2048):
            raise ValueError(f"features of shape {tuple(out.shape)}")
    except (RuntimeError, OSError, ValueError, AttributeError) as exc:
        raise WeightsMissingError(f"clean-fid Inception weights {p} cannot be loaded ({str(exc).splitlines()[0][:160]}"
                                  "); give clean-fid's inception-2015-12-05.pt (TorchScript)") from None
    return model


@dataclass
class FileStatus:
    need: Needed
    ok: bool
    detail: str  # "sha256 ok", "strict load ok", or what is wrong


def check_files(needs: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
                inception_weights: str | None = None, lpips_weights: str | None = None,
                fid_backend: str = "torch-fidelity") -> list[FileStatus]:
    """Per file: present, readable, and its hash (or, without a published hash, a strict load) OK."""
    out = []
    for need in needed_files(needs, lpips_net, weights_dir, inception_weights, lpips_weights, fid_backend):
        problem = file_problem(need.path)
        if problem:
            out.append(FileStatus(need, False, problem))
        elif need.sha256_prefix:
            digest = sha256_file(need.path)
            ok = digest.startswith(need.sha256_prefix)
            out.append(FileStatus(need, ok, "sha256 ok" if ok else
                                  f"sha256 {digest[:12]}… does not start with {need.sha256_prefix} (corrupt or "
                                  "a different file)"))
        else:
            try:
                _strict_check(need, lpips_net)
                out.append(FileStatus(need, True, "strict load ok"))
            except WeightsMissingError as exc:
                out.append(FileStatus(need, False, str(exc)))
    return out


def _strict_check(need: Needed, lpips_net: str) -> None:
    if need.kind == "linear":
        lpips_linear_state(lpips_net, need.path)
    elif need.kind == "inception":
        load_inception(need.path, "cpu")
    elif need.kind == "inception-clean-fid":
        load_clean_fid_inception(need.path, "cpu", resize_inside=True)
    else:
        backbone_features(lpips_net, need.path)
