"""The loss options: declared once here (default, help, bounds) and read by `aecli train`'s command
line, its TOML files, the run folder's config.json and the objectives, which take this object as is."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from aecli.options import need, option

RECONS = ("l1", "mse", "bce", "gaussian")
REDUCTIONS = ("mean", "sum")
OBJECTIVES = ("default", "ldm")


@dataclass
class LossConfig:
    PANEL = "Losses"

    # bce needs outputs in [0, 1]: the trainer gives the model a sigmoid output for it
    recon: str = option("mse", "Reconstruction loss: l1|mse|bce|gaussian (gaussian: per-image fitted "
                        "variance, maximises per-image PSNR).")
    # Applies to the reconstruction AND the KL term.
    reduction: str = option("mean", "mean: per element (the FFHQ ablation and the AE-vs-VAE comparison, seeds "
                            "000/001); sum: per image (the glasses VAE and the QuickDraw VAEs, seeds 002/004).")
    beta: float = option(1.0, "KL weight.")
    kl_warmup_steps: int = option(0, "Linear KL warm-up steps (the CIFAR-10 VAE report, seed 003: 10000).")
    # cyclical annealing (Fu et al. 2019) over the run's total steps
    kl_cycles: int = option(0, "Cyclical KL annealing: number of cycles.")
    kl_cycle_ratio: float = option(0.5, "Fraction of each cycle spent increasing.")
    free_bits: float = option(0.0, "Minimum KL per latent dimension, nats (the CIFAR-10 VAE report, seed 003: 0.5).")
    lpips: float = option(0.0, "LPIPS loss weight (the FFHQ ablation's sweep, seed 000: 0.05-0.1).")
    lpips_net: str = option("alex", "alex|vgg|squeeze.")
    lpips_weights: str | None = option(None, "Backbone weights file for LPIPS instead of the hub cache.",
                                       resumable=True)
    weights_dir: str | None = option(None, "Pretrained weights folder (default $TORCH_HOME/hub/checkpoints).",
                                     envvar="AECLI_WEIGHTS_DIR", resumable=True)
    adv: float = option(0.0, "Adversarial PatchGAN loss weight.")
    adv_start: int = option(0, "Step at which the adversarial term starts.")
    objective: str = option("default", "default, or ldm: the LDM/taming objective (recon/exp(logvar)+logvar with a "
                            "learned logvar, --beta KL, --lpips, adaptive --adv weight).")

    def validate(self) -> None:
        """Raise UsageError naming the bad option (as its CLI flag) and the valid values."""
        need(self.recon in RECONS, f"--recon must be one of {', '.join(RECONS)}, got {self.recon!r}")
        need(self.reduction in REDUCTIONS,
             f"--reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        need(self.objective in OBJECTIVES,
             f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for flag, value in (("--beta", self.beta), ("--free-bits", self.free_bits),
                            ("--lpips", self.lpips), ("--adv", self.adv)):
            need(value >= 0, f"{flag} must be >= 0, got {value}")  # also rejects NaN
        for flag, count in (("--kl-warmup-steps", self.kl_warmup_steps), ("--kl-cycles", self.kl_cycles),
                            ("--adv-start", self.adv_start)):
            need(isinstance(count, int) and count >= 0, f"{flag} must be a whole number >= 0, got {count!r}")
        need(0.0 < self.kl_cycle_ratio <= 1.0, f"--kl-cycle-ratio must be in (0, 1], got {self.kl_cycle_ratio}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> dict[str, Any]:
        """The options a checkpoint's training summary records (``training["loss"]``)."""
        return {k: getattr(self, k) for k in ("recon", "reduction", "beta", "lpips", "free_bits", "objective")}
