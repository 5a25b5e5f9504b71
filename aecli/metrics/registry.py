"""The metric registry: each metric of `aecli evaluate` is one class, registered with ``@register_metric``.

A metric's class attributes are its declaration, read by the CLI without importing torch (the
``--metrics`` help, ``aecli weights --metrics``, shell completion, the fast pretrained-files check):
its name, its kind, the pretrained files it needs, its help, the columns it reports. Its methods
compute it; they import torch and the implementation modules when called, so the declarations stay
import-light.

Kinds, and what the one data pass of aecli.metrics.evaluate does with each:
- ``per-image``: ``score(pred, ref)`` gives one value per image of a batch in [0, 1]; reported as mean
  ± std over images (aecli.metrics.per_image.PerImageMetric). Checkpoints with an encoder, paired
  folders and the PCA baseline.
- ``latent``: ``start(row, model)`` begins a pass, ``update(batch)`` sees each batch with the model's
  output (``batch.out``), ``finish(row)`` writes the values. Checkpoints with an encoder.
- ``distribution``: ``score(row, feats, ref, backend)`` from Inception features of a whole image set
  against the reference set's; ``of`` says which set: the ``reconstructions`` or prior ``samples``.
- ``class``: ``evaluate(row, model, spec, source)`` does its own work (class-conditional models).

To add a metric: a module with one ``@register_metric`` class, imported in aecli/metrics/__init__.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, TypeVar

from aecli.errors import UsageError
from aecli.weights import INCEPTION, LPIPS, missing_files, remedy

PER_IMAGE, LATENT, DISTRIBUTION, CLASS = "per-image", "latent", "distribution", "class"
KINDS = (PER_IMAGE, LATENT, DISTRIBUTION, CLASS)


@dataclass
class Row:
    """One evaluated model (or folder pair): values (None = n/a) and a note per metric."""

    name: str
    family: str
    n: int = 0
    image_size: str = ""
    samples: int | None = None
    values: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # which source, split rule and N (Provenance)


@dataclass
class Batch:
    """What the data pass hands each per-image and latent metric, one batch at a time."""

    pred: Any  # reconstructions (or predicted images), (B, C, H, W) in [0, 1], on the device
    ref: Any  # the evaluation images, same shape, in [0, 1]
    out: Any = None  # the model's output (aecli.models AEOutput); None for folders and the PCA baseline


class Metric:
    """Base of every metric. An instance lives for one evaluation (``ev``: the aecli.metrics.evaluate
    Evaluator, which holds the config, the device and the shared networks)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    help: ClassVar[str]  # one phrase for `aecli evaluate --help`
    definition: ClassVar[str]  # how the number is made: printed under the table and in --json "definitions"
    columns: ClassVar[tuple[str, ...]] = ()  # value keys, display order; "<key>_std" for a spread. () = (name,)
    weights: ClassVar[tuple[str, ...]] = ()  # pretrained file groups (aecli.weights): "lpips", "inception"
    default: ClassVar[bool] = False  # in `evaluate` without --metrics
    note_key: ClassVar[str] = ""  # the key of its notes; "" = its name
    paired: ClassVar[str] = ""  # why it is n/a for --pred/--ref folders; "" = computed there
    of: ClassVar[str] = ""  # distribution metrics: "reconstructions" or "samples"

    def __init__(self, ev: Any) -> None:
        self.ev = ev

    @classmethod
    def value_columns(cls) -> tuple[str, ...]:
        return cls.columns or (cls.name,)

    @classmethod
    def notes_key(cls) -> str:
        return cls.note_key or cls.name

    @classmethod
    def uses_encoder(cls) -> bool:
        """Whether it reads the evaluation set through the model (n/a for families without an encoder)."""
        return cls.kind in (PER_IMAGE, LATENT) or cls.of == "reconstructions"

    @classmethod
    def report_columns(cls, rows: list[Any]) -> list[str]:
        """Its columns in a report of ``rows`` (class-acc adds the per-class keys the rows have)."""
        return list(cls.value_columns())

    def report_info(self) -> dict[str, Any]:
        """Entries for the report's info (JSON); called once, after the last row."""
        return {}

    # -- per-image and latent metrics: the data pass -------------------------------------------------------
    def start(self, row: Any, model: Any) -> None:
        """A pass over one evaluation set begins (``model`` None for folders and the PCA baseline)."""

    def update(self, batch: Batch) -> None:
        """One batch of that pass."""

    def finish(self, row: Any) -> None:
        """The pass is over: write the values and notes of ``row``."""

    def na(self, row: Any, reason: str) -> None:
        """Not applicable to ``row``: every value None, ``reason`` as its note."""
        for key in self.value_columns():
            if not key.endswith("_std"):
                row.values[key] = None
        row.notes[self.notes_key()] = f"n/a: {reason}"


