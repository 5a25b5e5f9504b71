"""Pretrained files, where they live, and how to check/fetch them (aecli.pretrained loads them).

Files come in two groups, named by what needs them: ``lpips`` (a torchvision backbone plus the linear
layers shipped in the lpips package) and ``inception`` (the FID backend's Inception-v3). A metric
declares its groups (aecli.metrics.registry), ``train --lpips`` needs ``lpips``; this module knows
nothing about metrics.

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
from typing import Iterable

from aecli.errors import UsageError, WeightsMissingError
from aecli.hashing import sha256_file

LPIPS_NETS = ("alex", "vgg", "squeeze")
LPIPS, INCEPTION = "lpips", "inception"  # the groups of pretrained files
# The `aecli weights download --metrics` value that fetches each group (any metric of the group would do).
GROUP_METRIC = {LPIPS: "lpips", INCEPTION: "fid"}
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


def weight_file(key: str, weights_dir: str | os.PathLike[str] | None = None,
                given: str | os.PathLike[str] | None = None) -> Path:
    """The file of ``WEIGHT_FILES[key]`` that will be loaded: ``given`` (--lpips-weights /
    --inception-weights), else its hub name in ``weights_dir(weights_dir)``."""
    return Path(given) if given else _weights_dir(weights_dir) / WEIGHT_FILES[key][0]


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
    """One pretrained file."""

    key: str  # WEIGHT_FILES key, or "lpips-linear" / "custom"
    kind: str  # "backbone", "linear", "inception" or "inception-clean-fid": how to strictly load it
    path: Path
    purpose: str
    sha256_prefix: str = ""  # empty: no published hash (custom files, LPIPS linear layers)


def _groups(needs: Iterable[str]) -> set[str]:
    wanted = set(needs)
    unknown = wanted - {LPIPS, INCEPTION}
    if unknown:  # a caller's bug (metric names instead of groups), not a user's
        raise ValueError(f"unknown pretrained group(s) {sorted(unknown)}; use {LPIPS!r} and/or {INCEPTION!r}")
    return wanted


def check_backend(fid_backend: str) -> str:
    if fid_backend not in FID_BACKENDS:
        raise UsageError(f"--fid-backend must be one of {', '.join(FID_BACKENDS)}, got {fid_backend!r}")
    return fid_backend


def inception_key(fid_backend: str) -> str:
    """The WEIGHT_FILES key of ``fid_backend``'s Inception."""
    return "inception-clean-fid" if check_backend(fid_backend) == "clean-fid" else "inception"


def needed_files(needs: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
                 inception_weights: str | None = None, lpips_weights: str | None = None,
                 fid_backend: str = "torch-fidelity") -> list[Needed]:
    """The files of the groups ``needs`` (``lpips``, ``inception``), in a stable order. A given file
    replaces the default one."""
    wanted = _groups(needs)
    out: list[Needed] = []
    key = inception_key(fid_backend)
    if LPIPS in wanted:
        check_net(lpips_net)
        _, prefix, _, purpose = WEIGHT_FILES[lpips_net]
        path = weight_file(lpips_net, weights_dir, lpips_weights)
        out.append(Needed("custom", "backbone", path, f"--lpips-weights ({purpose})") if lpips_weights else
                   Needed(lpips_net, "backbone", path, purpose, prefix))
        out.append(Needed("lpips-linear", "linear", lpips_linear_path(lpips_net), "LPIPS linear layers (lpips package)"))
    if INCEPTION in wanted:
        _, prefix, _, purpose = WEIGHT_FILES[key]
        path = weight_file(key, weights_dir, inception_weights)
        out.append(Needed("custom", key, path, f"--inception-weights ({purpose})") if inception_weights else
                   Needed(key, key, path, purpose, prefix))
    return out


def remedy(needs: Iterable[str], lpips_net: str, override: str | None, fid_backend: str = "torch-fidelity") -> str:
    wanted = _groups(needs)
    cmd = f"aecli weights download --metrics {','.join(sorted(GROUP_METRIC[g] for g in wanted)) or 'lpips,fid'}"
    if fid_backend != "torch-fidelity" and INCEPTION in wanted:
        cmd += f" --fid-backend {fid_backend}"
    if LPIPS in wanted and lpips_net != "alex":
        cmd += f" --lpips-net {lpips_net}"
    if override:
        cmd += f" --weights-dir {override}"
    return (f"run `{cmd}` on a machine with internet (e.g. a login node), then `{export_line(override)}` "
            "in the job script, or point --weights-dir / TORCH_HOME at a folder that has them")


def missing_files(needs: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
                  inception_weights: str | None = None, lpips_weights: str | None = None,
                  fid_backend: str = "torch-fidelity") -> list[tuple[Needed, str]]:
    """(file, what is wrong) for each file of ``needs`` that is not usable on this disk.

    Only existence and readability are checked (hashing a 500 MB VGG would cost seconds); the files
    are strictly loaded when used and ``aecli weights check`` verifies hashes. Never touches the network.
    """
    return [(need, problem)
            for need in needed_files(needs, lpips_net, weights_dir, inception_weights, lpips_weights, fid_backend)
            if (problem := file_problem(need.path))]


def require_weights(needs: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
                    inception_weights: str | None = None, lpips_weights: str | None = None,
                    fid_backend: str = "torch-fidelity") -> None:
    """Fail fast, before any data or model is loaded, when a file of the groups ``needs`` is not on
    disk (see ``missing_files``)."""
    needs = list(needs)
    missing = missing_files(needs, lpips_net, weights_dir, inception_weights, lpips_weights, fid_backend)
    if missing:
        problems = [f"{need.path} ({need.purpose}) {problem}" for need, problem in missing]
        raise WeightsMissingError(f"pretrained weights missing: {'; '.join(problems)}. Fix: "
                                  + remedy(needs, lpips_net, weights_dir, fid_backend))


def file_problem(path: Path) -> str:
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


def download(needs: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
             timeout_s: float = 120.0, fid_backend: str = "torch-fidelity") -> list[Path]:
    """Fetch missing files with their hash checked (torch.hub); returns the paths now present.

    For a login node: a socket timeout makes a dead network fail instead of hanging forever.
    """
    import socket

    import torch.hub

    paths = []
    for need in needed_files(needs, lpips_net, weights_dir, fid_backend=fid_backend):
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
