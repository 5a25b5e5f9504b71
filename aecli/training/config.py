"""Everything `aecli train` needs, as one dataclass: what the CLI and TOML files fill in, and what
the run folder records (config.json) so a run can be resumed and reported exactly."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from aecli.errors import UsageError
from aecli.losses.config import LossConfig
from aecli.options import need, option, option_info

OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "plateau")
PRECISIONS = ("fp32", "bf16", "fp16")
AUGMENTS = ("none", "hflip", "dihedral")  # aecli.data.augment
DEFAULT_EPOCHS = 10


@dataclass
class DataConfig:
    """What to train on. The bounds are training's: it needs a non-empty validation split (the best
    checkpoint is chosen on it) and images a convolutional family can take."""

    PANEL = "Data"

    data: str = option("digits", "Image folder, QuickDraw .npy folder, mnist|fashion-mnist|cifar10|celeba, or "
                       "embedded digits|shapes[:N].")
    data_root: str | None = option(None, "Where torchvision datasets live.", envvar="AECLI_DATA_ROOT",
                                   resumable=True)
    download: bool = option(False, "Download a torchvision dataset (needs internet).")
    # None: the source's natural size rounded up to what the family takes
    image_size: int | None = option(None, "Square image size (default: the data's, fitted to the family).")
    # None: the source's channels (1 for digits/mnist/quickdraw, else 3)
    channels: int | None = option(None, "1 or 3 (default: the data's).")
    val_count: int | None = option(None, "First N images are validation (the FFHQ ablation, seed 000: 1000).")
    val_fraction: float | None = option(None, "A fixed random fraction is validation (default 0.1).")
    augment: str = option("none", "Random training-time transforms: none|hflip (mirror left-right)|dihedral "
                          "(flips and quarter turns: photo crops, textures, microscopy).")
    strict_data: bool = option(False, "Unreadable images are an error instead of skipped.")
    cache: str | None = option(None, "Folder for the decoded uint8 image cache (reused across runs).",
                               envvar="AECLI_CACHE", resumable=True)

    def validate(self) -> None:
        need(self.image_size is None or self.image_size >= 4, f"--image-size must be at least 4, got {self.image_size}")
        need(self.channels in (None, 1, 3), f"--channels must be 1 or 3, got {self.channels}")
        need(self.val_fraction is None or 0 < self.val_fraction < 1,
             f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        need(self.val_count is None or self.val_count >= 1, f"--val-count must be at least 1, got {self.val_count}")
        need(self.augment in AUGMENTS, f"--augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")


@dataclass
class OptimConfig:
    """How long and how to optimise."""

    PANEL = "Optimisation"

    # None: 10, or as many as --max-steps needs when that is given
    epochs: int | None = option(None, "Epochs to train (default 10; with --max-steps, as many as it needs; on "
                                "resume: the new total).", resumable=True)
    max_steps: int = option(0, "Stop after exactly this many optimizer steps, resumable (0: no limit); with "
                            "--epochs, whichever comes first.", resumable=True)
    max_time: str | None = option(None, "Stop at the first step after this wall time (600, 90m, 1h30m, "
                                  "DD:HH:MM:SS), save and exit 0; set it a little under a Slurm time limit.",
                                  resumable=True)
    batch_size: int = option(64, "Batch size per process (per micro-batch with --grad-accum-steps).")
    grad_accum_steps: int = option(1, "Accumulate gradients of K micro-batches per optimizer step: effective "
                                   "batch = batch size × K (× processes).")
    lr: float = option(1e-3, "Learning rate (gan: the generator's).")
    lr_d: float | None = option(None, "Discriminator learning rate (gan default 4×lr).")  # seed 003's TTUR
    optimizer: str = option("adam", "adam|adamw.")
    betas: tuple[float, float] = option((0.9, 0.999), "Adam betas (the AE-vs-VAE comparison, seed 001: 0.5,0.999).")
    weight_decay: float = option(0.0, "Weight decay (L2 for adam, decoupled for adamw).")
    # with warm-up: the default a new user gets (BENCHMARKS.md, model quality)
    scheduler: str = option("cosine", "none|step|cosine|plateau (cosine: decays to 0 at the last step).")
    warmup_steps: int = option(50, "Linear LR warm-up steps (0: none).")
    step_size: int = option(10, "step scheduler: epochs between decays.")
    gamma: float = option(0.5, "step/plateau decay factor.")  # seed 001: 0.5
    patience: int = option(10, "plateau patience in epochs.")  # seed 001: 10
    grad_clip: float = option(0.0, "Clip gradient norm (0: off).")
    ema: float = option(0.0, "Keep EMA weights with this decay, e.g. 0.999 (0: off); the other commands' --ema "
                        "uses them.", flag="--ema-decay")
    seed: int = option(0, "Random seed.")

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]

    def validate(self) -> None:
        need(self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        need(self.max_steps >= 0, f"--max-steps must be >= 0 (0: no limit), got {self.max_steps}")
        if self.max_time is not None:
            parse_duration(self.max_time)
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(self.grad_accum_steps >= 1, f"--grad-accum-steps must be at least 1, got {self.grad_accum_steps}")
        need(self.lr > 0, f"--lr must be positive, got {self.lr}")
        need(self.lr_d is None or self.lr_d > 0, f"--lr-d must be positive, got {self.lr_d}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
             f"--betas must be two numbers in [0, 1), e.g. 0.5,0.999; got {self.betas}")
        need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}")
        need(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        need(self.step_size >= 1, f"--step-size must be at least 1 epoch, got {self.step_size}")
        need(0 < self.gamma <= 1, f"--gamma must be a decay factor in (0, 1], e.g. 0.5; got {self.gamma}")
        need(self.patience >= 0, f"--patience must be >= 0 epochs, got {self.patience}")
        need(self.grad_clip >= 0, f"--grad-clip must be >= 0, got {self.grad_clip}")
        need(self.ema == 0 or 0 < self.ema < 1, f"--ema-decay must be a decay in (0, 1), e.g. 0.999; got {self.ema}")

    def planned_epochs(self, steps_per_epoch: int) -> int:
        """Epochs to run: --epochs, else as many as --max-steps needs, else 10."""
        if self.epochs is not None:
            return self.epochs
        if self.max_steps:
            return max(1, -(-self.max_steps // max(1, steps_per_epoch)))
        return DEFAULT_EPOCHS


@dataclass
class RuntimeConfig:
    """Where and how the computation runs (never what it computes, the precision aside)."""

    PANEL = "Runtime"

    device: str = option("auto", "auto|cpu|cuda|cuda:N.", envvar="AECLI_DEVICE", resumable=True)
    precision: str = option("fp32", "fp32|bf16|fp16 (autocast).")
    compile: bool = option(False, "torch.compile the model.", flag_only=True)
    sync_bn: bool = option(False, "SyncBatchNorm across processes (CUDA).", flag_only=True)
    workers: int | None = option(None, "Decoding processes (default: all cores).", resumable=True)

    def validate(self) -> None:
        need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}")
        need(self.workers is None or self.workers >= 1, f"--workers must be at least 1, got {self.workers}")


@dataclass
class OutputConfig:
    """The run folder and what is logged to it."""

    PANEL = "Output"

    out: str | None = option(None, "Run folder (default runs/<family>-<time>).", envvar="AECLI_OUT")
    log_every: int = option(50, "Log a line every N steps.", resumable=True)
    save_every_steps: int = option(0, "Also checkpoint every N steps (long epochs).", resumable=True)
    keep: int = option(0, "Keep only the last N periodic checkpoints (0: all).", resumable=True)
    grid_size: int = option(8, "Images per row of the per-epoch grids (recon: this many validation images; "
                            "samples: this many per row).", flag="--grid-columns", resumable=True)
    trackers: list[str] = option([], "Experiment tracker (repeatable): tensorboard, wandb (offline), mlflow "
                                 "(local file store), csv.", flag="--tracker", param="tracker",
                                 complete="trackers", resumable=True)
    # the same as trackers=["tensorboard"], kept for old command lines
    tensorboard: bool = option(False, "Same as --tracker tensorboard.", flag_only=True, resumable=True)
    requeue: bool = option(False, "On SIGTERM/SIGUSR1, `scontrol requeue` the Slurm job.", flag_only=True,
                           resumable=True)

    def validate(self) -> None:
        need(self.log_every >= 1, f"--log-every must be at least 1, got {self.log_every}")
        need(self.save_every_steps >= 0, f"--save-every-steps must be >= 0, got {self.save_every_steps}")
        need(self.keep >= 0, f"--keep must be >= 0, got {self.keep}")
        need(self.grid_size >= 1, f"--grid-columns must be at least 1, got {self.grid_size}")
        from aecli.training.trackers import check_names

        check_names(self.trackers)


# The sub-configs, in --help and config.json order, by the TrainConfig attribute that holds each.
SECTIONS: dict[str, type] = {"dataset": DataConfig, "loss": LossConfig, "optim": OptimConfig,
                             "runtime": RuntimeConfig, "output": OutputConfig}


@dataclass(init=False)
class TrainConfig:
    """Everything `aecli train` needs: the model family and its options (checked against the family's
    own Config), then one typed sub-config per concern. config.json records it flat (``to_dict``), as
    every aecli has written it, and every option is also readable and settable by its flat name
    (``cfg.lr`` is ``cfg.optim.lr``): one namespace, as on the command line."""

    family: str
    model: dict[str, Any]  # family options (the family Config's fields)
    dataset: DataConfig
    loss: LossConfig
    optim: OptimConfig
    runtime: RuntimeConfig
    output: OutputConfig
    command_line: str

    def __init__(self, family: str, model: dict[str, Any] | None = None, *, command_line: str = "",
                 **options: Any) -> None:
        """``options``: whole sub-configs by their attribute (``loss=LossConfig(...)``, copied) and/or
        single options by their flat name (``lr=1e-4``), which win. An option in neither takes the family's
        training default (``family_defaults``; with the default objective), else the option's own."""
        self.family = family
        self.model = dict(model or {})
        self.command_line = command_line
        whole = {attr for attr in SECTIONS if options.get(attr) is not None}
        for attr, kind in SECTIONS.items():
            given = options.pop(attr, None)
            object.__setattr__(self, attr, dataclasses.replace(given) if given is not None else kind())
        for name, value in options.items():
            if name not in _OWNER:
                raise TypeError(f"TrainConfig has no option {name!r}")
            setattr(self, name, value)
        if self.loss.objective == "default":  # --objective ldm is its own recipe (learned variance, L1)
            for name, value in family_defaults(family).items():
                if name not in options and _OWNER[name] not in whole:
                    setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:  # only called for names that are not attributes
        if name in _OWNER:
            return getattr(getattr(self, _OWNER[name]), name)
        raise AttributeError(f"TrainConfig has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWNER:
            setattr(getattr(self, _OWNER[name]), name, value)
        else:
            object.__setattr__(self, name, value)

    @staticmethod
    def options() -> list[tuple[type, dataclasses.Field]]:
        """(sub-config class, field) of every option, in --help and config.json order."""
        return [(kind, f) for kind in SECTIONS.values() for f in dataclasses.fields(kind)]

    @staticmethod
    def option_names() -> list[str]:
        """The keys a config file may hold: family, model and every option."""
        return ["family", "model", *_OWNER]

    def validate(self) -> None:
        """Each sub-config checks its own options (one check per bound)."""
        for attr in SECTIONS:
            getattr(self, attr).validate()

    def to_dict(self) -> dict[str, Any]:
        """The flat layout config.json has always had: family, model, every option, command_line."""
        d: dict[str, Any] = {"family": self.family, "model": dict(self.model)}
        for attr in SECTIONS:
            d.update(dataclasses.asdict(getattr(self, attr)))
        d["betas"] = list(self.optim.betas)
        d["command_line"] = self.command_line
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "config") -> "TrainConfig":
        """A config as saved in a run folder's config.json, every value type-checked (``where`` names the
        file in errors)."""
        if not isinstance(d, dict):
            raise UsageError(f"{where} must hold a JSON object of options, not {type(d).__name__}")
        if not isinstance(d.get("family"), str):
            raise UsageError(f"{where} names no model family (\"family\": \"conv-ae\" …)")
        values = check_options({k: v for k, v in d.items() if k != "family"}, where)
        return cls(family=d["family"], **values)


