"""Everything `aecli train` needs, as one dataclass: what the CLI and TOML files fill in, and what
the run folder records (config.json) so a run can be resumed and reported exactly."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from aecli.errors import UsageError

OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "plateau")
PRECISIONS = ("fp32", "bf16", "fp16")
OBJECTIVES = ("default", "ldm")


@dataclass
class TrainConfig:
    family: str
    model: dict[str, Any] = field(default_factory=dict)  # family options (Config fields)
    # data
    data: str = "digits"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None  # None: the source's natural size rounded up to what the family takes
    channels: int | None = None  # None: the source's channels (1 for digits/mnist/quickdraw, else 3)
    val_count: int | None = None
    val_fraction: float | None = None
    strict_data: bool = False
    cache: str | None = None
    # losses
    recon: str = "mse"
    reduction: str = "mean"
    beta: float = 1.0
    kl_warmup_steps: int = 0
    kl_cycles: int = 0
    kl_cycle_ratio: float = 0.5
    free_bits: float = 0.0
    lpips: float = 0.0
    lpips_net: str = "alex"
    lpips_weights: str | None = None  # a specific backbone file instead of the torch hub cache
    weights_dir: str | None = None  # where pretrained files live (default $TORCH_HOME/hub/checkpoints)
    adv: float = 0.0
    adv_start: int = 0
    objective: str = "default"  # default | ldm (taming/LDM LPIPSWithDiscriminator, aecli.losses.ldm)
    # optimisation
    epochs: int | None = None  # None: 10, or as many as --max-steps needs when that is given
    max_steps: int = 0  # stop after this many optimizer steps (0: no limit); resumable
    max_time: str | None = None  # stop at the first step boundary after this wall time ("90m", "1h30m", "600")
    batch_size: int = 64
    grad_accum_steps: int = 1  # micro-batches of batch_size per optimizer step
    lr: float = 1e-3
    lr_d: float | None = None  # discriminator learning rate (gan: 4e-4, seed 003's TTUR)
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    scheduler: str = "cosine"  # with warm-up: the default a new user gets (BENCHMARKS.md, model quality)
    warmup_steps: int = 50
    step_size: int = 10  # epochs between step-scheduler decays
    gamma: float = 0.5  # step decay factor / plateau factor (seed 001: 0.5)
    patience: int = 10  # plateau patience in epochs (seed 001: 10)
    grad_clip: float = 0.0
    ema: float = 0.0
    seed: int = 0
    # runtime
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    sync_bn: bool = False
    workers: int | None = None
    # output
    out: str | None = None
    log_every: int = 50
    save_every_steps: int = 0
    keep: int = 0
    grid_size: int = 8
    tensorboard: bool = False  # the same as trackers=["tensorboard"], kept for old command lines
    trackers: list[str] = field(default_factory=list)  # tensorboard, wandb, mlflow, csv
    requeue: bool = False
    command_line: str = ""

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UsageError(msg)

        need(self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        need(self.max_steps >= 0, f"--max-steps must be >= 0 (0: no limit), got {self.max_steps}")
        if self.max_time is not None:
            parse_duration(self.max_time)
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(self.grad_accum_steps >= 1, f"--grad-accum-steps must be at least 1, got {self.grad_accum_steps}")
        need(self.lr > 0, f"--lr must be positive, got {self.lr}")
        need(self.lr_d is None or self.lr_d > 0, f"--lr-d must be positive, got {self.lr_d}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        need(self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}")
        need(self.objective in OBJECTIVES, f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
             f"--betas must be two numbers in [0, 1), e.g. 0.5,0.999; got {self.betas}")
        need(self.image_size is None or self.image_size >= 4, f"--image-size must be at least 4, got {self.image_size}")
        need(self.channels in (None, 1, 3), f"--channels must be 1 or 3, got {self.channels}")
        need(self.ema == 0 or 0 < self.ema < 1, f"--ema must be a decay in (0, 1), e.g. 0.999; got {self.ema}")
        need(self.log_every >= 1, f"--log-every must be at least 1, got {self.log_every}")
        need(self.step_size >= 1, f"--step-size must be at least 1 epoch, got {self.step_size}")
        need(0 < self.gamma <= 1, f"--gamma must be a decay factor in (0, 1], e.g. 0.5; got {self.gamma}")
        need(self.patience >= 0, f"--patience must be >= 0 epochs, got {self.patience}")
        need(self.workers is None or self.workers >= 1, f"--workers must be at least 1, got {self.workers}")
        need(self.grid_size >= 1, f"--grid-columns must be at least 1, got {self.grid_size}")
        for name in ("beta", "free_bits", "lpips", "adv", "weight_decay", "grad_clip"):
            need(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("kl_warmup_steps", "kl_cycles", "adv_start", "warmup_steps", "save_every_steps", "keep"):
            need(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        need(0 < self.kl_cycle_ratio <= 1, f"--kl-cycle-ratio must be in (0, 1], got {self.kl_cycle_ratio}")
        need(self.val_fraction is None or 0 < self.val_fraction < 1,
             f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        need(self.val_count is None or self.val_count >= 1, f"--val-count must be at least 1, got {self.val_count}")
        from aecli.training.trackers import check_names

        check_names(self.trackers)

    def planned_epochs(self, steps_per_epoch: int) -> int:
        """Epochs to run: --epochs, else as many as --max-steps needs, else 10."""
        if self.epochs is not None:
            return self.epochs
        if self.max_steps:
            return max(1, -(-self.max_steps // max(1, steps_per_epoch)))
        return DEFAULT_EPOCHS

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
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


DEFAULT_EPOCHS = 10
_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


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
        if name not in _FIELDS or name == "family":
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
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("family", "model", "command_line") or value is None:
            continue
        lines.append(f"{f.name} = {_toml_value(value)}")
    if cfg.model:
        lines += ["", "[model]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(cfg.model.items()) if v is not None]
    return "\n".join(lines) + "\n"
