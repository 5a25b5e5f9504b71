"""Latent arithmetic (seed 002's encoding arithmetic, the "glasses" experiment).

- Attribute vectors: v = mean latent of folder P (e.g. faces with glasses) − mean latent of folder M
  (faces without); every image of a third folder is encoded, v is added with each ``--scale`` and the
  result decoded. The grid has one row per image: the original, then one column per scale.
- Expressions: ``"man_glasses.png - man.png + woman.png"`` combines the latents of single images (or the
  mean latent of a folder, or ``0.5*img.png`` for a weighted term) and decodes the result.
"""

from __future__ import annotations

import math

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from aecli.data import open_for
from aecli.devices import resolve_device
from aecli.errors import UsageError
from aecli.images import save_grid
from aecli.inference.common import check_png_path, labels_for, load_for, parse_class, precheck, tty
from aecli.inference.latents import decode_latents, encode_images, save_latents

DEFAULT_APPLY_N = 8  # images edited when --apply defaults to the training data (a grid row each)


@dataclass
class ArithmeticResult:
    out: Path
    vector: torch.Tensor  # the attribute vector (folders) or the resulting latent (expression)
    images: torch.Tensor  # the grid's images in [0, 1], row-major
    rows: int
    columns: int
    description: str
    data_lines: list[str] = field(default_factory=list)  # which source, split rule and N each input came from


