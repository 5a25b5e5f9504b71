"""Seed 004's classifier evaluation: an MLP trained on the real labelled images judges whether the
samples a conditional model draws for class k look like class k.

Per class k the conditional model decodes M prior draws with label k; the classifier's accuracy on
them (argmax == k) and its mean confidence (softmax probability of k) are the scores. The same
classifier's accuracy on real held-out images is the ceiling: samples cannot be expected to be more
recognisable than real images. The classifier is trained once per data identity and cached on disk
(safetensors weights + JSON metadata, never pickle), so a sweep of checkpoints shares it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from aecli.atomic import atomic_path, write_text
from aecli.data.spec import DataSpec
from aecli.errors import UsageError

FORMAT = "aecli-mlp-classifier/1"


@dataclass(frozen=True)
class ClassifierConfig:
    """Hyperparameters of the judge; every field is part of the cache key."""

    hidden: tuple[int, ...] = (256, 128)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d


class MLPClassifier(nn.Module):
    """Flattened image → hidden ReLU layers → class logits (seed 004's MLP classifier)."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def identity(train: Any, spec: DataSpec, cfg: ClassifierConfig) -> dict[str, Any]:
    """Everything that changes the trained classifier: the exact training images (source_id) at this
    size/channels/value range, the class list, and the hyperparameters."""
    return {"format": FORMAT, "data": train.source_id, "image_size": spec.image_size, "channels": spec.channels,
            "value_range": [float(v) for v in spec.value_range], "class_names": list(train.class_names),
            "classifier": cfg.to_dict()}


def check_labelled(data: Any, what: str) -> None:
    if len(data) == 0 or bool((data.labels < 0).any()) or not data.class_names:
        raise UsageError(f"class-acc needs labelled data, but the {what} split is unlabeled; pass --data with "
                         "the labelled data (class sub-folders, QuickDraw, digits, mnist, ...) the model was "
                         "trained on")


def train_classifier(train: Any, value_range: tuple[float, float], cfg: ClassifierConfig,
                     device: torch.device) -> MLPClassifier:
    """Adam on cross-entropy, fixed seed: the same data and config give the same classifier on CPU."""
    from aecli.data import BatchLoader, to_model_input

    check_labelled(train, "train")
    with torch.random.fork_rng(devices=[]):  # a fixed init without disturbing the caller's RNG
        torch.manual_seed(cfg.seed)
        clf = MLPClassifier(train.channels * train.image_size ** 2, len(train.class_names), cfg.hidden)
    clf.to(device).train()
    opt = torch.optim.Adam(clf.parameters(), lr=cfg.lr)
    loader = BatchLoader(train, cfg.batch_size, shuffle=True, seed=cfg.seed, device=device)
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        for x_u8, labels in loader:
            loss = nn.functional.cross_entropy(clf(to_model_input(x_u8, value_range)), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return clf.eval()


def probabilities(clf: MLPClassifier, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax class probabilities [N, K] (float64 on CPU) of model-range images ``x``."""
    with torch.no_grad():
        return torch.cat([clf(x[i:i + batch_size]).double().softmax(1).cpu()
                          for i in range(0, len(x), batch_size)])


def real_accuracy(clf: MLPClassifier, data: Any, value_range: tuple[float, float],
                  device: torch.device) -> list[float | None]:
    """Per-class accuracy on real images (None for a class absent from ``data``)."""
    from aecli.data import BatchLoader, to_model_input

    preds = []
    for x_u8, _ in BatchLoader(data, 256, shuffle=False, device=device):
        preds.append(probabilities(clf, to_model_input(x_u8, value_range)).argmax(1))
    pred, labels = torch.cat(preds), data.labels
    return [float((pred[labels == k] == k).double().mean()) if bool((labels == k).any()) else None
            for k in range(len(data.class_names))]


def sample_scores(clf: MLPClassifier, sample: Callable[[int, int, torch.Generator], torch.Tensor], spec: DataSpec,
                  num_classes: int, per_class: int, batch_size: int, seed: int) -> tuple[list[float], list[float]]:
    """(accuracy, mean confidence) per class of ``per_class`` draws ``sample(k, b, gen)`` (model range).

    Samples are clamped to the data's value range first: the classifier only ever saw real pixels.
    """
    gen = torch.Generator().manual_seed(seed)
    acc, conf = [], []
    for k in range(num_classes):
        probs = []
        for start in range(0, per_class, batch_size):
            x = sample(k, min(batch_size, per_class - start), gen).float()
            probs.append(probabilities(clf, spec.to_model_range(spec.to_unit_range(x))))
        p = torch.cat(probs)
        acc.append(float((p.argmax(1) == k).double().mean()))
        conf.append(float(p[:, k].mean()))
    return acc, conf


class ClassifierCache:
    """Trained classifiers in memory and on disk: ``classifier-<key>.safetensors`` holds the weights,
    ``classifier-<key>.json`` the identity and architecture. The JSON is written last and the identity
    is stored in both, so a half-written or mismatched pair is retrained, never trusted."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory else None
        self.memory: dict[str, MLPClassifier] = {}
        self.trained = 0  # classifiers that had to be trained
        self.hits = 0  # lookups answered from memory or disk
        self.warnings: list[str] = []

    @staticmethod
    def key(ident: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]

    def paths(self, key: str) -> tuple[Path, Path] | None:
        if self.directory is None:
            return None
        return self.directory / f"classifier-{key}.safetensors", self.directory / f"classifier-{key}.json"

    def get_or_train(self, train: Any, spec: DataSpec, cfg: ClassifierConfig, device: torch.device) -> MLPClassifier:
        ident = identity(train, spec, cfg)
        key = self.key(ident)
        clf = self.memory.get(key)
        if clf is None:
            clf = self._load(key, ident, device)
        if clf is not None:
            self.hits += 1
        else:
            clf = train_classifier(train, spec.value_range, cfg, device)
            self.trained += 1
            self._save(key, ident, clf, len(train))
        self.memory[key] = clf
        return clf

    def _load(self, key: str, ident: dict[str, Any], device: torch.device) -> MLPClassifier | None:
        paths = self.paths(key)
        if paths is None or not (paths[0].is_file() and paths[1].is_file()):
            return None
        from safetensors import SafetensorError, safe_open

        weights, meta_path = paths
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with safe_open(str(weights), framework="pt") as fh:
                stored = json.loads((fh.metadata() or {}).get("identity", "null"))
                state = {k: fh.get_tensor(k) for k in fh.keys()}
            if meta.get("identity") != ident or stored != ident:
                return None
            clf = MLPClassifier(int(meta["in_features"]), len(ident["class_names"]),
                                tuple(ident["classifier"]["hidden"]))
            clf.load_state_dict(state, strict=True)
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError, TypeError):
            self.warnings.append(f"ignored unreadable classifier cache {weights}; retraining it")
            return None
        return clf.to(device).eval()

    def _save(self, key: str, ident: dict[str, Any], clf: MLPClassifier, n_train: int) -> None:
        import aecli

        paths = self.paths(key)
        if paths is None:
            return
        from safetensors.torch import save_file

        weights, meta_path = paths
        in_features = clf.net[1].in_features
        meta = {"identity": ident, "in_features": in_features, "train_images": n_train,
                "aecli": aecli.__version__, "torch": torch.__version__}
        try:
            with atomic_path(weights) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in clf.state_dict().items()}, str(tmp),
                          metadata={"identity": json.dumps(ident, sort_keys=True)})
            write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        except OSError as exc:  # a read-only shared cache must not fail the evaluation
            self.warnings.append(f"could not write the classifier cache {weights} ({exc.strerror}); "
                                 "pass --cache with a writable folder")
