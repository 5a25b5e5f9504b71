"""The training loop every family runs on.

Read top to bottom: ``train()`` builds everything from a TrainConfig, then ``Trainer.fit()`` runs
epochs of ``_ae_step``/``_gan_step``, validates, writes the run folder and the resume state.

Exactness on resume comes from three rules: the batch order is a function of (seed, epoch) only,
every random draw uses torch's global RNG (saved in the state), and state is saved only at step
boundaries. With them, a run stopped and resumed ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import aecli
from aecli.atomic import write_text
from aecli.checkpoint import save_model
from aecli.data import BatchLoader, to_model_input
from aecli.devices import resolve_device
from aecli.errors import Interrupted, TrainingError, UsageError
from aecli.images import save_grid
from aecli.locking import FolderLock
from aecli.losses import (
    AutoencoderObjective,
    LossConfig,
    PatchDiscriminator,
    gan_discriminator_loss,
    gan_generator_loss,
)
from aecli.models import Autoencoder, create_model
from aecli.training import distributed
from aecli.training.config import TrainConfig, parse_duration
from aecli.training.logs import Console, MetricsLog
from aecli.training.trackers import open_trackers
from aecli.training.schedules import LRSchedule
from aecli.training.runfolder import (
    PERIODIC,
    check_fresh_run_dir,
    default_run_dir,
    make_run_dir,
    merge_resume,
    read_run_config,
    remove_folders,
    remove_stale_temp_files,
    remove_unstarted,
    resume_dir,
    write_run_config,
)
from aecli.training.setup import fit_warnings, prepare
from aecli.training.state import STATE_FILE, Counters, load_state, save_state

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
_SIGNALLED, _OUT_OF_TIME = 2, 1  # stop votes: a signal outranks the clock


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    epochs: int
    best_val: float | None
    final: dict[str, float]
    is_main: bool = True  # rank 0 (the only process that writes and reports)
    stopped: str = ""  # why training ended before its planned epochs (--max-steps/--max-time), if it did
    resume_hint: str = ""


def make_optimizer(params: Any, kind: str, lr: float, betas: tuple[float, float], weight_decay: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """Adam/AdamW with the fastest kernels the device has: fused on CUDA, foreach (multi-tensor) on
    CPU, where torch's default is one Python-level update per tensor (measured ~9% of a small step)."""
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, **fast)


