"""Batched encoding of an ImageSet to one flat latent vector per image."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from aecli.data.imageset import ImageSet
from aecli.data.loader import BatchLoader, to_model_input
from aecli.errors import UsageError

# Called after every batch with (images encoded so far, total).
ProgressFn = Callable[[int, int], None]


def subsample_indices(total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a reproducible random subset of ``n`` of ``total`` items (all when n is None
    or >= total). Sorted so the subset keeps the dataset's order in every output."""
    if n is None or n >= total:
        return np.arange(total, dtype=np.int64)
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=n, replace=False)).astype(np.int64)


@torch.inference_mode()
def encode_images(model: Any, data: ImageSet, value_range: tuple[float, float], *, device: Any = "cpu",
                  batch_size: int = 256, progress: ProgressFn | None = None) -> np.ndarray:
    """float32 [N, *latent_shape] latents of every image, in order.

    VAEs give the posterior mean (``mode()``): the point the encoder believes in, with no sampling
    noise that would blur the map and the scores.
    """
    if not getattr(model, "has_encoder", True):
        raise UsageError(f"{getattr(model, 'family', 'this model')} has no encoder, so it cannot map images "
                         "to latents; use an autoencoder or VAE checkpoint")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    model.eval()
    loader = BatchLoader(data, batch_size, shuffle=False, device=device)
    chunks: list[np.ndarray] = []
    done = 0
    for x, _ in loader:
        z = model.encode(to_model_input(x, value_range)).mode()
        chunks.append(z.float().cpu().numpy())
        done += len(x)
        if progress is not None:
            progress(done, len(data))
    return np.concatenate(chunks)


def flatten(latents: np.ndarray) -> np.ndarray:
    """[N, *shape] → [N, D] (spatial latents C×H×W become one vector per image)."""
    return np.ascontiguousarray(latents.reshape(len(latents), -1), dtype=np.float32)
