"""Pretrained files the metrics need, where they live, and how to check/fetch them.

Compute nodes usually have no internet, and a download without a timeout hangs a job until its time
limit. So nothing here downloads implicitly: ``require_weights`` only looks at the disk (no torch
import, well under a second) and ``aecli weights download`` is an explicit step for a login node.
Files live where torch/torchvision/torch-fidelity look for them: ``$TORCH_HOME/hub/checkpoints``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from aecli.errors import UsageError, WeightsMissingError
from aecli.hashing import sha256_file

if TYPE_CHECKING:
    import lpips

LPIPS_NETS = ("alex", "vgg", "squeeze")
# Metrics that run images through torch-fidelity's Inception (rfid: reconstructions vs inputs).
INCEPTION_METRICS = frozenset({"fid", "rfid", "is", "kid"})
FID_BACKENDS = ("torch-fidelity", "clean-fid")  # aecli.metrics.fidelity implements them

# name -> (filename, sha256 prefix, url, what uses it). The prefixes are the torch.hub naming
# convention (<name>-<sha256[:8]>.pth); torch.hub.download_url_to_file checks them.
WEIGHT_FILES: dict[str, tuple[str, str, str, str]] = {
    "alex": ("alexnet-owt-7be5be79.pth", "7be5be79",
             "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
             "LPIPS --lpips-net alex (default)"),
    "vgg": ("vgg16-397923af.pth", "397923af",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "LPIPS --lpips-net vgg"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "b8a52dc0",
                "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
                "LPIPS --lpips-net squeeze"),
    "inception": ("weights-inception-2015-12-05-6726825d.pth", "6726825d",
                  "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                  "weights-inception-2015-12-05-6726825d.pth",
                  "FID / IS / KID / rFID (torch-fidelity Inception-v3)"),
    # clean-fid's TorchScript Inception (NVIDIA's file); no hash is published, so it is checked by loading.
    "inception-clean-fid": ("inception-2015-12-05.pt", "",
                            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                            "inception-2015-12-05.pt",
                            "FID / KID / rFID with --fid-backend clean-fid (TorchScript Inception-v3)"),
}
# torchvision constructor per LPIPS backbone, used to check a state dict's keys and shapes.
_TV_ARCH = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
# Smallest square input each LPIPS trunk accepts (measured: alex fails below 31, squeeze below 17);
# smaller images are bilinearly upsampled to this and the output says so.
LPIPS_MIN_SIZE = {"alex": 32, "vgg": 16, "squeeze": 24}


def torch_home() -> Path:
    """``$TORCH_HOME``, resolved exactly as torch.hub does, without importing torch."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", default)))


