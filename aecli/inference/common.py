"""Plumbing shared by the inference commands: loading a checkpoint for a command (refusing families
that cannot do it, with the reason), class labels, batches and safe output names."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import torch

from aecli.atomic import check_writable
from aecli.checkpoint import load_model, read_header
from aecli.data import BatchLoader
from aecli.errors import UsageError
from aecli.models import get_family, list_models, supported_commands

# Why a family cannot do something, in the words a user needs (see `aecli models` for the table).
_NO_ENCODER = "it has no encoder (a GAN only generates images from z)"
_NO_LATENT_DECODE = "its decoder needs the encoder's skip features, so a latent alone cannot be decoded"
_NO_PRIOR = "it is a plain autoencoder with no prior to sample from; pass --fit DATA to fit a Gaussian to its latents"


def check_capability(model: Any, path: str | os.PathLike[str], command: str, *, encoder: bool = False,
                     decoder: bool = False, prior: bool = False, sampling: bool = False) -> None:
    """Raise UsageError naming the family, the command and why, when ``model`` (a model or a family
    class) lacks a capability. ``sampling``: `sample`, with or without --fit."""
    reasons = []
    if encoder and not model.has_encoder:
        reasons.append(_NO_ENCODER)
    if decoder and not model.decodes_latent:
        reasons.append(_NO_LATENT_DECODE)
    if sampling and model.sample_refusal:
        reasons.append(model.sample_refusal)
    elif prior and not model.has_prior:
        reasons.append(_NO_PRIOR)
    if reasons:
        cls = model if isinstance(model, type) else type(model)
        can = ", ".join(c for c in supported_commands(cls) if c != "train")
        raise UsageError(f"{path}: `{command}` does not work with a {model.family} checkpoint: "
                         f"{'; '.join(reasons)} ({model.family} supports: {can or 'training only'})")


def precheck(path: str | os.PathLike[str], command: str, **needs: bool) -> Any:
    """Read only the header and refuse an unsuitable family before any weights or data are loaded."""
    header = read_header(path)
    if header.family in list_models():  # an unknown family is load_model's (clearer) error
        check_capability(get_family(header.family), path, command, **needs)
    return header


def load_for(path: str | os.PathLike[str], device: torch.device, command: str, *, ema: bool = False,
             **needs: bool) -> Any:
    """load_model + check_capability → LoadedCheckpoint."""
    ckpt = load_model(path, device, ema=ema)
    check_capability(ckpt.model, path, command, **needs)
    return ckpt


def parse_class(text: str | None, class_names: Sequence[str], num_classes: int) -> int | None:
    """`--class` as an index or a class name → index (None when not given)."""
    if text is None:
        return None
    if num_classes == 0:
        raise UsageError("--class needs a conditional checkpoint (trained with --num-classes); this one is not")
    if text in class_names:
        return list(class_names).index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < num_classes:
        return int(text)
    shown = ", ".join(class_names[:20]) if class_names else f"0 … {num_classes - 1}"
    raise UsageError(f"--class {text!r} is not a class of this checkpoint; use an index 0 … {num_classes - 1} "
                     f"or a name ({shown})")


def labels_for(model: Any, n: int, class_index: int | None, data_labels: torch.Tensor | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Class labels for decoding ``n`` images: None for unconditional models; else ``--class``, else the
    data's own labels when every image has one, else a clear error."""
    if not model.is_conditional:
        if class_index is not None:
            raise UsageError(f"--class needs a conditional checkpoint; this {model.family} is not conditional")
        return None
    if class_index is not None:
        return torch.full((n,), class_index, dtype=torch.int64, device=device)
    k = model.config.num_classes
    if data_labels is not None and len(data_labels) == n and bool(((data_labels >= 0) & (data_labels < k)).all()):
        return data_labels.to(device=device, dtype=torch.int64)
    raise UsageError(f"this {model.family} checkpoint is conditional ({k} classes) and these images have no "
                     f"usable labels; give --class K")


def tty(progress: bool) -> bool:
    """Decoding progress (aecli.data draws a rich bar) only in a terminal: batch logs get no redraws."""
    return progress and sys.stdout.isatty()


def batches(data: Any, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) of an ImageSet in order, on ``device``."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    yield from BatchLoader(data, batch_size, shuffle=False, device=device)


_UNSAFE = re.compile(r"[\x00-\x1f<>:\"|?*\\]")


def output_name(name: str, suffix: str = ".png") -> str:
    """A relative output path derived from an input name that cannot leave the output folder.

    Folder inputs keep their sub-folders ("cls/img.jpg" → "cls/img.png", so `aecli evaluate --pred`
    pairs them with the inputs by relative name); an absolute path keeps only its file name; '.' and
    '..' parts are dropped; characters unsafe in file names (':' in "digits:3", control characters)
    become '_'.
    """
    text = name.replace("\\", "/")
    absolute = text.startswith("/") or bool(re.match(r"^[A-Za-z]:/", text))
    parts = [p for p in PurePosixPath(text).parts if p not in ("", "/", ".", "..")]
    if absolute:
        parts = parts[-1:]
    parts = [_UNSAFE.sub("_", p).strip() or "_" for p in parts] or ["image"]
    stem = parts[-1]
    base, dot, ext = stem.rpartition(".")
    if dot and base and len(ext) <= 5:
        stem = base
    return "/".join([*parts[:-1], stem + suffix])


def unique_output_names(names: Sequence[str], suffix: str = ".png") -> list[str]:
    """``output_name`` of each input, made unique ("x.png", "x-1.png", …) when two inputs map to one file."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate = output_name(name, suffix)
        stem, k = candidate[: len(candidate) - len(suffix)], 1
        while candidate.lower() in seen:
            candidate, k = f"{stem}-{k}{suffix}", k + 1
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that would resolve outside ``root`` (e.g. through a symlink)."""
    target = root / relative
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(target)]) != real_root:
        raise UsageError(f"output name {relative!r} would be written outside {root}; rename the input")
    return target


def checkpoint_labels(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Short distinct names for checkpoints: the file stem, or "run-stem" when stems repeat
    (runs/a/best.safetensors and runs/b/best.safetensors → "a-best", "b-best")."""
    stems = [Path(p).stem for p in paths]
    labels = [s if stems.count(s) == 1 else f"{Path(p).resolve().parent.name}-{s}" for p, s in zip(paths, stems)]
    out: list[str] = []
    for label in labels:
        label = _UNSAFE.sub("_", label).replace("/", "_") or "checkpoint"
        candidate, k = label, 1
        while candidate in out:
            candidate, k = f"{label}-{k}", k + 1
        out.append(candidate)
    return out


def check_png_path(out: str | os.PathLike[str], option: str = "--out") -> Path:
    p = check_writable(out, option)
    if p.suffix.lower() != ".png":
        raise UsageError(f"{option} must be a .png file, got {out}")
    if p.is_dir():
        raise UsageError(f"{option} {out} is a folder; give a .png file name")
    return p
