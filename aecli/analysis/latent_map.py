"""``latent_map``: the whole `aecli tsne` pipeline as a library call.

checkpoint + data → latents (batched, on the device) → 2-D map (PCA → t-SNE, or PCA) → figure, CSV,
optional raw latents, and the latent-quality figures (k-NN accuracy, silhouette) as a dict.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors.numpy import save

from aecli.analysis.embed import encode_images, flatten, subsample_indices
from aecli.analysis.plot import FORMATS, plot_embedding
from aecli.analysis.project import Projection, check_method, project
from aecli.analysis.quality import KNN_K, LatentQuality, latent_quality
from aecli.atomic import atomic_path, check_writable, write_bytes, write_text
from aecli.checkpoint.format import load_model
from aecli.data import open_for
from aecli.devices import resolve_device
from aecli.errors import UsageError

LATENT_FORMATS = (".safetensors", ".npy")
LATENTS_FORMAT_NAME = "aecli-latents"


@dataclass
class LatentMapConfig:
    checkpoint: str
    data: str | None = None  # None: the checkpoint's training source
    split: str = "auto"  # val of the training data, all of other data (aecli.data.open_for)
    n: int | None = None  # random subsample of this many images (reproducible with seed)
    out: str = "tsne.png"
    method: str = "tsne"
    perplexity: float = 30.0
    seed: int = 0
    device: str = "auto"
    batch_size: int = 256
    ema: bool = False
    data_root: str | None = None
    cache: str | None = None
    save_latents: str | None = None
    json_out: str | None = None
    k: int = KNN_K

    def validate(self) -> None:
        check_method(self.method, self.perplexity)
        if Path(self.out).suffix.lower().lstrip(".") not in FORMATS:
            raise UsageError(f"--out must end in {', '.join('.' + f for f in FORMATS)}, got {self.out!r}")
        if self.n is not None and self.n < 1:
            raise UsageError(f"--n must be at least 1, got {self.n}")
        if not 0 <= self.seed < 2**32:  # scikit-learn's random_state range
            raise UsageError(f"--seed must be between 0 and 2**32 - 1, got {self.seed}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.k < 1:
            raise UsageError(f"k must be at least 1, got {self.k}")
        if self.save_latents and Path(self.save_latents).suffix.lower() not in LATENT_FORMATS:
            raise UsageError(f"--save-latents must end in {' or '.join(LATENT_FORMATS)}, got {self.save_latents!r}")
        for option, path in (("--out", self.out), ("--save-latents", self.save_latents), ("--json-out", self.json_out)):
            if path:
                check_writable(path, option)
        if not _written_by_tsne(self.csv_path):
            raise UsageError(f"--out {self.out} would overwrite {self.csv_path} (the table goes beside the figure), "
                             "which `aecli tsne` did not write; choose another --out")

    @property
    def csv_path(self) -> Path:
        """The table beside the figure: tsne.png → tsne.csv."""
        return Path(self.out).with_suffix(".csv")


@dataclass
class LatentMapResult:
    figure: Path
    table: Path
    latents: np.ndarray  # float32 [N, *latent_shape], as the encoder gave them
    labels: np.ndarray  # int64 [N], -1 = unlabelled
    names: list[str]
    indices: np.ndarray  # position of each image in the opened split (before --n subsampling)
    class_names: list[str]
    projection: Projection
    quality: LatentQuality
    summary: dict[str, Any]  # what --json writes
    notes: list[str] = field(default_factory=list)


def checkpoint_label(path: str | Path) -> str:
    """run-folder/best.safetensors rather than a bare best.safetensors: run folders hold several."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _title(cfg: LatentMapConfig, family: str, source: str, split: str, n: int, proj: Projection) -> str:
    if proj.method == "tsne":
        how = f"t-SNE, perplexity {proj.perplexity:g}" + (f", PCA→{proj.pca_dims}" if proj.pca_dims else "")
    else:
        how = "PCA"
    return f"{checkpoint_label(cfg.checkpoint)} ({family}) · {how} · {source} [{split}], n={n}, seed {cfg.seed}"


TABLE_HEADER = ["index", "name", "label", "class_name", "x", "y"]


def _written_by_tsne(path: Path) -> bool:
    """True when ``path`` is absent or a table this command wrote (its header line): the CSV name is
    derived from --out, so `--out RUN/metrics.png` must not replace a run's metrics.csv."""
    if not path.exists() and not path.is_symlink():
        return True
    try:
        with open(path, "rb") as fh:
            first = fh.readline(200) if path.is_file() else b""
    except OSError:
        return False
    return first.rstrip(b"\r\n") == ",".join(TABLE_HEADER).encode()