def weights_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where pretrained files are looked for: ``override``, else ``torch.hub.get_dir()/checkpoints``."""
    if override:
        return Path(os.path.expanduser(str(override)))
    if "torch" in sys.modules:  # honour torch.hub.set_dir() when torch is already loaded
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    return torch_home() / "hub" / "checkpoints"


_weights_dir = weights_dir  # for functions whose `weights_dir` parameter shadows it


def export_line(override: str | os.PathLike[str] | None = None) -> str:
    """The line a job script needs so torch finds the files in ``weights_dir(override)``."""
    d = weights_dir(override)
    if d.name == "checkpoints" and d.parent.name == "hub":
        return f"export TORCH_HOME={d.parent.parent}"
    return f"# files are in {d}: pass --weights-dir {d} (TORCH_HOME cannot point at this layout)"


def lpips_linear_path(net: str) -> Path:
    """The LPIPS linear-layer weights that ship inside the lpips package (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsMissingError("the lpips package is not installed; pip install lpips")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"


def check_net(net: str) -> str:
    if net not in LPIPS_NETS:
        raise UsageError(f"--lpips-net must be one of {', '.join(LPIPS_NETS)}, got {net!r}")
    return net


@dataclass
class Needed:
    """One file a set of metrics needs."""

    key: str  # WEIGHT_FILES key, or "lpips-linear" / "custom"
    kind: str  # "backbone", "linear", "inception" or "inception-clean-fid": how to strictly load it
    path: Path
    purpose: str
    sha256_prefix: str = ""  # empty: no published hash (custom files, LPIPS linear layers)


def needed_files(metrics: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
                 inception_weights: str | None = None, lpips_weights: str | None = None,
                 fid_backend: str = "torch-fidelity") -> list[Needed]:
    """The files ``metrics`` will read, in a stable order. A given file replaces the default one."""
    wanted = set(metrics)
    out: list[Needed] = []
    base = _weights_dir(weights_dir)
    if fid_backend not in FID_BACKENDS:
        raise UsageError(f"--fid-backend must be one of {', '.join(FID_BACKENDS)}, got {fid_backend!r}")
    if "lpips" in wanted:
        check_net(lpips_net)
        name, prefix, _, purpose = WEIGHT_FILES[lpips_net]
        if lpips_weights:
            out.append(Needed("custom", "backbone", Path(lpips_weights), f"--lpips-weights ({purpose})"))
        else:
            out.append(Needed(lpips_net, "backbone", base / name, purpose, prefix))
        out.append(Needed("lpips-linear", "linear", lpips_linear_path(lpips_net), "LPIPS linear layers (lpips package)"))
    if wanted & INCEPTION_METRICS:
        key = "inception-clean-fid" if fid_backend == "clean-fid" else "inception"
        name, prefix, _, purpose = WEIGHT_FILES[key]
        if inception_weights:
            out.append(Needed("custom", key, Path(inception_weights), f"--inception-weights ({purpose})"))
        else:
            out.append(Needed(key, key, base / name, purpose, prefix))
    return out


def remedy(metrics: Iterable[str], lpips_net: str, override: str | None, fid_backend: str = "torch-fidelity") -> str:
    wanted = sorted(set(metrics) & ({"lpips"} | INCEPTION_METRICS))
    cmd = f"aecli weights download --metrics {','.join(wanted) or 'lpips,fid'}"
    if fid_backend != "torch-fidelity" and set(wanted) & INCEPTION_METRICS:
        cmd += f" --fid-backend {fid_backend}"
    if "lpips" in wanted and lpips_net != "alex":
        cmd += f" --lpips-net {lpips_net}"
    if override:
        cmd += f" --weights-dir {override}"
    return (f"run `{cmd}` on a machine with internet (e.g. a login node), then `{export_line(override)}` "
            "in the job script, or point --weights-dir / TORCH_HOME at a folder that has them")


def require_weights(metrics: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
                    inception_weights: str | None = None, lpips_weights: str | None = None,
                    fid_backend: str = "torch-fidelity") -> None:
    """Fail fast, before any data or model is loaded, when a file ``metrics`` need is not on disk.

    Only existence and readability are checked (hashing a 500 MB VGG would cost seconds); the files
    are strictly loaded when used and ``aecli weights check`` verifies hashes. Never touches the network.
    """
    metrics = list(metrics)
    problems = []
    for need in needed_files(metrics, lpips_net, weights_dir, inception_weights, lpips_weights, fid_backend):
        problem = _file_problem(need.path)
        if problem:
            problems.append(f"{need.path} ({need.purpose}) {problem}")
    if problems:
        raise WeightsMissingError(f"pretrained weights missing: {'; '.join(problems)}. Fix: "
                                  + remedy(metrics, lpips_net, weights_dir, fid_backend))


def split_available(metrics: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
                    inception_weights: str | None = None,
                    lpips_weights: str | None = None) -> tuple[list[str], list[str], str]:
    """(metrics whose pretrained files are on disk or need none, those whose files are missing, one line
    saying what is missing and how to get it). Lets a default metric list work offline."""
    usable, skipped, problems = [], [], []
    for metric in metrics:
        missing = [f"{need.path} {problem}" for need in needed_files([metric], lpips_net, weights_dir,
                                                                      inception_weights, lpips_weights)
                   if (problem := _file_problem(need.path))]
        (skipped if missing else usable).append(metric)
        problems += [m for m in missing if m not in problems]
    note = ""
    if skipped:
        note = (f"skipped {', '.join(skipped)}: pretrained weights not on this machine ({'; '.join(problems)}); "
                f"to include {'it' if len(skipped) == 1 else 'them'}, " + remedy(skipped, lpips_net, weights_dir))
    return usable, skipped, note


def _file_problem(path: Path) -> str:
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a file"
    try:
        with open(path, "rb") as fh:
            if not fh.read(1):
                return "is empty"
    except OSError as exc:
        return f"is not readable ({exc.strerror})"
    return ""


@dataclass
class FileStatus:
    need: Needed
    ok: bool
    detail: str  # "sha256 ok", "strict load ok", or what is wrong


def check_files(metrics: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
                inception_weights: str | None = None, lpips_weights: str | None = None,
                fid_backend: str = "torch-fidelity") -> list[FileStatus]:
    """Per file: present, readable, and its hash (or, without a published hash, a strict load) OK."""
    out = []
    for need in needed_files(metrics, lpips_net, weights_dir, inception_weights, lpips_weights, fid_backend):
        problem = _file_problem(need.path)
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
        _lpips_linear_state(lpips_net, need.path)
    elif need.kind == "inception":
        from aecli.metrics.fidelity import load_inception

        load_inception(need.path, "cpu")
    elif need.kind == "inception-clean-fid":
        from aecli.metrics.fidelity import load_clean_fid_inception

        load_clean_fid_inception(need.path, "cpu", resize_inside=True)
    else:
        backbone_features(lpips_net, need.path)


def download(metrics: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
             timeout_s: float = 120.0, fid_backend: str = "torch-fidelity") -> list[Path]:
    """Fetch missing files with their hash checked (torch.hub); returns the paths now present.

    For a login node: a socket timeout makes a dead network fail instead of hanging forever.
    """
    import socket

    import torch.hub

    paths = []
    for need in needed_files(metrics, lpips_net, weights_dir, fid_backend=fid_backend):
        if need.key not in WEIGHT_FILES:
            continue  # LPIPS linear layers ship with the lpips package
        if not need.path.exists() or not sha256_file(need.path).startswith(need.sha256_prefix):
            need.path.parent.mkdir(parents=True, exist_ok=True)
            url = WEIGHT_FILES[need.key][2]
            old = socket.getdefaulttimeout()
            socket.setdefaulttimeout(timeout_s)
            try:
                # Downloads to a temp file and renames only after the hash matched.
                torch.hub.download_url_to_file(url, str(need.path), hash_prefix=need.sha256_prefix or None,
                                               progress=sys.stderr.isatty())
            except RuntimeError as exc:  # hash mismatch
                raise WeightsMissingError(f"{url}: {exc}; the download was corrupted, try again") from None
            except OSError as exc:
                raise WeightsMissingError(f"cannot download {url} ({exc}); check the network or proxy "
                                          f"(HTTPS_PROXY), or copy {need.path.name} into {need.path.parent}") from None
            finally:
                socket.setdefaulttimeout(old)
        paths.append(need.path)
    return paths


# -- loading ----------------------------------------------------------------------------------------
def _torch_load(path: Path, what: str) -> dict[str, Any]:
    import pickle

    import torch

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
    import torch
    import torchvision

    state = _torch_load(path, f"LPIPS {net} backbone")
    with torch.device("meta"):  # key/shape reference without allocating or initialising 138M params
        expected = getattr(torchvision.models, _TV_ARCH[net])().state_dict()
    strict_match(state, expected, path, f"LPIPS {net} backbone")
    return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}