class _StopFlag:
    """SIGTERM/SIGUSR1 (Slurm --signal=USR1@120, preemption, scancel) and Ctrl-C only set a flag: the
    current step finishes, then state is saved and we exit with EXIT_INTERRUPTED. A second Ctrl-C
    aborts at once (KeyboardInterrupt), for a user who does not want to wait for the step. Before
    training starts (``training`` False) there is nothing to save and set-up may be blocked in a system
    call a flag never interrupts (a stalled mount, a FIFO), so the signal stops the process at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.training = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        if not self.training:
            raise Interrupted(f"stopped by {signal.Signals(signum).name} before training started; nothing "
                              "was trained — run the same command again")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool, started: float | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        # --max-time counts from the command's start (data loading included), like a Slurm time limit
        self.deadline = (started or time.time()) + parse_duration(cfg.max_time) if cfg.max_time else None
        self.stopped = ""
        self.dist = distributed.detect()
        self.device = distributed.local_device(self.dist, resolve_device(cfg.device))
        distributed.init(self.dist, self.device)
        self.main = self.dist.is_main
        # The same seed on every rank: identical data splits and initial weights (the gan is not DDP-
        # wrapped, so nothing would re-broadcast its weights). Ranks get their own noise stream below.
        torch.manual_seed(cfg.seed)
        if self.main:
            remove_stale_temp_files(run_dir)

        prepared = prepare(cfg, progress=self.main and sys.stdout.isatty())
        self.spec = prepared.spec
        self.train_set, self.val_set = prepared.train, prepared.val
        self.model: Autoencoder = create_model(cfg.family, **prepared.model_kwargs).to(self.device)
        self.is_gan = not self.model.has_encoder
        if not resume and getattr(self.model, "fits_data", False):  # conv-ae/-vae: start at PCA (models/conv.py)
            idx = self.model.fit_indices(len(self.train_set))
            self.model.fit_linear(to_model_input(self.train_set.take(idx), self.spec.value_range).to(self.device))
        if cfg.sync_bn and self.dist.enabled:
            if self.device.type != "cuda":
                raise UsageError("--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); drop it on CPU")
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)

        if self.is_gan and cfg.grad_accum_steps > 1:
            raise UsageError("--grad-accum-steps is not supported by the gan family (its G and D steps alternate "
                             "per batch); raise --batch-size instead")
        # One loader batch is one optimizer step: its batch_size × K images are split into K micro-batches.
        # The batch order therefore equals that of a run with batch_size × K (the same permutation).
        self.step_batch = cfg.batch_size * cfg.grad_accum_steps
        self.loader = BatchLoader(self.train_set, self.step_batch, shuffle=True, seed=cfg.seed, drop_last=True,
                                  device=self.device, rank=self.dist.rank, world_size=self.dist.world_size)
        if len(self.loader) == 0:
            accum = f" × --grad-accum-steps {cfg.grad_accum_steps}" if cfg.grad_accum_steps > 1 else ""
            raise UsageError(f"--batch-size {cfg.batch_size}{accum} is larger than the training split "
                             f"({len(self.train_set)} images per process); lower it")
        self.val_loader = BatchLoader(self.val_set, cfg.batch_size, shuffle=False, device=self.device,
                                      rank=self.dist.rank, world_size=self.dist.world_size)
        self.steps_per_epoch = len(self.loader)
        self.epochs = cfg.planned_epochs(self.steps_per_epoch)
        self.total_steps = self.steps_per_epoch * self.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.warnings = fit_warnings(cfg, len(self.train_set) + len(self.val_set), len(self.train_set),
                                     self.step_batch * self.dist.world_size, self.spec.image_size,
                                     sum(p.numel() for p in self.model.parameters()))

        self.discriminator = None
        lpips_model = self._lpips_model()
        if cfg.adv > 0 and not self.is_gan:
            self.discriminator = PatchDiscriminator(self.spec.channels).to(self.device)
        loss_cfg = LossConfig(recon=cfg.recon, reduction=cfg.reduction, beta=cfg.beta,
                              kl_warmup_steps=cfg.kl_warmup_steps, kl_cycles=cfg.kl_cycles,
                              kl_cycle_ratio=cfg.kl_cycle_ratio, free_bits=cfg.free_bits, lpips=cfg.lpips,
                              adv=cfg.adv, adv_start=cfg.adv_start)
        if cfg.objective == "ldm":
            from aecli.losses.ldm import LDMObjective

            self.objective = LDMObjective(loss_cfg, self.spec.value_range, self.total_steps,
                                          last_layer=getattr(self.model, "last_layer", None),
                                          lpips_model=lpips_model, discriminator=self.discriminator)
        else:
            self.objective = AutoencoderObjective(loss_cfg, self.spec.value_range, self.total_steps,
                                                  lpips_model=lpips_model, discriminator=self.discriminator)
        # A loss with learned parameters (the LDM log-variance) trains and resumes with the model.
        self.loss_params: torch.nn.Module | None = getattr(self.objective, "trainable", None)

        self.optimizers = self._optimizers()
        self.schedule = LRSchedule(cfg.scheduler, cfg.lr, self.total_steps, self.steps_per_epoch,
                                   cfg.warmup_steps, cfg.step_size, cfg.gamma, cfg.patience, self.deadline)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.ema = self._init_ema() if cfg.ema > 0 else None
        self.counters = Counters()
        if resume:
            state = load_state(run_dir)
            state.restore(self._stateful_modules(), self.optimizers, self.scaler)
            if self.ema is not None:
                self.ema = {k: v.to(self.device) for k, v in state.module_state("ema").items()}
            self.schedule.load_state(state.schedule)
            self.counters = state.counters
        restored = resume and self.dist.rank > 0 and state.restore_rank_rng(self.dist.rank, self.device)
        if self.dist.rank > 0 and not restored:
            # A fresh run (or a state without per-rank generators): other ranks seed from (seed, rank, step)
            # so that their VAE noise differs from rank 0's.
            torch.manual_seed((cfg.seed * 1_000_003 + self.dist.rank) * 1_000_003 + self.counters.step)
        # Running sums of the epoch's losses; saved with the state so a mid-epoch resume logs exact means.
        self.epoch_sums: dict[str, torch.Tensor] = {
            k: torch.tensor(v, device=self.device) for k, v in self.counters.extra.get("epoch_sums", {}).items()}
        self.epoch_batches: int = self.counters.extra.get("epoch_batches", 0)
        self._saved_step = self.counters.step if resume else -1
        self.forward_model = self._wrap_for_speed_and_ddp()
        self.log = MetricsLog(run_dir, resume_step=self.counters.step if resume else None,
                              epoch_done=self.counters.batch == 0) if self.main else None
        self.console = Console(self.main, self.total_steps)
        self.tb = open_trackers(run_dir, cfg.to_dict(), cfg.trackers, cfg.tensorboard) if self.main else None
        self._pending: list[tuple[int, tuple[str, ...], torch.Tensor]] = []

    # -- construction helpers -------------------------------------------------------------------
    def _lpips_model(self) -> torch.nn.Module | None:
        if self.cfg.lpips <= 0:
            return None
        if self.is_gan:
            raise UsageError("--lpips needs reconstructions; the gan family has none")
        from aecli.pretrained import build_lpips
        from aecli.weights import require_weights

        require_weights(["lpips"], self.cfg.lpips_net, weights_dir=self.cfg.weights_dir,
                        lpips_weights=self.cfg.lpips_weights)
        return build_lpips(self.cfg.lpips_net, weights_dir=self.cfg.weights_dir,
                           weights_file=self.cfg.lpips_weights, device=self.device)

    def _make_optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        return make_optimizer(params, self.cfg.optimizer, lr, self.cfg.betas, self.cfg.weight_decay, self.device)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self.is_gan:
            lr_d = self.cfg.lr_d if self.cfg.lr_d is not None else 4 * self.cfg.lr  # seed 003: 4e-4 vs 1e-4
            return {"g": self._make_optimizer(self.model.generator.parameters(), self.cfg.lr),
                    "d": self._make_optimizer(self.model.discriminator.parameters(), lr_d)}
        params = list(self.model.parameters())
        if self.loss_params is not None:
            params += list(self.loss_params.parameters())
        opts = {"model": self._make_optimizer(params, self.cfg.lr)}
        if self.discriminator is not None:
            opts["d"] = self._make_optimizer(self.discriminator.parameters(), self.cfg.lr_d or self.cfg.lr)
        return opts

    def _stateful_modules(self) -> dict[str, torch.nn.Module]:
        modules: dict[str, torch.nn.Module] = {"model": self.model}
        if self.discriminator is not None:
            modules["disc"] = self.discriminator
        if self.loss_params is not None:
            modules["loss"] = self.loss_params
        return modules

    def _init_ema(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _wrap_for_speed_and_ddp(self) -> torch.nn.Module:
        model: torch.nn.Module = self.model
        if self.dist.enabled and not self.is_gan:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DDP(model, device_ids=ids)
            if self.discriminator is not None:
                self.objective.discriminator = DDP(self.discriminator, device_ids=ids)
        if self.cfg.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        return model

    # -- one step -------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _set_lr(self, step: int) -> None:
        lr = self.schedule.lr(step)
        for name, opt in self.optimizers.items():
            scale = 1.0 if name in ("model", "g") else None
            for group in opt.param_groups:
                if scale is None:  # discriminators keep their own base lr, scaled by the same schedule
                    group.setdefault("base_lr", group["lr"])
                    group["lr"] = group["base_lr"] * lr / self.cfg.lr
                else:
                    group["lr"] = lr

    def _backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params: Any) -> None:
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self._optimizer_step(opt, params)

    def _optimizer_step(self, opt: torch.optim.Optimizer, params: Any) -> None:
        """Clip and apply the gradients accumulated in ``params``."""
        if self.is_gan and self.dist.enabled:
            # The GAN is not wrapped in DDP (its G and D steps bypass forward()); average grads by hand.
            for p in params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.dist.world_size
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()

    def _ae_step(self, x: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        """One optimizer step over ``x``, as --grad-accum-steps K micro-batches: each adds the gradient of
        its loss / K, so with per-element mean losses the step equals one on the whole batch."""
        k = self.cfg.grad_accum_steps
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        chunks = zip(x.chunk(k), labels.chunk(k) if labels is not None else [None] * k)
        sums: dict[str, torch.Tensor] = {}
        recons = []
        for i, (xc, lc) in enumerate(chunks):
            # DDP: all-reduce the gradients once, on the last micro-batch
            sync = nullcontext() if i == k - 1 or not hasattr(self.forward_model, "no_sync") \
                else self.forward_model.no_sync()
            with sync:
                with self._autocast():
                    out = self.forward_model(xc, lc)
                    loss, comps = self.objective(xc, out, step)
                self.scaler.scale(loss if k == 1 else loss / k).backward()
            comps["loss"] = loss.detach()
            recons.append(out.recon.detach())
            sums = {n: sums[n] + v.detach() if n in sums else v.detach() for n, v in comps.items()}
        self._optimizer_step(opt, self.model.parameters())
        comps = sums if k == 1 else {n: v / k for n, v in sums.items()}
        if self.discriminator is not None and step >= self.cfg.adv_start:
            with self._autocast():
                d_loss, d_comps = self.objective.discriminator_loss(x, torch.cat(recons), step)
            self._backward_step(d_loss, self.optimizers["d"], self.discriminator.parameters())
            comps.update(d_comps)
        return comps

    def _gan_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        gan = self.model
        z = torch.randn((x.shape[0], *gan.latent_shape), device=self.device)
        with self._autocast():
            fake = gan.decode(z)
            d_loss = gan_discriminator_loss(gan.discriminate(x), gan.discriminate(fake.detach()))
        self._backward_step(d_loss, self.optimizers["d"], gan.discriminator.parameters())
        with self._autocast():
            g_loss = gan_generator_loss(gan.discriminate(fake))
        self._backward_step(g_loss, self.optimizers["g"], gan.generator.parameters())
        return {"loss": g_loss.detach(), "g_loss": g_loss.detach(), "d_loss": d_loss.detach()}

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = self.cfg.ema
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                if v.is_floating_point():
                    self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    self.ema[k].copy_(v)

    # -- per-step losses without a host sync every step ------------------------------------------
    def _track(self, step: int, comps: dict[str, torch.Tensor]) -> None:
        """Queue this step's loss components as one stacked tensor; ``_flush`` checks and sums them."""
        names = tuple(sorted(comps))
        self._pending.append((step, names, torch.stack([comps[n].float() for n in names])))

    def _flush(self) -> None:
        """Fold queued step losses into the epoch sums after checking they are finite: one host sync
        per log line, save or epoch end instead of one per step."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        groups: dict[tuple[str, ...], list[tuple[int, torch.Tensor]]] = {}
        for step, names, vec in pending:
            groups.setdefault(names, []).append((step, vec))
        first_bad: tuple[int, list[str]] | None = None
        for names, items in groups.items():
            stacked = torch.stack([v for _, v in items])
            finite = torch.isfinite(stacked)
            rows = finite.all(1).cpu()
            if not bool(rows.all()):
                i = int((~rows).nonzero()[0])
                which = [n for n, ok in zip(names, finite[i].cpu().tolist()) if not ok]
                if first_bad is None or items[i][0] < first_bad[0]:
                    first_bad = (items[i][0], which)
            # Added one step at a time, in step order: the sums then do not depend on where flushes
            # fall, so a run interrupted anywhere logs bit-identical epoch means.
            acc = torch.stack([self.epoch_sums.get(n, torch.zeros((), device=self.device)) for n in names])
            for row in stacked:
                acc = acc + row
            self.epoch_sums.update(zip(names, acc.unbind(0)))
        if first_bad is not None:
            # 1-based, like the step counts in the logs
            raise TrainingError(f"non-finite loss at step {first_bad[0] + 1} in {', '.join(first_bad[1])}; the last "
                                f"good checkpoint in {self.run_dir} is kept. Lower --lr, add --grad-clip, or use "
                                "--precision fp32")

    def _check_weights_finite(self) -> None:
        """One host sync per save (rare), never per step."""
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()])
        if not bool(finite.all()):
            name = [n for (n, _), ok in zip(self.model.named_parameters(), finite.tolist()) if not ok][0]
            raise TrainingError(f"weights became non-finite by step {self.counters.step} (first: {name}); the "
                                f"last good checkpoint in {self.run_dir} is kept. Lower --lr or add --grad-clip")

    # -- validation, grids, checkpoints ---------------------------------------------------------
    @torch.no_grad()
    def _validate(self, step: int) -> dict[str, float]:
        if self.is_gan or len(self.val_set) == 0:
            return {}
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=self.device)
        for x_u8, labels in self.val_loader:
            x = to_model_input(x_u8, self.spec.value_range)
            with self._autocast():
                out = self.model(x, labels if self.model.is_conditional else None)
                loss, comps = self.objective(x, out, step)
            comps["loss"] = loss.detach()
            n = x.shape[0]
            for k, v in comps.items():
                sums[k] = sums.get(k, torch.zeros((), device=self.device)) + v.float() * n
            count += n
        self.model.train()
        return {k: float(distributed.all_reduce_mean(v / count.clamp(min=1))) for k, v in sums.items()}

    @torch.no_grad()
    def _write_grids(self, epoch: int) -> list[Path]:
        n = self.cfg.grid_size
        written = []
        model = self.model
        model.eval()
        grids = self.run_dir / "grids"
        if not self.is_gan and len(self.val_set) > 0:
            idx = list(range(min(n, len(self.val_set))))
            x_u8 = torch.stack([self.val_set[i][0] for i in idx]).to(self.device)
            labels = torch.tensor([self.val_set[i][1] for i in idx], device=self.device)
            x = to_model_input(x_u8, self.spec.value_range)
            recon = model(x, labels if model.is_conditional else None).recon
            both = torch.cat([self.spec.to_unit_range(x), self.spec.to_unit_range(recon.float())])
            written.append(save_grid(both, grids / f"recon_e{epoch + 1:03d}.png", len(idx),
                                     row_labels=["input", "reconstruction"],
                                     title=f"epoch {epoch + 1}: fixed validation images"))
        if model.has_prior:
            gen = torch.Generator().manual_seed(1234)  # fixed draws: grids are comparable across epochs
            rows = None
            if model.is_conditional:
                k = min(len(self.spec.class_names), 10)
                labels = torch.arange(k).repeat_interleave(n).to(self.device)
                imgs = model.sample(k * n, labels=labels, generator=gen)
                rows = [str(name) for name in self.spec.class_names[:k]]
            else:
                imgs = model.sample(n * n if n <= 8 else n, generator=gen)
            written.append(save_grid(self.spec.to_unit_range(imgs.float()), grids / f"samples_e{epoch + 1:03d}.png",
                                     n, row_labels=rows, title=f"epoch {epoch + 1}: fixed prior draws"
                                     + (", one row per class" if rows else "")))
        model.train()
        return written

    def _training_summary(self, epoch: int, train_means: dict[str, float], val: dict[str, float],
                          started: float) -> dict[str, Any]:
        return {"epochs": epoch, "steps": self.counters.step, "train": train_means, "val": val,
                "planned_epochs": self.epochs, "max_steps": self.cfg.max_steps, "max_time": self.cfg.max_time,
                "stopped": self.stopped, "batch_size": self.cfg.batch_size,
                "grad_accum_steps": self.cfg.grad_accum_steps,
                "effective_batch": self.step_batch * self.dist.world_size,
                "best_val": self.counters.best_val, "command_line": self.cfg.command_line,
                "seed": self.cfg.seed, "aecli_version": aecli.__version__, "torch_version": torch.__version__,
                "device": str(self.device), "world_size": self.dist.world_size, "precision": self.cfg.precision,
                "elapsed_s": round(time.time() - started, 1),
                "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "loss": {k: getattr(self.cfg, k) for k in ("recon", "reduction", "beta", "lpips", "free_bits", "objective")}}

    def _save(self, summary: dict[str, Any], best: bool, periodic: bool = False) -> None:
        """Rank 0 writes the checkpoints and the state; every file is replaced atomically.

        Weights are checked first: an update can turn a weight non-finite while the loss that caused
        it was still finite, and such weights must never replace the last good checkpoint.
        """
        self._flush()
        self._check_weights_finite()
        self._saved_step = self.counters.step
        rank_rngs = distributed.gather_rng_states(self.device)  # a collective: before rank 0 goes its own way
        if not self.main:
            return
        self.counters.extra["epoch_sums"] = {k: float(v) for k, v in self.epoch_sums.items()}
        self.counters.extra["epoch_batches"] = self.epoch_batches
        save_model(self.run_dir / "last.safetensors", self.model, self.spec, summary, ema_state=self.ema)
        if best:
            save_model(self.run_dir / "best.safetensors", self.model, self.spec, summary, ema_state=self.ema)
        if periodic:
            save_model(self.run_dir / f"step{self.counters.step:08d}.safetensors", self.model, self.spec,
                       summary, ema_state=self.ema)
            self._prune_periodic()
        save_state(self.run_dir, models=self._stateful_modules(), optimizers=self.optimizers,
                   counters=self.counters, schedule=self.schedule.state(), scaler=self.scaler, ema=self.ema,
                   rank_rngs=rank_rngs)

    def _prune_periodic(self) -> None:
        """Only aecli's own stepNNNNNNNN.safetensors files count (a user's step-before-x.safetensors stays)."""
        if self.cfg.keep <= 0:
            return
        ours = sorted(p for p in self.run_dir.glob("step*.safetensors") if PERIODIC.match(p.name))
        for old in ours[: -self.cfg.keep]:
            old.unlink(missing_ok=True)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, stop: "_StopFlag") -> RunResult:
        """Train to ``cfg.epochs``. ``stop`` is installed by the caller before set-up: a signal that
        arrives while data loads ends the process there (nothing to save); from here on it is a flag."""
        stop.training = True
        cfg, c = self.cfg, self.counters
        started = time.time()
        if self.main:
            accum = f" × {cfg.grad_accum_steps} accumulated" if cfg.grad_accum_steps > 1 else ""
            world = f" × {self.dist.world_size} processes" if self.dist.enabled else ""
            if accum or world:
                world = f"{accum}{world} = {'global' if world else 'effective'} batch " \
                        f"{self.step_batch * self.dist.world_size}"
            self.console.line(f"training {cfg.family} ({sum(p.numel() for p in self.model.parameters()):,} "
                              f"params) on {len(self.train_set)} images ({self.spec.image_size}px, "
                              f"{self.spec.channels}ch), val {len(self.val_set)}; {self.device}, batch "
                              f"{cfg.batch_size}{world}; {self.total_steps} steps → {self.run_dir}")
            skipped = [*getattr(self.train_set, "skipped", []), *getattr(self.val_set, "skipped", [])]
            if skipped:
                self.console.line(f"skipped {len(skipped)} unreadable files (first: {', '.join(skipped[:3])})")
            for warning in self.warnings:
                self.console.line(f"warning: {warning}")
        self.model.train()
        last_val: dict[str, float] = {}
        train_means: dict[str, float] = {}
        vote = distributed.StopVote(self.device)
        if cfg.max_steps and c.step >= cfg.max_steps:
            self.stopped = f"--max-steps {cfg.max_steps}"
        try:
            while c.epoch < self.epochs and not self.stopped:
                train_means = self._run_epoch(stop, vote, started)
                if self.stopped and c.batch < self.steps_per_epoch:
                    last_val = self._stop_mid_epoch(started)
                    break
                last_val = self._end_epoch(train_means, started)
        finally:
            self.console.close()
            if self.tb:
                self.tb.close({**train_means, **{f"val_{k}": v for k, v in last_val.items()}})
        vote.drain()
        distributed.barrier()
        return RunResult(self.run_dir, c.step, c.epoch, c.best_val,
                         {**train_means, **{f"val_{k}": v for k, v in last_val.items()}}, is_main=self.main,
                         stopped=self.stopped, resume_hint=self.resume_hint())

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def resume_hint(self) -> str:
        """The exact command line that continues this run to its plan (the options it may change included)."""
        parts = ["aecli", "train", "--resume", str(self.run_dir)]
        if self.cfg.epochs is not None:
            parts += ["--epochs", str(self.cfg.epochs)]
        if self.cfg.max_steps:
            parts += ["--max-steps", str(self.cfg.max_steps)]
        if self.cfg.max_time:
            parts += ["--max-time", self.cfg.max_time]
        return shlex.join(parts)

    def _stop_mid_epoch(self, started: float) -> dict[str, float]:
        """--max-steps/--max-time ended training inside an epoch: validate the final weights (without
        touching any generator, so a resume stays exact), save them with the resume state."""
        c = self.counters
        self._flush()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            val = self._validate(c.step)
        means = self._reduced_means(self.epoch_sums, self.epoch_batches)
        if self.main:
            vshown = " ".join(f"{k} {v:.4g}" for k, v in val.items())
            self.console.line(f"stopped at {self.stopped}: step {c.step}, epoch {c.epoch + 1} batch {c.batch}/"
                              f"{self.steps_per_epoch}" + (f" | val: {vshown}" if val else ""))
        if self._saved_step != c.step:
            self._save(self._training_summary(c.epoch, means, val, started), best=False)
        return val

    def _run_epoch(self, stop: "_StopFlag", vote: distributed.StopVote, started: float) -> dict[str, float]:
        cfg, c = self.cfg, self.counters
        self.loader.set_epoch(c.epoch)
        window_start, window_images = time.time(), 0
        for x_u8, labels in self.loader.iter_from(c.batch):
            x = to_model_input(x_u8, self.spec.value_range)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            self.schedule.observe(c.step)  # --max-time: the cosine ends at the deadline
            self._set_lr(c.step)
            comps = self._gan_step(x) if self.is_gan else \
                self._ae_step(x, labels if self.model.is_conditional else None, c.step)
            self._track(c.step, comps)
            self._update_ema()
            self.epoch_batches += 1
            c.step += 1
            c.batch += 1
            window_images += x.shape[0] * self.dist.world_size
            if c.step % cfg.log_every == 0:
                self._flush()
                rate = window_images / max(1e-9, time.time() - window_start)
                means = self._reduced_means(self.epoch_sums, self.epoch_batches)
                if self.main:
                    row = {"kind": "step", "split": "train", "epoch": c.epoch + 1, "step": c.step, **means,
                           "lr": self.schedule.lr(c.step - 1), "images_per_s": round(rate, 1),
                           "elapsed_s": round(time.time() - started, 1)}
                    self.log.add(row)
                    if self.tb:
                        self.tb.scalars("train_step", row, c.step)
                self.console.update(c.step, {"loss": means.get("loss", 0.0), "img/s": round(rate, 1)},
                                    f"epoch {c.epoch + 1}/{self.epochs} step {c.step}/{self.total_steps}")
                window_start, window_images = time.time(), 0
            if cfg.save_every_steps and c.step % cfg.save_every_steps == 0:
                self._save(self._training_summary(c.epoch, {}, {}, started), best=False, periodic=True)
            verdict = vote(_SIGNALLED if stop.signal is not None else _OUT_OF_TIME if self._out_of_time() else 0)
            if verdict == _SIGNALLED:
                vote.drain()
                self._interrupt(stop, started)
            if verdict == _OUT_OF_TIME or (cfg.max_steps and c.step >= cfg.max_steps):
                self.stopped = (f"--max-time {cfg.max_time}" if verdict == _OUT_OF_TIME else f"--max-steps {cfg.max_steps}")
                break
        self._flush()
        return {k: float(v) / max(1, self.epoch_batches) for k, v in self.epoch_sums.items()}

    def _reduced_means(self, sums: dict[str, torch.Tensor], n: int) -> dict[str, float]:
        """Running means of this epoch's losses, averaged over ranks (one all-reduce for all of them)."""
        names = sorted(sums)
        if not names:
            return {}
        stacked = distributed.all_reduce_mean(torch.stack([sums[k] for k in names]) / max(1, n))
        return dict(zip(names, stacked.tolist()))

    def _end_epoch(self, train_means: dict[str, float], started: float) -> dict[str, float]:
        cfg, c = self.cfg, self.counters
        train_means = {k: float(distributed.all_reduce_mean(torch.tensor(v, device=self.device)))
                       for k, v in train_means.items()}
        val = self._validate(c.step)
        bad = sorted(k for k, v in val.items() if not math.isfinite(v))
        if bad:
            raise TrainingError(f"non-finite validation {', '.join(bad)} after step {c.step}; the last good "
                                f"checkpoint in {self.run_dir} is kept. Lower --lr or add --grad-clip")
        monitor = val.get("loss", train_means.get("loss", 0.0))
        self.schedule.end_epoch(monitor)
        best = bool(val) and (c.best_val is None or val["loss"] < c.best_val)
        if best:
            c.best_val = val["loss"]
        images = self.epoch_batches * self.step_batch * self.dist.world_size  # all ranks' share
        c.epoch += 1
        c.batch = 0
        self.epoch_sums, self.epoch_batches = {}, 0
        if self.main:
            elapsed = round(time.time() - started, 1)
            row = {"kind": "epoch", "epoch": c.epoch, "step": c.step, "lr": self.schedule.lr(max(0, c.step - 1)),
                   "images": images, "elapsed_s": elapsed}
            self.log.add({**row, "split": "train", **train_means})
            if val:
                self.log.add({**row, "split": "val", **val})
            self.log.write_csv()
            self.log.plot(force=c.epoch == self.epochs)
            grids = self._write_grids(c.epoch - 1)
            if self.tb:
                self.tb.scalars("train", train_means, c.step)
                self.tb.scalars("val", val, c.step)
                for path in grids:
                    self.tb.image(path.name.split("_e")[0], path, c.step)
            shown = " ".join(f"{k} {v:.4g}" for k, v in train_means.items())
            vshown = " ".join(f"{k} {v:.4g}" for k, v in val.items())
            self.console.line(f"epoch {c.epoch}/{self.epochs} train: {shown}" + (f" | val: {vshown}" if val else ""))
        self._save(self._training_summary(c.epoch, train_means, val, started), best=best or self.is_gan)
        return val

    def _interrupt(self, stop: "_StopFlag", started: float) -> None:
        self._flush()
        if self._saved_step != self.counters.step:  # a periodic save of this very step is enough
            self._save(self._training_summary(self.counters.epoch, {}, {}, started), best=False)
        distributed.barrier()  # every rank is past its step and the state is on disk before a requeue
        if self.main and self.cfg.requeue:
            self._requeue()
        name = signal.Signals(stop.signal).name if stop.signal else "signal"
        raise Interrupted(f"stopped by {name} at step {self.counters.step}; state saved in {self.run_dir}. "
                          f"Resume with: {self.resume_hint()}")


    def _requeue(self) -> None:
        """Put the Slurm job back in the queue; it restarts with the same script (use --resume auto)."""
        job = os.environ.get("SLURM_JOB_ID")
        if not job:
            self.console.line("--requeue: not inside a Slurm job (no SLURM_JOB_ID); not requeued")
            return
        try:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
            ok, why = done.returncode == 0, (done.stderr or done.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, why = False, str(exc)
        self.console.line(f"requeued Slurm job {job}" if ok else f"scontrol requeue {job} failed: {why}; "
                          "resubmit the job script (it resumes with --resume auto)")


def train(cfg: TrainConfig, resume: str | None = None, given: set[str] | None = None) -> RunResult:
    """Library entry point of `aecli train`. ``resume``: a run folder, "auto", or None.

    "auto" continues ``cfg.out`` when it holds a resume state and starts fresh otherwise, so one
    Slurm script line serves the first submission and every requeue. On resume the run's recorded
    config is used; ``given`` names the options the user set (None: every field of ``cfg``), which
    must match it except for the resumable ones (runfolder.RESUMABLE).
    """
    started = time.time()
    cfg.validate()
    run_dir = resume_dir(resume, cfg.out)
    resuming = run_dir is not None
    if run_dir is not None:
        cfg = merge_resume(read_run_config(run_dir), cfg, given, run_dir)
        cfg.validate()
    else:
        if not cfg.out and distributed.detect().enabled:
            raise UsageError("give --out RUN_DIR when training with several processes: each process would "
                             "otherwise name its own timestamped folder")
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg.family)
    main = distributed.detect().is_main
    if not main:  # rank 0 creates, locks and writes the run folder; every rank refuses a folder that is not its
        if not resuming and run_dir.is_dir():  # own, or rank 0 would wait for it at the rendezvous
            check_fresh_run_dir(run_dir, cfg)
        return _run(cfg, run_dir, resuming, started, main=False)
    created = make_run_dir(run_dir)
    lock = FolderLock(run_dir, "train")
    try:
        lock.acquire()
    except BaseException:
        remove_folders(created)
        raise

    def unstarted() -> None:  # a fresh run that fails before its first step leaves no half-made folder
        lock.release()
        remove_unstarted(run_dir, created)

    try:
        if not resuming:
            check_fresh_run_dir(run_dir, cfg)
        return _run(cfg, run_dir, resuming, started, main=True, unstarted=None if resuming else unstarted)
    finally:
        lock.release()


def _run(cfg: TrainConfig, run_dir: Path, resuming: bool, started: float, main: bool,
         unstarted: Any = None) -> RunResult:
    """Set up and fit; ``unstarted`` undoes rank 0's folder if set-up fails."""
    with _StopFlag() as stop:  # installed before set-up: a signal while data loads stops at once
        trainer: Trainer | None = None
        try:
            try:
                trainer = Trainer(cfg, run_dir, resume=resuming, started=started)
                if main:
                    write_run_config(run_dir, cfg)
            except BaseException:
                if unstarted is not None:
                    unstarted()
                raise
            return trainer.fit(stop)
        finally:
            del trainer  # DDP's reducer holds the process group: free it before the group, not at exit
            distributed.shutdown()
