"""How informative a latent space is, as numbers: k-NN accuracy on a held-out part and the silhouette
score of the class labels. Both use Euclidean distance on the raw flat latents (not the 2-D map),
and only the labelled images; each is None, with the reason, when it cannot be computed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

KNN_K = 5
TEST_FRACTION = 0.2
SILHOUETTE_MAX = 10_000  # silhouette is O(N²) in time and memory; above this a fixed subsample is scored


@dataclass
class LatentQuality:
    knn_accuracy: float | None = None
    knn_k: int = KNN_K
    knn_train: int = 0
    knn_test: int = 0
    knn_stratified: bool = False
    silhouette: float | None = None
    silhouette_samples: int = 0
    labelled: int = 0
    classes: int = 0
    chance: float | None = None  # accuracy of always answering the most frequent test class
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def knn_split(labels: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray, bool]:
    """(train indices, test indices, stratified?) — a fixed split for a given seed.

    Stratified when every class has at least two images and the test part can hold one of each;
    otherwise a plain random split (tiny or very unbalanced label sets).
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    n_test = int(np.ceil(test_fraction * len(labels)))
    stratify = counts.min() >= 2 and len(counts) <= n_test <= len(labels) - len(counts)
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed,
                                   stratify=labels if stratify else None)
    return np.sort(train), np.sort(test), bool(stratify)


def knn_accuracy(latents: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                 k: int = KNN_K) -> float:
    """Accuracy of a k-nearest-neighbour classifier fitted on ``train`` and scored on ``test``."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=min(k, len(train)))
    clf.fit(latents[train], labels[train])
    return float(clf.score(latents[test], labels[test]))


def silhouette(latents: np.ndarray, labels: np.ndarray, seed: int, max_samples: int = SILHOUETTE_MAX) -> tuple[float, int]:
    """(silhouette score of ``labels``, images scored). Above ``max_samples`` images a subsample
    drawn with ``seed`` is scored (scikit-learn's own ``sample_size``), so reruns agree."""
    from sklearn.metrics import silhouette_score

    n = len(labels)
    size = max_samples if n > max_samples else None
    score = silhouette_score(latents, labels, sample_size=size, random_state=seed if size else None)
    return float(score), size or n


def latent_quality(latents: np.ndarray, labels: np.ndarray, *, seed: int = 0, k: int = KNN_K,
                   silhouette_max: int = SILHOUETTE_MAX) -> LatentQuality:
    """k-NN accuracy and silhouette of the labelled images among ``latents`` [N, D] (label -1 = none)."""
    x = np.asarray(latents, dtype=np.float32).reshape(len(latents), -1)
    labels = np.asarray(labels, dtype=np.int64)
    keep = labels >= 0
    x, y = x[keep], labels[keep]
    q = LatentQuality(knn_k=k, labelled=int(keep.sum()), classes=len(np.unique(y)))
    if q.labelled == 0:
        q.notes.append("no labelled images: k-NN accuracy and silhouette need class labels")
        return q
    if q.classes < 2:
        q.notes.append("only one class among the labelled images: k-NN accuracy and silhouette need two or more")
        return q
    if q.labelled >= 2 * q.classes and q.labelled >= 5:
        train, test, q.knn_stratified = knn_split(y, seed)
        q.knn_train, q.knn_test = len(train), len(test)
        if len(train) < k:
            q.knn_k = len(train)
            q.notes.append(f"only {len(train)} training images for k-NN: k lowered to {len(train)}")
        q.knn_accuracy = knn_accuracy(x, y, train, test, q.knn_k)
        q.chance = float(np.bincount(y[test]).max() / len(test))
    else:
        q.notes.append(f"too few labelled images ({q.labelled}) for a k-NN train/test split")
    if q.classes < q.labelled:
        q.silhouette, q.silhouette_samples = silhouette(x, y, seed, silhouette_max)
    else:
        q.notes.append("every labelled image is its own class: silhouette is undefined")
    return q
