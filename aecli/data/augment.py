"""Training-time augmentation: random flips and quarter turns of a batch, on its device.

``hflip`` mirrors each image left-right with probability ½; ``dihedral`` applies one of the eight symmetries
of the square (flip × quarter turns), uniformly, for data with no preferred orientation (photo crops,
textures, microscopy). The draw depends only on (seed, step, rank), so a resumed run continues with the same
transforms it would have drawn, and DDP ranks draw independently.
"""

from __future__ import annotations

import numpy as np
import torch


def augment_batch(x: torch.Tensor, kind: str, seed: int, step: int, rank: int = 0) -> torch.Tensor:
    """``x`` (B×C×H×W) with each image transformed by its own random draw; ``x`` itself when ``kind`` is
    none. Dihedral needs square images (a quarter turn of H×W is W×H)."""
    if kind == "none":
        return x
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, step & 0xFFFFFFFF, rank]).generate_state(1)[0]
    g = torch.Generator().manual_seed(int(state))
    draw = torch.randint(0, 2 if kind == "hflip" else 8, (x.shape[0],), generator=g).to(x.device)
    out = torch.where((draw % 2 == 1).view(-1, 1, 1, 1), x.flip(-1), x)
    for turns in (1, 2, 3):  # dihedral only: draw // 2 quarter turns after the flip
        sel = draw // 2 == turns
        if bool(sel.any()):
            out[sel] = torch.rot90(out[sel], turns, dims=(-2, -1))
    return out
