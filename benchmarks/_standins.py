"""Random stand-ins for the pretrained Inception files, for tests and benchmarks on machines without
internet (their FIDs mean nothing; they exercise the code paths with the real architectures).

Not part of the aecli package: benchmark scripts import it (``from _standins import ...``, their folder is
on sys.path), tests through ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch_fidelity.feature_extractor_inceptionv3 as fe

from aecli.pretrained import CLEAN_FID_SIZE, load_inception


# -- torch-fidelity's file ---------------------------------------------------------------------------------
def save_random_inception(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a Kaiming-initialised torch-fidelity Inception state dict: a stand-in for the real file
    on machines without internet, for smoke tests and benchmarks (its FIDs mean nothing).

    PyTorch's default init shrinks activations layer after layer until every feature is ~0 and every
    FID ~0, which would make any comparison pass; Kaiming init keeps them alive.
    """
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


# -- clean-fid's file ------------------------------------------------------------------------------------
def tf1_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1.x does it (align_corners=False, no half-pixel centres: source
    coordinate = output index × in/out), in TorchScript-compatible ops."""
    h, w = x.shape[-2], x.shape[-1]
    ys = torch.arange(size, dtype=torch.float64, device=x.device) * (h / size)
    xs = torch.arange(size, dtype=torch.float64, device=x.device) * (w / size)
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    wy = (ys - y0.double()).to(x.dtype).view(-1, 1)
    wx = (xs - x0.double()).to(x.dtype).view(1, -1)
    rows0, rows1 = x.index_select(2, y0), x.index_select(2, y1)
    top = rows0.index_select(3, x0) * (1 - wx) + rows0.index_select(3, x1) * wx
    bottom = rows1.index_select(3, x0) * (1 - wx) + rows1.index_select(3, x1) * wx
    return top * (1 - wy) + bottom * wy


class _InceptionTrunk(torch.nn.Module):
    """torch-fidelity's FeatureExtractorInceptionV3 after its resize and normalisation, up to pool3."""

    BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")

    def __init__(self, extractor: Any) -> None:
        super().__init__()
        self.blocks = torch.nn.Sequential(*[getattr(extractor, n) for n in self.BLOCKS])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.blocks(x), 1)


class _CleanFidStandIn(torch.nn.Module):
    """NVIDIA's TorchScript Inception interface, as clean-fid's InceptionV3W calls it."""

    def __init__(self, layers: torch.nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers((tf1_resize(x, 299) - 128) / 128)


def save_random_clean_fid_inception(path: str | os.PathLike[str], torch_fidelity_weights: str | os.PathLike[str]
                                    ) -> Path:
    """Write a TorchScript stand-in for clean-fid's ``inception-2015-12-05.pt`` that holds the network of
    a torch-fidelity weights file (e.g. one ``save_random_inception`` wrote), for tests and
    benchmarks without internet. ``layers`` maps a normalised 299² batch to [B, 2048] pool3 features;
    ``forward(x, return_features)`` takes [0, 255] images of any size, resizes like TF1 and normalises.
    Both backends then run the same network, so their numbers differ only by their protocols.
    """
    trunk = _InceptionTrunk(load_inception(torch_fidelity_weights, "cpu")).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        layers = torch.jit.trace(trunk, torch.zeros(1, 3, CLEAN_FID_SIZE, CLEAN_FID_SIZE), check_trace=False)
        torch.jit.script(_CleanFidStandIn(layers)).save(str(path))
    return Path(path)