M = TypeVar("M", bound=type[Metric])
_REGISTRY: dict[str, type[Metric]] = {}


def register_metric(cls: M) -> M:
    """Class decorator: make ``cls`` available to `aecli evaluate --metrics` under ``cls.name``."""
    if cls.kind not in KINDS:
        raise ValueError(f"metric {cls.name!r}: kind must be one of {KINDS}, got {cls.kind!r}")
    if cls.name in _REGISTRY:
        raise ValueError(f"metric {cls.name!r} is registered twice")
    unknown = set(cls.weights) - {LPIPS, INCEPTION}
    if unknown:
        raise ValueError(f"metric {cls.name!r}: unknown pretrained groups {sorted(unknown)}")
    if cls.kind == DISTRIBUTION and cls.of not in ("reconstructions", "samples"):
        raise ValueError(f"metric {cls.name!r}: a distribution metric compares 'reconstructions' or 'samples'")
    _REGISTRY[cls.name] = cls
    return cls


def metric_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_metric(name: str) -> type[Metric]:
    return _REGISTRY[name]


def parse_metrics(names: Iterable[str]) -> list[str]:
    """Known, lower-cased, de-duplicated metric names in the given order; a clear error otherwise."""
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if name not in _REGISTRY:
            raise UsageError(f"unknown metric {raw!r}; choose from {', '.join(_REGISTRY)}")
        if name not in out:
            out.append(name)
    if not out:
        raise UsageError(f"--metrics is empty; choose from {', '.join(_REGISTRY)}")
    return out


def pretrained_needs(names: Iterable[str]) -> list[str]:
    """The pretrained file groups (aecli.weights) the metrics ``names`` need, in a stable order."""
    needs = {group for name in parse_metrics(names) for group in get_metric(name).weights}
    return [g for g in (LPIPS, INCEPTION) if g in needs]


def default_metrics() -> list[str]:
    return [name for name, cls in _REGISTRY.items() if cls.default]


def metrics_help() -> str:
    """`aecli evaluate --metrics` help: every registered metric with its phrase, then the default."""
    listing = "; ".join(f"{name} ({cls.help})" for name, cls in _REGISTRY.items())
    offline = [n for n in default_metrics() if not get_metric(n).weights]
    optional = [n for n in default_metrics() if get_metric(n).weights]
    inception = [n for n, c in _REGISTRY.items() if INCEPTION in c.weights]
    return (f"Comma list of: {listing}. Default: {', '.join(offline)}"
            + (f", plus {', '.join(optional)} when its pretrained weights are on this machine (skipped with a "
               "note saying how to get them otherwise)" if optional else "")
            + f"; {', '.join(inception)} need the Inception weights.")


def weights_metrics_help() -> str:
    """`aecli weights --metrics` help: which metrics need which files."""
    groups = {LPIPS: "the LPIPS backbone", INCEPTION: "the Inception"}
    parts = [f"{', '.join(n for n, c in _REGISTRY.items() if g in c.weights)} ({what})" for g, what in groups.items()]
    return f"Which metrics' files: {' and/or '.join(parts)}; other metrics need none."


def weight_metric_names() -> tuple[str, ...]:
    """Metrics that need a pretrained file, for completing `aecli weights --metrics`."""
    return tuple(name for name, cls in _REGISTRY.items() if cls.weights)


def split_available(metrics: Iterable[str], lpips_net: str = "alex", weights_dir: str | None = None,
                    inception_weights: str | None = None,
                    lpips_weights: str | None = None) -> tuple[list[str], list[str], str]:
    """(metrics whose pretrained files are on disk or need none, those whose files are missing, one line
    saying what is missing and how to get it). Lets a default metric list work offline. No torch."""
    usable, skipped, problems, needs = [], [], [], set()
    for metric in metrics:
        groups = pretrained_needs([metric])
        missing = [f"{need.path} {problem}" for need, problem in missing_files(groups, lpips_net, weights_dir,
                                                                               inception_weights, lpips_weights)]
        (skipped if missing else usable).append(metric)
        needs.update(groups if missing else ())
        problems += [m for m in missing if m not in problems]
    note = ""
    if skipped:
        note = (f"skipped {', '.join(skipped)}: pretrained weights not on this machine ({'; '.join(problems)}); "
                f"to include {'it' if len(skipped) == 1 else 'them'}, " + remedy(needs, lpips_net, weights_dir))
    return usable, skipped, note