def _lpips_linear_state(net: str, path: Path) -> dict[str, Any]:
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
    import warnings

    import lpips

    check_net(net)
    with warnings.catch_warnings():  # torchvision deprecation noise about `pretrained=`
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    lin = _lpips_linear_state(net, lpips_linear_path(net))
    model.load_state_dict(lin, strict=False)  # strict=False: the backbone and scaling buffers are not in it
    if not random_backbone:
        path = Path(weights_file) if weights_file else _weights_dir(weights_dir) / WEIGHT_FILES[net][0]
        if not path.exists():
            raise WeightsMissingError(f"LPIPS backbone {path} does not exist. Fix: "
                                      + remedy(["lpips"], net, weights_dir))
        features = backbone_features(net, path)
        # LPIPS splits torchvision's `features` Sequential into slices but keeps the layer indices.
        trunk = {k: features[k.split(".", 1)[1]] for k in model.net.state_dict()}
        model.net.load_state_dict(trunk, strict=True)
    model.requires_grad_(False)
    return model.eval().to(device)


def save_random_inception(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a Kaiming-initialised torch-fidelity Inception state dict: a stand-in for the real file
    on machines without internet, for smoke tests and benchmarks (its FIDs mean nothing).

    PyTorch's default init shrinks activations layer after layer until every feature is ~0 and every
    FID ~0, which would make any comparison pass; Kaiming init keeps them alive.
    """
    import torch
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    cls = fe.FeatureExtractorInceptionV3
    original, url_loader = cls.load_state_dict, fe.load_state_dict_from_url
    cls.load_state_dict = lambda self, state, strict=True: None  # type: ignore[method-assign]
    fe.load_state_dict_from_url = lambda *a, **k: {}  # build without fetching the real weights
    try:
        torch.manual_seed(seed)
        model = cls("inception-v3-compat", ["2048"])
    finally:
        cls.load_state_dict, fe.load_state_dict_from_url = original, url_loader  # type: ignore[method-assign]
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight)
    torch.save(model.state_dict(), path)
    return Path(path)