_OWNER = {f.name: attr for attr, kind in SECTIONS.items() for f in dataclasses.fields(kind)}


def family_defaults(family: str) -> dict[str, Any]:
    """The training options a registered family trains best with (its ``train_defaults``, e.g. conv-ae's
    ``recon="gaussian"``); {} for a name that is not a family (the model build names the problem)."""
    from aecli.models.registry import list_models, get_family

    return dict(get_family(family).train_defaults) if family in list_models() else {}


def option_fields() -> dict[str, dataclasses.Field]:
    """Every option's field by its flat name."""
    return {f.name: f for _, f in TrainConfig.options()}


def cli_flag(name: str) -> str:
    """The command-line spelling of option ``name`` (``grid_size`` is --grid-columns)."""
    f = option_fields().get(name)
    return (option_info(f).flag if f is not None else None) or "--" + name.replace("_", "-")


def resumable() -> tuple[str, ...]:
    """Options a resumed run may take with new values: how long to train, where and how to run, what to
    log, where the data and weights live (in that order). Every other option shapes the result and must
    equal the run's own."""
    order = ("optim", "runtime", "output", "dataset", "loss")
    return tuple(f.name for attr in order for f in dataclasses.fields(SECTIONS[attr])
                 if option_info(f).resumable)


def _field_types() -> dict[str, Any]:
    types_ = {"model": dict[str, Any], "command_line": str}
    for kind in SECTIONS.values():
        types_.update(typing.get_type_hints(kind))
    return types_


