"""Everything `aecli train` needs, as one dataclass: what the CLI and TOML files fill in, and what
the run folder records (config.json) so a run can be resumed and reported exactly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from aecli.errors import UsageError

OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "plateau")
PRECISIONS = ("fp32", "bf16", "fp16")


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
    # optimisation
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_d: float | None = None  # discriminator learning rate (gan: 4e-4, seed 003's TTUR)
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    scheduler: str = "none"
    warmup_steps: int = 0
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

        need(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(self.lr > 0, f"--lr must be positive, got {self.lr}")
        need(self.lr_d is None or self.lr_d > 0, f"--lr-d must be positive, got {self.lr_d}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        need(self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}")
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
        need(self.grid_size >= 1, f"--grid-size must be at least 1, got {self.grid_size}")
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

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UsageError(f"unknown training option(s) {', '.join(unknown)}")
        return cls(**d)
