"""2-D projections of flat latents: PCA alone (fast) or PCA to 50 dimensions followed by t-SNE."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aecli.errors import UsageError

METHODS = ("tsne", "pca")
PCA_DIMS = 50  # the usual t-SNE pre-reduction: removes noise and makes the neighbour search cheap
MIN_TSNE_POINTS = 5


@dataclass
class Projection:
    coords: np.ndarray  # float32 [N, 2]
    method: str
    perplexity: float | None  # the value actually used (t-SNE only)
    pca_dims: int | None  # dimensions after the PCA step, None when the latents were used as they are
    notes: list[str] = field(default_factory=list)
    explained: tuple[float, float] | None = None  # PCA view: share of the latent variance along x and y

    def axis_labels(self) -> tuple[str, str] | None:
        """PCA axes mean something (directions of most variance): say how much each one carries."""
        if self.explained is None:
            return None
        return tuple(f"PC{i + 1} ({100 * v:.1f} % of latent variance)" for i, v in enumerate(self.explained))


def _pca(x: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``dims`` principal components of ``x`` and the share of variance each explains."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dims, random_state=seed)
    return pca.fit_transform(x), pca.explained_variance_ratio_


def check_method(method: str, perplexity: float) -> None:
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not perplexity > 0:
        raise UsageError(f"--perplexity must be positive, got {perplexity}")


def project(latents: np.ndarray, method: str = "tsne", *, perplexity: float = 30.0, seed: int = 0,
            pca_dims: int = PCA_DIMS) -> Projection:
    """Project [N, D] latents to [N, 2]."""
    check_method(method, perplexity)
    x = np.asarray(latents, dtype=np.float32).reshape(len(latents), -1)
    n, d = x.shape
    notes: list[str] = []
    if method == "pca":
        if n < 2:
            raise UsageError(f"PCA needs at least 2 images, got {n}")
        if d == 1:  # a 1-D latent is its own projection; the second axis carries nothing
            return Projection(np.hstack([x, np.zeros_like(x)]), "pca", None, None,
                              ["the latent is 1-D: y is 0"], (1.0, 0.0))
        coords, ratio = _pca(x, 2, seed)
        return Projection(coords.astype(np.float32), "pca", None, 2, [], (float(ratio[0]), float(ratio[1])))
    if n < MIN_TSNE_POINTS:
        raise UsageError(f"t-SNE needs at least {MIN_TSNE_POINTS} images, got {n}; "
                         "use more data or --method pca")
    used_pca = None
    k = min(pca_dims, n, d)
    if d > pca_dims:
        x = _pca(x, k, seed)[0].astype(np.float32)
        used_pca = k
    if perplexity >= n:
        # scikit-learn refuses perplexity >= N; (N-1)/3 is the largest value whose 3·perplexity
        # neighbours still exist.
        new = max(1.0, (n - 1) / 3)
        notes.append(f"perplexity {perplexity:g} is not below the number of images ({n}); using {new:g}")
        perplexity = new
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed, n_jobs=-1)
    coords = tsne.fit_transform(x).astype(np.float32)
    return Projection(coords, "tsne", float(perplexity), used_pca, notes)
