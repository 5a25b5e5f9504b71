"""Latent-space analysis behind `aecli tsne`: encode a dataset to flat latents, project them to 2-D
(PCA → t-SNE, or PCA alone), measure how informative they are (k-NN accuracy, silhouette) and plot.

``latent_map`` runs the whole pipeline; the modules can also be used one by one.
"""

from aecli.analysis.embed import encode_images, subsample_indices
from aecli.analysis.latent_map import LatentMapConfig, LatentMapResult, latent_map
from aecli.analysis.plot import plot_embedding
from aecli.analysis.project import Projection, project
from aecli.analysis.quality import LatentQuality, knn_accuracy, knn_split, latent_quality, silhouette

__all__ = [
    "LatentMapConfig", "LatentMapResult", "LatentQuality", "Projection", "encode_images", "knn_accuracy",
    "knn_split", "latent_map", "latent_quality", "plot_embedding", "project", "silhouette",
    "subsample_indices",
]
