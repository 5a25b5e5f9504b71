"""Shared test helpers. Other test modules do ``from conftest import tiny_kwargs, tiny_model``.

``tiny_kwargs`` gives the smallest sensible config of every family so tests over all families stay
fast on a shared 2-core CPU. A family missing here still gets its defaults (plus size and channels),
so a newly registered family is exercised by the generic loops at once.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

# The README's test command runs one pytest-xdist worker per core. Each worker, and every process a test
# starts, then uses one intra-op thread: two workers × two OpenMP threads on two cores make tiny models
# 10–30× slower (see one_thread). Set before any test module imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

_RESNET = {"widths": (8, 8, 16, 16, 16), "latent_dim": 16}

TINY: dict[str, dict[str, Any]] = {
    "mlp-ae": {"hidden": (16,), "latent_dim": 4},
    "conv-ae": {"widths": (4, 8), "latent_dim": 8},
    "conv-vae": {"widths": (4, 8), "latent_dim": 8},
    "flow-vae": {"widths": (4, 8), "latent_dim": 8, "flows": 2},
    "lstm-ae": {"hidden": 8, "latent_dim": 4},
    "gru-vae": {"hidden": 8, "fc_hidden": 16, "latent_dim": 4, "decoder_channels": (8, 4)},
    "gan": {"latent_dim": 8, "g_hidden": (16, 32), "d_hidden": (32, 16)},
    "skip-ae": {"base_channels": 8, "latent_dim": 16},
    "resnet-ae": dict(_RESNET),
    "resnet-vae": dict(_RESNET),
    "resnet-attn-ae": {**_RESNET, "heads": 2},
    "ldm-kl": {"block_out_channels": (8, 16), "layers_per_block": 1, "latent_channels": 2, "norm_num_groups": 4},
    "vq-vae": {"widths": (8, 16), "blocks_per_stage": 1, "codebook_size": 16, "code_dim": 4},
    "vqgan": {"widths": (8, 16), "blocks_per_stage": 1, "codebook_size": 16, "code_dim": 4, "ema_codebook": True,
              "dead_after": 5},
}


def tiny_kwargs(family: str, image_size: int = 32, channels: int = 1) -> dict[str, Any]:
    """Smallest sensible options for ``family`` at ``image_size`` px with ``channels`` channels."""
    return {**TINY.get(family, {}), "image_size": image_size, "channels": channels}


def tiny_size(family: str, candidates: tuple[int, ...] = (28, 32)) -> int:
    """The first of ``candidates`` the tiny ``family`` accepts (28 px for MNIST-like data when it can)."""
    from aecli.models import make_config

    valid = make_config(family, **tiny_kwargs(family)).valid_sizes()
    return next(s for s in candidates if s in valid)


def tiny_model(family: str, image_size: int = 32, channels: int = 1, **overrides: Any):
    """Build the tiny ``family`` model; ``overrides`` replace or add options (e.g. num_classes=3)."""
    from aecli.models import create_model

    return create_model(family, **{**tiny_kwargs(family, image_size, channels), **overrides})


@pytest.fixture(scope="module")
def one_thread() -> Any:
    """One torch intra-op thread: on a shared 2-core machine spinning OpenMP threads make tiny models
    10–30× slower. Modules that train ask for it through an autouse fixture of their own."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- offline stand-ins for the pretrained Inception files (one copy, shared with benchmarks/) ------------------
@cache
def _standins() -> Any:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "_standins.py"
    spec = importlib.util.spec_from_file_location("_standins", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_random_inception(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """A Kaiming-initialised torch-fidelity Inception file (benchmarks/_standins.py)."""
    return _standins().save_random_inception(path, seed)


def save_random_clean_fid_inception(path: str | os.PathLike[str], torch_fidelity_weights: str | os.PathLike[str]
                                    ) -> Path:
    """clean-fid's TorchScript file holding the network of a torch-fidelity file (benchmarks/_standins.py)."""
    return _standins().save_random_clean_fid_inception(path, torch_fidelity_weights)
