"""The linear reference: PCA with k components is the best linear autoencoder with a k-number code.

`aecli evaluate --baseline pca[:K]` fits it on the checkpoint's training split at the checkpoint's code
size (or K) and scores it on the same evaluation images, so every table answers "better than linear?".
On CUDA the fit is an exact SVD with torch.linalg; on CPU scikit-learn's randomized PCA (much faster
than a full SVD for k ≪ pixels, and within rounding of it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from aecli.errors import UsageError
from aecli.metrics.registry import PER_IMAGE, Batch, Row

# The fit holds the training images as one float32 matrix; above this many values it uses an evenly
# spaced subset of the training images (said in the row's note). 2^28 values = 1 GiB.
MAX_FIT_VALUES = 1 << 28


@dataclass
class PCA:
    mean: torch.Tensor  # (d,)
    components: torch.Tensor  # (k, d), orthonormal rows, by decreasing variance

    @classmethod
    def fit(cls, x: torch.Tensor, k: int, device: torch.device, exact: bool | None = None) -> "PCA":
        """Fit on the rows of ``x`` (n images × d values). ``exact`` (default: on CUDA) uses torch.linalg's SVD,
        otherwise scikit-learn's randomized PCA."""
        n, d = x.shape
        if not 1 <= k <= min(n, d):
            raise UsageError(f"PCA with {k} components needs at least {k} training images and {k} values per "
                             f"image (have {n} images of {d} values); lower K in --baseline pca:K")
        if exact if exact is not None else device.type == "cuda":
            x = x.to(device, torch.float32)
            mean = x.mean(0)
            # Exact: the top-k right singular vectors of the centred data.
            _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
            return cls(mean=mean, components=vh[:k].contiguous())
        from sklearn.decomposition import PCA as SkPCA

        sk = SkPCA(n_components=k, svd_solver="randomized", random_state=0).fit(x.double().numpy())
        return cls(mean=torch.from_numpy(sk.mean_).float().to(device),
                   components=torch.from_numpy(sk.components_).float().to(device))

    @property
    def k(self) -> int:
        return self.components.shape[0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.components.T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.components + self.mean

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def parse_baseline(text: str | None) -> int | None:
    """``pca`` → 0 (the checkpoint's code size), ``pca:K`` → K, None → None."""
    if text is None:
        return None
    name, _, k = text.strip().lower().partition(":")
    if name != "pca" or (k and not (k.isdigit() and int(k) >= 1)):
        raise UsageError(f"--baseline {text!r}: expected pca (the checkpoint's code size) or pca:K with K ≥ 1, "
                         "e.g. --baseline pca:64")
    return int(k) if k else 0


def fit_images(images_u8: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The training images as an (n, d) float matrix in [0, 1], subsampled evenly if too large."""
    n = images_u8.shape[0]
    d = images_u8[0].numel()
    keep = max(1, min(n, MAX_FIT_VALUES // max(1, d)))
    note = ""
    if keep < n:
        images_u8 = images_u8[torch.linspace(0, n - 1, keep).round().long()]
        note = f"; fitted on {keep} of {n} training images (memory cap)"
    return images_u8.reshape(len(images_u8), -1).float() / 255, note


def pca_row(ev: Any, path: str | os.PathLike[str], k: int) -> Any:
    """The PCA reference for one checkpoint: fitted on the training split of its evaluation source at its code
    size (``k`` = 0) or ``k``, scored with the same per-image metrics on the same evaluation images."""
    from aecli.checkpoint.format import build_from_header, read_header

    header = read_header(path)
    spec = header.data
    if not k:
        with torch.device("meta"):  # the code size needs only the architecture
            k = math.prod(build_from_header(header).latent_shape)
    train = ev.dataset(ev.cfg.data, spec, path, split="train")
    x, note = fit_images(train.tensor())
    pca = PCA.fit(x, k, ev.device)
    del x
    ds = ev.dataset(ev.cfg.data, spec, path)
    source = ds.provenance.source
    row = Row(name=f"{path} [pca-{k}]", family="pca", n=len(ds),
              image_size=f"{spec.image_size}x{spec.image_size}x{spec.channels}", data=ds.provenance.to_dict(len(ds)))
    per_image = ev.of_kind(PER_IMAGE)
    for m in per_image:
        m.start(row, None)
    images = ds.tensor()
    with torch.no_grad():
        for i in range(0, len(images), ev.cfg.batch_size):
            ref = images[i:i + ev.cfg.batch_size].to(ev.device).float() / 255
            pred = pca.reconstruct(ref.flatten(1)).view_as(ref).clamp(0, 1)
            for m in per_image:
                m.update(Batch(pred=pred, ref=ref))
    for m in ev.metrics:
        if m in per_image:
            m.finish(row)
    for m in ev.metrics:
        if m not in per_image:
            m.na(row, "the PCA baseline has reconstruction metrics only")
    row.notes["pca"] = (f"linear baseline: PCA with {k} components fitted on {len(train)} images of the "
                        f"train split{note}")
    ev.log(f"{row.name}: PCA-{k} fitted on {source} (train split, {len(train)} images){note}")
    return row
