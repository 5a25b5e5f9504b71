"""KL weight schedules (seed 003): linear warm-up and cyclical annealing.

The weight is a pure function of the optimizer step, so a resumed run continues the schedule exactly
without storing any schedule state.

Combined rule: weight = beta · warmup(step) · cycle(step). With both set, the warm-up is an envelope
over the cycles: the cycles run from step 0, but their peaks only reach beta once warm-up is over.
"""

from __future__ import annotations

from aecli.errors import UsageError
from aecli.losses.config import LossConfig


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear 0 → 1 over ``warmup_steps`` (step 0 gives 0, step ≥ warmup_steps gives 1)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, max(step, 0) / warmup_steps)


def cyclical_factor(step: int, cycles: int, total_steps: int, ratio: float) -> float:
    """Fu et al. 2019: each of ``cycles`` equal cycles over ``total_steps`` ramps 0 → 1 over its first
    ``ratio`` fraction, then holds 1. Periodic past ``total_steps`` (a run extended on resume keeps cycling)."""
    if cycles <= 0:
        return 1.0
    if total_steps < cycles:
        raise UsageError(f"--kl-cycles {cycles} needs at least {cycles} training steps, got {total_steps}")
    # Position inside the cycle in integer arithmetic: exact at cycle starts, no float drift.
    phase = (max(step, 0) * cycles) % total_steps / total_steps
    return min(1.0, phase / ratio)


def kl_weight(cfg: LossConfig, step: int, total_steps: int) -> float:
    """The KL weight at optimizer step ``step`` (0-based) of a run of ``total_steps`` steps."""
    return (cfg.beta * warmup_factor(step, cfg.kl_warmup_steps)
            * cyclical_factor(step, cfg.kl_cycles, total_steps, cfg.kl_cycle_ratio))
