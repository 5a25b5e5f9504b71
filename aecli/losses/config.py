"""The loss configuration shared by the trainer, the CLI options and the run folder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from aecli.errors import UsageError

RECONS = ("l1", "mse", "bce")
REDUCTIONS = ("mean", "sum")


@dataclass
class LossConfig:
    recon: str = "mse"  # l1 | mse | bce (bce needs outputs in [0, 1]: sigmoid families)
    # mean: per-element mean (seeds 000/001); sum: summed per image, averaged over the batch
    # (seeds 002/004: BCE ≈ 141 per 28×28 image). Applies to the reconstruction AND the KL term.
    reduction: str = "mean"
    beta: float = 1.0  # KL weight
    kl_warmup_steps: int = 0  # linear 0 → beta over these steps (seed 003: 10,000)
    kl_cycles: int = 0  # cyclical annealing (Fu et al. 2019): number of cycles over total_steps
    kl_cycle_ratio: float = 0.5  # fraction of each cycle spent increasing
    free_bits: float = 0.0  # nats per latent dimension (seed 003: 0.5)
    lpips: float = 0.0  # LPIPS weight (seed 000 ablation 0 / 0.05 / 0.075 / 0.1)
    adv: float = 0.0  # adversarial PatchGAN term weight (latent-diffusion recipe)
    adv_start: int = 0  # step at which the adversarial term starts

    def validate(self) -> None:
        """Raise UsageError naming the bad option (as its CLI flag) and the valid values."""
        if self.recon not in RECONS:
            raise UsageError(f"--recon must be one of {', '.join(RECONS)}, got {self.recon!r}")
        if self.reduction not in REDUCTIONS:
            raise UsageError(f"--reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        for flag, value in (("--beta", self.beta), ("--free-bits", self.free_bits),
                            ("--lpips", self.lpips), ("--adv", self.adv)):
            if not value >= 0:  # also rejects NaN
                raise UsageError(f"{flag} must be >= 0, got {value}")
        for flag, count in (("--kl-warmup-steps", self.kl_warmup_steps), ("--kl-cycles", self.kl_cycles),
                            ("--adv-start", self.adv_start)):
            if not isinstance(count, int) or count < 0:
                raise UsageError(f"{flag} must be a whole number >= 0, got {count!r}")
        if not 0.0 < self.kl_cycle_ratio <= 1.0:
            raise UsageError(f"--kl-cycle-ratio must be in (0, 1], got {self.kl_cycle_ratio}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