@dataclass
class _Model:
    model: Any
    spec: Any
    device: torch.device
    batch_size: int
    class_index: int | None
    data_root: str | None
    progress: bool
    checkpoint: Any = None

    def open(self, source: str | Sequence[str] | None, limit: int | None = None) -> Any:
        """``source`` as every command opens it (aecli.data.open_for's auto split): all of a folder or
        image; of the checkpoint's training data (also when no source is given) the held-out images."""
        return open_for(self.spec, source, checkpoint=self.checkpoint, split="auto",
                        limit=limit, data_root=self.data_root, progress=tty(self.progress))

    def latents(self, data: Any, what: str) -> torch.Tensor:
        return encode_images(self.model, data, self.spec.value_range, batch_size=self.batch_size,
                             device=self.device, progress=self.progress, description=f"encoding {what}")

    def decode(self, z: torch.Tensor, data_labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = labels_for(self.model, len(z), self.class_index, data_labels)
        return decode_latents(self.model, z, self.spec, labels, batch_size=self.batch_size)


def _open_model(checkpoint: Any, command: str, device: str, ema: bool, batch_size: int, class_name: str | None,
                data_root: str | None, progress: bool) -> _Model:
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    precheck(checkpoint, command, encoder=True, decoder=True)
    ckpt = load_for(checkpoint, resolve_device(device), command, ema=ema, encoder=True, decoder=True)
    model, spec = ckpt.model, ckpt.data
    k = model.config.num_classes if model.is_conditional else 0
    return _Model(model, spec, next(model.parameters()).device, batch_size,
                  parse_class(class_name, spec.class_names, k), data_root, progress, checkpoint)


@torch.no_grad()
def arithmetic(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, plus: str, minus: str,
    apply: str | None = None,
    scales: Sequence[float] = (1.0,), n: int | None = None, batch_size: int = 64, device: str = "auto",
    class_name: str | None = None, ema: bool = False, save_vector: str | os.PathLike[str] | None = None,
    data_root: str | None = None, progress: bool = True, tile_size: int | None = None,
) -> ArithmeticResult:
    """Add ``scale · (mean z(plus) − mean z(minus))`` to every image of ``apply`` (None: the first
    ``n`` (default DEFAULT_APPLY_N) held-out images of the checkpoint's training data); grid at ``out``."""
    out_path = check_png_path(out)
    scales = [float(s) for s in scales]
    if not scales:
        raise UsageError("--scale needs at least one value, e.g. --scale 0,0.5,1")
    if not all(math.isfinite(s) for s in scales):  # nan/inf scales decode to garbage images
        raise UsageError(f"--scale values must be finite numbers, got {','.join(f'{s:g}' for s in scales)}")
    if n is not None and n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    m = _open_model(checkpoint, "arithmetic", device, ema, batch_size, class_name, data_root, progress)
    with_attr, without = m.open(plus), m.open(minus)
    vector = m.latents(with_attr, f"--plus {plus}").mean(0) - m.latents(without, f"--minus {minus}").mean(0)
    targets = m.open(apply, limit=n or (None if apply else DEFAULT_APPLY_N))
    apply = apply or targets.provenance.source
    z = m.latents(targets, f"--apply {apply}")
    columns = [targets.take(torch.arange(len(targets))).float() / 255.0]
    for s in scales:
        columns.append(m.decode(z + s * vector, targets.labels))
    # Row-major: image i's original, then its edit at every scale.
    images = torch.stack(columns, dim=1).flatten(0, 1)
    save_grid(images, out_path, len(columns), row_labels=[Path(name).name for name in targets.names],
              column_labels=["original", *(f"scale {s:g}" for s in scales)],
              title=f"v = mean z({plus}) − mean z({minus}); each column decodes z + scale·v", tile_size=tile_size)
    if save_vector is not None:
        save_latents(save_vector, {"vector": vector}, [], {"plus": plus, "minus": minus,
                                                          "checkpoint": str(checkpoint)})
    desc = (f"attribute vector mean({plus}) − mean({minus}), |v| = {float(vector.norm()):.3g}, applied to "
            f"{len(targets)} image(s) at scale(s) {', '.join(f'{s:g}' for s in scales)}")
    lines = [f"{opt}: {d.provenance.line(len(d))}" for opt, d in
             (("--plus", with_attr), ("--minus", without), ("--apply", targets))]
    return ArithmeticResult(out_path, vector, images, len(targets), len(columns), desc, lines)


def parse_expression(expr: str) -> list[tuple[float, str]]:
    """``"a.png - b.png + 0.5*c/"`` → [(1, "a.png"), (-1, "b.png"), (0.5, "c/")]. Operators are separate
    words; quote paths with spaces."""
    try:
        tokens = shlex.split(expr)
    except ValueError as exc:
        raise UsageError(f"--expr {expr!r}: {exc}") from None
    terms: list[tuple[float, str]] = []
    sign: float | None = 1.0
    for tok in tokens:
        if tok in ("+", "-"):
            if sign is not None and terms:
                raise UsageError(f"--expr {expr!r}: two operators in a row")
            sign = (sign or 1.0) * (-1.0 if tok == "-" else 1.0)
            continue
        if sign is None:
            raise UsageError(f"--expr {expr!r}: put + or - (with spaces) between operands, before {tok!r}")
        coef, star, source = tok.partition("*")
        weight = 1.0
        if star:
            try:
                weight = float(coef)
            except ValueError:
                raise UsageError(f"--expr {expr!r}: {coef!r} in {tok!r} is not a number") from None
        else:
            source = tok
        terms.append((sign * weight, source))
        sign = None
    if not terms or sign is not None:
        raise UsageError(f"--expr {expr!r} must be operands joined by + and -, e.g. \"a.png - b.png + c.png\"")
    return terms


def expression_labels(terms: list[tuple[float, str]]) -> list[str]:
    """Column labels of an --expr grid: each operand with its operator and weight, then "= result"."""
    labels = []
    for i, (weight, source) in enumerate(terms):
        sign = "−" if weight < 0 else ("" if i == 0 else "+")
        coef = "" if abs(weight) == 1 else f"{abs(weight):g}×"
        name = Path(source.rstrip("/")).name or source
        what = name if Path(source).suffix else f"mean of {name}/"
        labels.append(f"{sign} {coef}{what}".strip())
    return [*labels, "= result"]


@torch.no_grad()
def expression(
    checkpoint: str | os.PathLike[str], expr: str, out: str | os.PathLike[str], *, batch_size: int = 64,
    device: str = "auto", class_name: str | None = None, ema: bool = False, data_root: str | None = None,
    progress: bool = True, tile_size: int | None = None,
) -> ArithmeticResult:
    """Evaluate a latent expression over images (or folders' mean latents) and decode the result.

    The grid's row: each operand (the image itself; a folder shows its decoded mean latent), then the
    decoded result."""
    out_path = check_png_path(out)
    terms = parse_expression(expr)
    m = _open_model(checkpoint, "arithmetic", device, ema, batch_size, class_name, data_root, progress)
    total = torch.zeros(m.model.latent_shape)
    shown, first_labels = [], None
    for weight, source in terms:
        data = m.open(source)
        z = m.latents(data, source).mean(0)
        total += weight * z
        if first_labels is None:
            first_labels = data.labels[:1]
        if len(data) == 1:
            shown.append(data.take([0]).float() / 255.0)
        else:
            shown.append(m.decode(z[None], data.labels[:1]))
    shown.append(m.decode(total[None], first_labels))
    images = torch.cat(shown)
    text = " ".join(f"{'-' if w < 0 else '+'} {'' if abs(w) == 1 else f'{abs(w):g}*'}{s}" for w, s in terms)
    text = text.removeprefix("+ ")
    save_grid(images, out_path, len(images), column_labels=expression_labels(terms), title=f"decoded {text}",
              tile_size=tile_size)
    return ArithmeticResult(out_path, total, images, 1, len(images), f"decoded {text}")
