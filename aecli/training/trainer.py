"""The training loop every family runs on.

Read top to bottom: ``train()`` opens the run folder, ``Trainer`` builds data, model, step (objective
and optimizers) and restores a resumed run's state (aecli.training.build), then ``fit`` runs epochs of
``step`` (aecli.training.steps), validates, writes the run folder and the resume state.

Exactness on resume comes from three rules: the batch order is a function of (seed, epoch) only,
every random draw uses torch's global RNG (saved in the state), and state is saved only at step
boundaries. With them, a run stopped and resumed ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import datetime as _dt
import math
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import aecli
from aecli.checkpoint import save_model
from aecli.data import to_model_input
from aecli.data.augment import augment_batch
from aecli.devices import resolve_device
from aecli.errors import Interrupted, TrainingError, UsageError
from aecli.images import save_grid
from aecli.locking import FolderLock
from aecli.models import Autoencoder
from aecli.training import distributed
from aecli.training.build import build_loaders, build_model, build_step, wrap_for_speed_and_ddp
from aecli.training.config import TrainConfig, parse_duration
from aecli.training.logs import Console, MetricsLog
from aecli.training.rundir import RunDir
from aecli.training.runfolder import (
    check_fresh_run_dir,
    default_run_dir,
    make_run_dir,
    merge_resume,
    read_run_config,
    remove_folders,
    remove_unstarted,
    resume_dir,
    write_run_config,
)
from aecli.training.running import RunningLosses
from aecli.training.schedules import LRSchedule
from aecli.training.setup import fit_warnings, prepare
from aecli.training.state import Counters, load_state, save_state
from aecli.training.steps import make_optimizer, update_ema  # make_optimizer: also the benchmarks'
from aecli.training.stop import OUT_OF_TIME, SIGNALLED, StopFlag, requeue
from aecli.training.trackers import open_trackers

__all__ = ["RunResult", "Trainer", "default_run_dir", "make_optimizer", "train"]


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


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool, started: float | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.files = RunDir(run_dir)
        # --max-time counts from the command's start (data loading included), like a Slurm time limit
        self.deadline = (started or time.time()) + parse_duration(cfg.max_time) if cfg.max_time else None
        self.stopped = ""
        self._init_processes()
        prepared = prepare(cfg, progress=self.main and sys.stdout.isatty())
        self.spec = prepared.spec
        self.model: Autoencoder = build_model(cfg, prepared.model_kwargs, self.dist, self.device)
        self._build_data(prepared.train, prepared.val)
        if not resume and getattr(self.model, "fits_data", False):  # conv-ae/-vae: start at PCA (models/conv.py)
            idx = self.model.fit_indices(len(self.train_set))
            self.model.fit_linear(to_model_input(self.train_set.take(idx), self.spec.value_range).to(self.device))
        self.step, self.objective = build_step(cfg, self.model, self.total_steps, self.spec.value_range,
                                               self.spec.channels, self.dist, self.device)
        self.optimizers = self.step.optimizers
        self.schedule = LRSchedule(cfg.scheduler, cfg.lr, self.total_steps, self.steps_per_epoch,
                                   cfg.warmup_steps, cfg.step_size, cfg.gamma, cfg.patience, self.deadline)
        self.scaler = self.step.precision.scaler
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()} if cfg.ema > 0 else None
        self.counters = Counters()
        self._restore(resume)
        self.losses = RunningLosses(self.device, run_dir, self.counters.extra)
        self._saved_step = self.counters.step if resume else -1
        wrap_for_speed_and_ddp(self.step, self.dist, self.device, cfg.compile)
        self.log = MetricsLog(run_dir, resume_step=self.counters.step if resume else None,
                              epoch_done=self.counters.batch == 0) if self.main else None
        self.console = Console(self.main, self.total_steps)
        self.tb = open_trackers(run_dir, cfg.to_dict(), cfg.trackers, cfg.tensorboard) if self.main else None

    # -- construction ---------------------------------------------------------------------------
    def _init_processes(self) -> None:
        self.dist = distributed.detect()
        self.device = distributed.local_device(self.dist, resolve_device(self.cfg.device))
        distributed.init(self.dist, self.device)
        self.main = self.dist.is_main
        # The same seed on every rank: identical data splits and initial weights (the gan is not DDP-
        # wrapped, so nothing would re-broadcast its weights). Ranks get their own noise stream in _restore.
        torch.manual_seed(self.cfg.seed)
        if self.main:
            self.files.remove_stale_temp_files()

    def _build_data(self, train_set: Any, val_set: Any) -> None:
        cfg = self.cfg
        self.train_set, self.val_set = train_set, val_set
        self.loader, self.val_loader = build_loaders(cfg, train_set, val_set, self.dist, self.device,
                                                     is_gan=not self.model.has_encoder)
        self.step_batch = cfg.batch_size * cfg.grad_accum_steps
        self.steps_per_epoch = len(self.loader)
        self.epochs = cfg.optim.planned_epochs(self.steps_per_epoch)
        self.total_steps = self.steps_per_epoch * self.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.warnings = fit_warnings(cfg, len(train_set) + len(val_set), len(train_set),
                                     self.step_batch * self.dist.world_size, self.spec.image_size,
                                     sum(p.numel() for p in self.model.parameters()))

    def _restore(self, resume: bool) -> None:
        """A resumed run's weights, optimizers, scaler, EMA, schedule, counters and generators."""
        state = load_state(self.run_dir) if resume else None
        if state is not None:
            state.restore(self.step.modules, self.optimizers, self.scaler)
            if self.ema is not None:
                self.ema = {k: v.to(self.device) for k, v in state.module_state("ema").items()}
            self.schedule.load_state(state.schedule)
            self.counters = state.counters
        rank = self.dist.rank
        if rank > 0 and not (state is not None and state.restore_rank_rng(rank, self.device)):
            # A fresh run (or a state without per-rank generators): other ranks seed from (seed, rank, step)
            # so that their VAE noise differs from rank 0's.
            torch.manual_seed((self.cfg.seed * 1_000_003 + rank) * 1_000_003 + self.counters.step)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, stop: StopFlag) -> RunResult:
        """Train to the planned epochs. ``stop`` is installed by the caller before set-up: a signal that
        arrives while data loads ends the process there (nothing to save); from here on it is a flag."""
        stop.training = True
        c, started = self.counters, time.time()
        self._announce()
        self.model.train()
        last_val: dict[str, float] = {}
        train_means: dict[str, float] = {}
        vote = distributed.StopVote(self.device)
        if self.cfg.max_steps and c.step >= self.cfg.max_steps:
            self.stopped = f"--max-steps {self.cfg.max_steps}"
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

    def _run_epoch(self, stop: StopFlag, vote: distributed.StopVote, started: float) -> dict[str, float]:
        cfg, c = self.cfg, self.counters
        self.loader.set_epoch(c.epoch)
        window = [time.time(), 0]  # start time and images of the current log line
        for x_u8, labels in self.loader.iter_from(c.batch):
            x = augment_batch(to_model_input(x_u8, self.spec.value_range), cfg.augment, cfg.seed, c.step,
                              self.dist.rank)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            self.schedule.observe(c.step)  # --max-time: the cosine ends at the deadline
            self.step.set_lr(self.schedule.lr(c.step))
            comps = self.step(x, labels if self.model.is_conditional else None, c.step)
            self.losses.track(c.step, comps)
            self._update_ema()
            c.step += 1
            c.batch += 1
            window[1] += x.shape[0] * self.dist.world_size
            if c.step % cfg.log_every == 0:
                self._log_step(window, started)
            if cfg.save_every_steps and c.step % cfg.save_every_steps == 0:
                self._save(self._training_summary(c.epoch, {}, {}, started), best=False, periodic=True)
            if self._should_stop(stop, vote, started):
                break
        return self.losses.means()

    def _should_stop(self, stop: StopFlag, vote: distributed.StopVote, started: float) -> bool:
        """All ranks agree: a signal saves and exits (Interrupted); --max-time/--max-steps end the run."""
        cfg = self.cfg
        verdict = vote(SIGNALLED if stop.signal is not None else OUT_OF_TIME if self._out_of_time() else 0)
        if verdict == SIGNALLED:
            vote.drain()
            self._interrupt(stop, started)
        if verdict == OUT_OF_TIME or (cfg.max_steps and self.counters.step >= cfg.max_steps):
            self.stopped = f"--max-time {cfg.max_time}" if verdict == OUT_OF_TIME else f"--max-steps {cfg.max_steps}"
            return True
        return False

    def _update_ema(self) -> None:
        if self.ema is not None:
            update_ema(self.ema, self.model, self.cfg.ema)

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def _log_step(self, window: list[float], started: float) -> None:
        """One metrics row and console line every --log-every steps; restarts the throughput window."""
        c = self.counters
        rate = window[1] / max(1e-9, time.time() - window[0])
        means = self.losses.reduced_means()
        if self.main:
            row = {"kind": "step", "split": "train", "epoch": c.epoch + 1, "step": c.step, **means,
                   "lr": self.schedule.lr(c.step - 1), "images_per_s": round(rate, 1),
                   "elapsed_s": round(time.time() - started, 1)}
            self.log.add(row)
            if self.tb:
                self.tb.scalars("train_step", row, c.step)
        self.console.update(c.step, {"loss": means.get("loss", 0.0), "img/s": round(rate, 1)},
                            f"epoch {c.epoch + 1}/{self.epochs} step {c.step}/{self.total_steps}")
        window[:] = [time.time(), 0]

    def _end_epoch(self, train_means: dict[str, float], started: float) -> dict[str, float]:
        c = self.counters
        train_means = {k: float(distributed.all_reduce_mean(torch.tensor(v, device=self.device)))
                       for k, v in train_means.items()}
        val = self._validate(c.step)
        bad = sorted(k for k, v in val.items() if not math.isfinite(v))
        if bad:
            raise TrainingError(f"non-finite validation {', '.join(bad)} after step {c.step}; the last good "
                                f"checkpoint in {self.run_dir} is kept. Lower --lr or add --grad-clip")
        self.schedule.end_epoch(val.get("loss", train_means.get("loss", 0.0)))
        best = bool(val) and (c.best_val is None or val["loss"] < c.best_val)
        if best:
            c.best_val = val["loss"]
        images = self.losses.batches * self.step_batch * self.dist.world_size  # all ranks' share
        c.epoch += 1
        c.batch = 0
        self.losses.reset()
        if self.main:
            self._log_epoch(train_means, val, images, started)
        # a GAN has no validation loss: its last epoch is its best
        self._save(self._training_summary(c.epoch, train_means, val, started), best=best or not self.step.validates)
        return val

    def _log_epoch(self, train_means: dict[str, float], val: dict[str, float], images: int, started: float) -> None:
        c = self.counters
        row = {"kind": "epoch", "epoch": c.epoch, "step": c.step, "lr": self.schedule.lr(max(0, c.step - 1)),
               "images": images, "elapsed_s": round(time.time() - started, 1)}
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

    def _announce(self) -> None:
        """The run's first lines: what trains on what, and the warnings about settings that do not fit."""
        if not self.main:
            return
        cfg = self.cfg
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

    # -- stopping early -------------------------------------------------------------------------
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
        self.losses.flush()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            val = self._validate(c.step)
        means = self.losses.reduced_means()
        if self.main:
            vshown = " ".join(f"{k} {v:.4g}" for k, v in val.items())
            self.console.line(f"stopped at {self.stopped}: step {c.step}, epoch {c.epoch + 1} batch {c.batch}/"
                              f"{self.steps_per_epoch}" + (f" | val: {vshown}" if val else ""))
        if self._saved_step != c.step:
            self._save(self._training_summary(c.epoch, means, val, started), best=False)
        return val

    def _interrupt(self, stop: StopFlag, started: float) -> None:
        self.losses.flush()
        if self._saved_step != self.counters.step:  # a periodic save of this very step is enough
            self._save(self._training_summary(self.counters.epoch, {}, {}, started), best=False)
        distributed.barrier()  # every rank is past its step and the state is on disk before a requeue
        if self.main and self.cfg.requeue:
            requeue(self.console.line)
        name = signal.Signals(stop.signal).name if stop.signal else "signal"
        raise Interrupted(f"stopped by {name} at step {self.counters.step}; state saved in {self.run_dir}. "
                          f"Resume with: {self.resume_hint()}")

    # -- validation, grids, checkpoints ---------------------------------------------------------
    @torch.no_grad()
    def _validate(self, step: int) -> dict[str, float]:
        if not self.step.validates or len(self.val_set) == 0:
            return {}
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=self.device)
        for x_u8, labels in self.val_loader:
            x = to_model_input(x_u8, self.spec.value_range)
            with self.step.precision.autocast():
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
        if self.model.has_encoder and len(self.val_set) > 0:
            idx = list(range(min(n, len(self.val_set))))
            x_u8 = torch.stack([self.val_set[i][0] for i in idx]).to(self.device)
            labels = torch.tensor([self.val_set[i][1] for i in idx], device=self.device)
            x = to_model_input(x_u8, self.spec.value_range)
            recon = model(x, labels if model.is_conditional else None).recon
            both = torch.cat([self.spec.to_unit_range(x), self.spec.to_unit_range(recon.float())])
            written.append(save_grid(both, self.files.grid("recon", epoch + 1), len(idx),
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
            written.append(save_grid(self.spec.to_unit_range(imgs.float()), self.files.grid("samples", epoch + 1),
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
                "loss": self.cfg.loss.summary()}

    def _save(self, summary: dict[str, Any], best: bool, periodic: bool = False) -> None:
        """Rank 0 writes the checkpoints and the state; every file is replaced atomically.

        Weights are checked first: an update can turn a weight non-finite while the loss that caused
        it was still finite, and such weights must never replace the last good checkpoint.
        """
        self.losses.flush()
        self._check_weights_finite()
        self._saved_step = self.counters.step
        rank_rngs = distributed.gather_rng_states(self.device)  # a collective: before rank 0 goes its own way
        if not self.main:
            return
        self.counters.extra.update(self.losses.state())
        files = [self.files.last] + ([self.files.best] if best else []) + \
            ([self.files.periodic(self.counters.step)] if periodic else [])
        for path in files:
            save_model(path, self.model, self.spec, summary, ema_state=self.ema)
        if periodic:
            self._prune_periodic()
        save_state(self.run_dir, models=self.step.modules, optimizers=self.optimizers, counters=self.counters,
                   schedule=self.schedule.state(), scaler=self.scaler, ema=self.ema, rank_rngs=rank_rngs)

    def _prune_periodic(self) -> None:
        """Only aecli's own stepNNNNNNNN.safetensors files count (a user's step-before-x.safetensors stays)."""
        if self.cfg.keep <= 0:
            return
        for old in self.files.periodic_checkpoints()[: -self.cfg.keep]:
            old.unlink(missing_ok=True)

    def _check_weights_finite(self) -> None:
        """One host sync per save (rare), never per step."""
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()])
        if not bool(finite.all()):
            name = [n for (n, _), ok in zip(self.model.named_parameters(), finite.tolist()) if not ok][0]
            raise TrainingError(f"weights became non-finite by step {self.counters.step} (first: {name}); the "
                                f"last good checkpoint in {self.run_dir} is kept. Lower --lr or add --grad-clip")


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
    with StopFlag() as stop:  # installed before set-up: a signal while data loads stops at once
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