def _utf8(name: str) -> str:
    """A file name as UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogates) become \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_table(path: Path, indices: np.ndarray, names: list[str], labels: np.ndarray,
                class_names: list[str], coords: np.ndarray) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TABLE_HEADER)
    for i, name, label, (x, y) in zip(indices.tolist(), names, labels.tolist(), coords.tolist()):
        cname = class_names[label] if 0 <= label < len(class_names) else ""
        w.writerow([i, _utf8(name), label, _utf8(cname), f"{x:.6g}", f"{y:.6g}"])
    write_text(path, buf.getvalue())


def save_latents(path: str | Path, latents: np.ndarray, labels: np.ndarray, names: list[str],
                 indices: np.ndarray, class_names: list[str], checkpoint: str, source: str) -> None:
    """.safetensors: tensors ``latents`` [N, *latent_shape], ``labels`` and ``indices``, with the
    names, class names, checkpoint and source as JSON metadata. .npy: the latents array alone."""
    if Path(path).suffix.lower() == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.save would append .npy
            np.save(fh, np.ascontiguousarray(latents), allow_pickle=False)
        return
    metadata = {"format": LATENTS_FORMAT_NAME, "names": json.dumps(names), "class_names": json.dumps(class_names),
                "checkpoint": str(checkpoint), "source": source,
                "latent_shape": json.dumps(list(latents.shape[1:]))}
    tensors = {"latents": np.ascontiguousarray(latents, dtype=np.float32),
               "labels": np.ascontiguousarray(labels, dtype=np.int64),
               "indices": np.ascontiguousarray(indices, dtype=np.int64)}
    write_bytes(path, save(tensors, metadata=metadata))


def latent_map(cfg: LatentMapConfig, progress: bool = False,
               log: Callable[[str], None] | None = None) -> LatentMapResult:
    """Library entry point of `aecli tsne`. ``progress`` shows the encoding (aecli.progress);
    ``log`` receives one-line notes (clamped perplexity, subsampling)."""
    cfg.validate()
    say = log or (lambda _msg: None)
    device = resolve_device(cfg.device)
    ckpt = load_model(cfg.checkpoint, device, ema=cfg.ema)
    model, spec = ckpt.model, ckpt.data
    family = ckpt.header.family
    if not model.has_encoder:
        raise UsageError(f"{cfg.checkpoint} is a {family} checkpoint: it has no encoder, so images cannot be "
                         "mapped to latents; give an autoencoder or VAE checkpoint")
    data = open_for(spec, cfg.data, checkpoint=cfg.checkpoint, split=cfg.split, data_root=cfg.data_root,
                    cache_dir=cfg.cache, progress=sys.stderr.isatty())
    provenance = data.provenance
    source = provenance.source
    notes: list[str] = []
    total = len(data)
    indices = subsample_indices(total, cfg.n, cfg.seed)
    if len(indices) < total:
        data = data.subset(indices)
        notes.append(f"using a random {len(indices)} of {total} images (seed {cfg.seed})")
    say(provenance.line(len(data)))  # first, before the slow part
    class_names = list(data.class_names or spec.class_names)
    labels = data.labels.numpy().astype(np.int64)
    raw = encode_images(model, data, spec.value_range, device=device, batch_size=cfg.batch_size,
                        progress=progress)
    flat = flatten(raw)
    proj = project(flat, cfg.method, perplexity=cfg.perplexity, seed=cfg.seed)
    notes += proj.notes
    quality = latent_quality(flat, labels, seed=cfg.seed, k=cfg.k)
    notes += quality.notes
    for note in notes:
        say(note)

    figure, table = Path(cfg.out), cfg.csv_path
    plot_embedding(proj.coords, labels, class_names, figure,
                   _title(cfg, family, source, provenance.split, len(labels), proj), axis_labels=proj.axis_labels())
    write_table(table, indices, data.names, labels, class_names, proj.coords)
    if cfg.save_latents:
        save_latents(cfg.save_latents, raw, labels, data.names, indices, class_names, cfg.checkpoint, source)
    summary = {
        "checkpoint": str(cfg.checkpoint), "family": family, "data": source, "split": provenance.split,
        "provenance": provenance.to_dict(len(labels)),
        "images": len(labels), "images_in_split": total, "latent_shape": list(raw.shape[1:]),
        "latent_dim": int(flat.shape[1]), "method": proj.method, "perplexity": proj.perplexity,
        "pca_dims": proj.pca_dims, "explained_variance": list(proj.explained) if proj.explained else None,
        "seed": cfg.seed, "device": str(device), "ema": cfg.ema,
        **quality.to_dict(), "notes": notes,
        "outputs": {"figure": str(figure), "table": str(table), "latents": cfg.save_latents},
    }
    if cfg.json_out:
        write_text(cfg.json_out, json.dumps(summary, indent=2) + "\n")
    return LatentMapResult(figure, table, raw, labels, list(data.names), indices, class_names, proj, quality,
                           summary, notes)
