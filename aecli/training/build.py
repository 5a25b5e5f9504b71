"""Construction of what the training loop runs: loaders, the model, the objective and the step.

Each function builds one thing from the config; the order the Trainer calls them in matters for
reproducibility (every module initialised here draws from torch's global generator).
"""

from __future__ import annotations

from typing import Any

import torch

from aecli.data import BatchLoader
from aecli.errors import UsageError
from aecli.losses import AutoencoderObjective, LossConfig, PatchDiscriminator
from aecli.models import Autoencoder, create_model
from aecli.training.config import TrainConfig
from aecli.training.distributed import DistInfo
from aecli.training.steps import AutoencoderStep, GANStep, Precision, Step


def build_loaders(cfg: TrainConfig, train_set: Any, val_set: Any, dist: DistInfo, device: torch.device,
                  is_gan: bool) -> tuple[BatchLoader, BatchLoader]:
    """One loader batch is one optimizer step: its batch_size × K images are split into K micro-batches,
    so the batch order equals that of a run with batch_size × K (the same permutation)."""
    o = cfg.optim
    if is_gan and o.grad_accum_steps > 1:
        raise UsageError("--grad-accum-steps is not supported by the gan family (its G and D steps alternate "
                         "per batch); raise --batch-size instead")
    loader = BatchLoader(train_set, o.batch_size * o.grad_accum_steps, shuffle=True, seed=o.seed, drop_last=True,
                         device=device, rank=dist.rank, world_size=dist.world_size)
    if len(loader) == 0:
        accum = f" × --grad-accum-steps {o.grad_accum_steps}" if o.grad_accum_steps > 1 else ""
        raise UsageError(f"--batch-size {o.batch_size}{accum} is larger than the training split "
                         f"({len(train_set)} images per process); lower it")
    val_loader = BatchLoader(val_set, o.batch_size, shuffle=False, device=device, rank=dist.rank,
                             world_size=dist.world_size)
    return loader, val_loader


def build_model(cfg: TrainConfig, model_kwargs: dict[str, Any], dist: DistInfo, device: torch.device) -> Autoencoder:
    model: Autoencoder = create_model(cfg.family, **model_kwargs).to(device)
    if cfg.runtime.sync_bn and dist.enabled:
        if device.type != "cuda":
            raise UsageError("--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); drop it on CPU")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def lpips_network(loss: LossConfig, is_gan: bool, device: torch.device) -> torch.nn.Module | None:
    """The LPIPS network --lpips needs, from the local weights (never a download mid-run)."""
    if loss.lpips <= 0:
        return None
    if is_gan:
        raise UsageError("--lpips needs reconstructions; the gan family has none")
    from aecli.pretrained import build_lpips
    from aecli.weights import require_weights

    require_weights(["lpips"], loss.lpips_net, weights_dir=loss.weights_dir, lpips_weights=loss.lpips_weights)
    return build_lpips(loss.lpips_net, weights_dir=loss.weights_dir, weights_file=loss.lpips_weights, device=device)


def build_objective(loss: LossConfig, model: Autoencoder, value_range: tuple[float, float], channels: int,
                    total_steps: int, device: torch.device) -> torch.nn.Module:
    """--objective default (AutoencoderObjective) or ldm (LDMObjective), with the LPIPS network and the
    PatchGAN discriminator its weights ask for (``objective.discriminator``)."""
    lpips_model = lpips_network(loss, False, device)
    discriminator = PatchDiscriminator(channels).to(device) if loss.adv > 0 else None
    if loss.objective == "ldm":
        from aecli.losses.ldm import LDMObjective

        return LDMObjective(loss, value_range, total_steps, last_layer=getattr(model, "last_layer", None),
                            lpips_model=lpips_model, discriminator=discriminator)
    return AutoencoderObjective(loss, value_range, total_steps, lpips_model=lpips_model, discriminator=discriminator)


def wrap_for_speed_and_ddp(step: Step, dist: DistInfo, device: torch.device, compile: bool) -> None:
    """Set the module the step calls: DDP-wrapped across processes (the GAN is not: its G and D steps
    bypass forward(); GANStep averages its gradients), then torch.compile'd with --compile. An adversarial
    objective's discriminator is wrapped too, in place. Called after the resume state is restored: DDP
    broadcasts rank 0's weights when it is built."""
    if not isinstance(step, AutoencoderStep):
        return
    model, objective = step.model, step.objective
    forward: torch.nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        forward = DDP(model, device_ids=ids)
        if objective.discriminator is not None:
            objective.discriminator = DDP(objective.discriminator, device_ids=ids)
    if compile:
        forward = torch.compile(forward)  # type: ignore[assignment]
    step.forward_model = forward


def build_step(cfg: TrainConfig, model: Autoencoder, total_steps: int, value_range: tuple[float, float],
               channels: int, dist: DistInfo, device: torch.device) -> tuple[Step, torch.nn.Module]:
    """The step for ``model`` and the objective validation evaluates: a GAN step for a family without an
    encoder, else the autoencoder step. The step calls the bare model until :func:`wrap_for_speed_and_ddp`
    replaces its ``forward_model`` (after the resume state is restored)."""
    precision = Precision(cfg.runtime.precision, device)
    if not model.has_encoder:
        lpips_network(cfg.loss, True, device)  # refuses --lpips: the gan has no reconstructions
        # The GAN trains with its own BCE losses; the loss options are still checked against the run.
        objective = AutoencoderObjective(cfg.loss, value_range, total_steps)
        return GANStep(model, cfg.optim, precision, dist, device), objective
    objective = build_objective(cfg.loss, model, value_range, channels, total_steps, device)
    step = AutoencoderStep(model, objective, cfg.loss.adv_start, cfg.optim, precision, dist, device)
    return step, objective