def _type_name(kind: Any) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (tuple,):
        return "a list of numbers"
    if typing.get_origin(kind) is dict:
        return "a table of model options"
    if typing.get_origin(kind) is list:
        return "a list of names"
    base = args[0] if args else kind
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}.get(base, str(base))


def _coerce(value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (TrainConfig's annotation), or raise ValueError. No silent conversions:
    ``true`` is not an epoch count and ``32.5`` is not an image size."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)))
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(float(v) if isinstance(v, str) else v, a) for v, a in zip(value, args))
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif origin is list:  # trackers = ["csv", "wandb"], or one name
        items = [value] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            return [_coerce(v, args[0]) for v in items]
    raise ValueError(value)


def check_options(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Training options from a file (TOML config, config.json), each checked against its declared type.
    Keys may use dashes or underscores (TOML files are written like the command-line options)."""
    types = _field_types()
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in types:
            raise UsageError(f"{where}: unknown option {key!r}; see `aecli train --help`")
        try:
            out[name] = _coerce(value, types[name])
        except (ValueError, TypeError):
            raise UsageError(f"{where}: {key} must be {_type_name(types[name])}, got {value!r}") from None
    if "model" in out:
        out["model"] = {str(k).replace("-", "_"): v for k, v in out["model"].items()}
    return out


def check_model_options(family: str, model: dict[str, Any], where: str) -> dict[str, Any]:
    """``[model]`` values from a file, checked against the family config's fields and their types."""
    from aecli.models import get_family

    fields = {f.name: f for f in dataclasses.fields(get_family(family).Config)}
    out: dict[str, Any] = {}
    for key, value in model.items():
        if key not in fields:
            raise UsageError(f"{where}: {family} has no model option {key!r}; its options are: "
                             f"{', '.join(sorted(fields))}")
        default = fields[key].default
        ok = True
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif isinstance(default, tuple):
            kind = type(default[0]) if default else int
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int))
                for v in value)
            value = tuple(kind(v) for v in value) if ok else value
        if not ok:
            shown = "a list" if isinstance(default, tuple) else _type_name(type(default))
            raise UsageError(f"{where}: model option {key} must be {shown}, got {value!r}")
        out[key] = value
    return out


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """Seconds in "600", "90m", "1h30m", "2d", "45s" or Lightning's "DD:HH:MM:SS" / "HH:MM:SS"."""
    t = str(text).strip().lower().replace(" ", "")
    seconds: float | None = None
    if ":" in t:
        parts = t.split(":")
        if 2 <= len(parts) <= 4 and all(p.isdigit() for p in parts):
            seconds = 0.0
            for p, unit in zip(reversed(parts), (1, 60, 3600, 86400)):
                seconds += int(p) * unit
    elif t and (m := _DURATION.match(t)):
        seconds = sum(float(v) * u for v, u in zip(m.groups(), (86400, 3600, 60, 1)) if v)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"--max-time must be a duration such as 600 (seconds), 90m, 1h30m or 00:12:00:00, "
                         f"got {text!r}")
    return seconds


def resolve_format(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the image size and channels it will train at written out (without reading the data)."""
    from aecli.training.setup import natural_format, pick_image_size

    size, channels = natural_format(cfg.data)
    out = dataclasses.replace(cfg, model=dict(cfg.model))
    out.channels = cfg.channels or channels
    out.image_size = pick_image_size(cfg.family, {**cfg.model, "channels": out.channels}, cfg.image_size, size)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else "inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(cfg: TrainConfig) -> str:
    """The config as a TOML file `aecli train --config` reads back to the same config. Options left
    automatic (None) are omitted: TOML has no null, and absent means automatic."""
    lines = [f"family = {_toml_value(cfg.family)}"]
    for name in option_fields():
        value = getattr(cfg, name)
        if value is not None:
            lines.append(f"{name} = {_toml_value(value)}")
    if cfg.model:
        lines += ["", "[model]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(cfg.model.items()) if v is not None]
    return "\n".join(lines) + "\n"
