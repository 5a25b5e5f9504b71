"""Turn a TrainConfig into data sets, a model and the DataSpec the checkpoint will carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aecli.data.identity import resolved_path
from aecli.data.sources import native_size, natural_format  # noqa: F401  (natural_format: config.py)
from aecli.data.spec import DataSpec
from aecli.errors import UsageError


def pick_image_size(family: str, model_kwargs: dict[str, Any], wanted: int | None, natural: int) -> int:
    """The explicit size, or the smallest size ≥ the source's natural size that the family takes."""
    if wanted is not None:
        return wanted
    from aecli.models import get_family

    probe = get_family(family).Config(**{**model_kwargs, "image_size": natural})
    sizes = [s for s in probe.valid_sizes() if s >= natural]
    if not sizes:
        raise UsageError(f"{family} cannot take images of {natural} px or larger with these options; "
                         "pass --image-size")
    return sizes[0]


@dataclass
class Prepared:
    train: Any  # ImageSet
    val: Any  # ImageSet
    spec: DataSpec
    model_kwargs: dict[str, Any]


def prepare(cfg: Any, progress: bool) -> Prepared:
    """Open the data and resolve the model options that depend on it."""
    from aecli.data import open_splits

    natural_size, natural_channels = natural_format(cfg.data)
    kwargs = dict(cfg.model)
    channels = cfg.channels or natural_channels
    if cfg.recon == "bce" and "output_activation" not in kwargs:
        kwargs["output_activation"] = "sigmoid"  # BCE needs outputs in [0, 1]
    size = pick_image_size(cfg.family, kwargs, cfg.image_size, natural_size)
    common = dict(image_size=size, channels=channels, val_count=cfg.val_count, val_fraction=cfg.val_fraction,
                  data_root=cfg.data_root, download=cfg.download, strict=cfg.strict_data, cache_dir=cfg.cache,
                  workers=cfg.workers, progress=progress)
    train, val = open_splits(cfg.data, ("train", "val"), **common)
    if len(train) == 0:
        raise UsageError(f"the training split of {cfg.data} is empty; lower --val-count/--val-fraction")
    num_classes = int(kwargs.get("num_classes", 0) or 0)
    if num_classes:
        if not train.class_names:
            raise UsageError(f"--num-classes needs labelled data, but {cfg.data} has no classes "
                             "(use class sub-folders, or a labelled dataset)")
        if num_classes != len(train.class_names):
            raise UsageError(f"--num-classes {num_classes} but {cfg.data} has {len(train.class_names)} classes "
                             f"({', '.join(train.class_names[:10])}); pass --num-classes {len(train.class_names)}")
    kwargs.update(image_size=size, channels=channels)
    from aecli.models import make_config

    config = make_config(cfg.family, **kwargs)
    value_range = (0.0, 1.0) if config.output_activation == "sigmoid" else (-1.0, 1.0)
    spec = DataSpec(image_size=size, channels=channels, value_range=value_range,
                    class_names=list(train.class_names), source=cfg.data, source_path=resolved_path(cfg.data),
                    val_count=cfg.val_count,
                    val_fraction=cfg.val_fraction)
    return Prepared(train=train, val=val, spec=spec, model_kwargs=kwargs)


SUBSTITUTE = "--data shapes:240 --image-size 32 --val-count 24"  # a recipe's one-line quick check


def fit_warnings(cfg: Any, n_images: int, n_train: int, global_batch: int, image_size: int,
                 parameters: int) -> list[str]:
    """Settings that no longer fit the data they run on: a recipe written for FFHQ pointed at the
    embedded digits, or the default batch size on a folder of 200 images."""
    warnings = []
    if cfg.val_count and cfg.val_count * 4 > n_images:
        warnings.append(f"--val-count {cfg.val_count} takes {cfg.val_count / n_images:.0%} of the {n_images:,} "
                        f"images of {cfg.data}, leaving {n_train:,} to train on; the setting was written for a "
                        f"larger data set (lower it, e.g. --val-count {max(1, n_images // 10)})")
    native = native_size(cfg.data)
    if native and image_size > 4 * native:
        warnings.append(f"{cfg.data} images are {native}×{native} px, upscaled {image_size / native:g}× to "
                        f"{image_size} px for a {parameters:,}-parameter model: the settings were written for "
                        f"other data; for a quick check of a recipe use {SUBSTITUTE}")
    steps = n_train // global_batch
    unused = n_train - steps * global_batch
    if steps and unused > 0.1 * n_train:
        smaller = next((b for b in (cfg.batch_size // 2 ** i for i in range(1, 8))
                        if b >= 1 and n_train % (b * global_batch // cfg.batch_size) <= 0.05 * n_train), None)
        warnings.append(f"{n_train:,} training images at batch {global_batch}: {steps} step(s) per epoch and "
                        f"{unused} images unused each epoch (the last partial batch is dropped)"
                        + (f"; --batch-size {smaller} uses nearly all of them" if smaller else ""))
    return warnings
