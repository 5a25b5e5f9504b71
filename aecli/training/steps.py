"""One optimizer step: the autoencoder step (reconstruction objective, with an optional adversarial
term) and the GAN step. A step object owns the optimizers of what it trains; the training loop calls
``step(x, labels, index)`` and gets the step's loss components back as detached device tensors (no
host sync: the loop checks them in batches, see aecli.training.running)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from aecli.losses import gan_discriminator_loss, gan_generator_loss
from aecli.training.config import OptimConfig
from aecli.training.distributed import DistInfo


def make_optimizer(params: Any, kind: str, lr: float, betas: tuple[float, float], weight_decay: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """Adam/AdamW with the fastest kernels the device has: fused on CUDA, foreach (multi-tensor) on
    CPU, where torch's default is one Python-level update per tensor (measured ~9% of a small step)."""
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, **fast)


class Precision:
    """--precision: autocast to bf16/fp16, and fp16's gradient scaler (a no-op otherwise)."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> Any:
        return nullcontext() if self.dtype is None else torch.autocast(self.device.type, dtype=self.dtype)


class Step:
    """What both steps share: optimizers, the learning rate, clipping and the scaled update."""

    validates = True  # whether the run has a validation loss (a GAN has none)

    def __init__(self, optim: OptimConfig, precision: Precision, dist: DistInfo, device: torch.device) -> None:
        self.optim = optim
        self.precision = precision
        self.dist = dist
        self.device = device
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.modules: dict[str, torch.nn.Module] = {}  # what the resume state holds, by name

    def make_optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        o = self.optim
        return make_optimizer(params, o.optimizer, lr, o.betas, o.weight_decay, self.device)

    def set_lr(self, lr: float) -> None:
        """The scheduled generator/model learning rate ``lr``; discriminators keep their own base lr,
        scaled by the same schedule."""
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                if name in ("model", "g"):
                    group["lr"] = lr
                else:
                    group.setdefault("base_lr", group["lr"])
                    group["lr"] = group["base_lr"] * lr / self.optim.lr

    def backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params: Any) -> None:
        opt.zero_grad(set_to_none=True)
        self.precision.scaler.scale(loss).backward()
        self.apply(opt, params)

    def apply(self, opt: torch.optim.Optimizer, params: Any) -> None:
        """Clip and apply the gradients accumulated in ``params``."""
        scaler = self.precision.scaler
        if self.optim.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.optim.grad_clip)
        scaler.step(opt)
        scaler.update()


class AutoencoderStep(Step):
    """The objective on the model's reconstruction, over --grad-accum-steps micro-batches; then, with
    --adv once --adv-start is reached, one discriminator update on the whole batch."""

    def __init__(self, model: torch.nn.Module, objective: torch.nn.Module, adv_start: int, optim: OptimConfig,
                 precision: Precision, dist: DistInfo, device: torch.device) -> None:
        super().__init__(optim, precision, dist, device)
        self.model, self.objective, self.adv_start = model, objective, adv_start
        self.forward_model = model  # DDP/compile wrap it later (aecli.training.build.wrap_for_speed_and_ddp)
        # the bare module: its optimizer and saved state are the bare one's even once DDP wraps it
        discriminator = self.discriminator = objective.discriminator
        # A loss with learned parameters (the LDM log-variance) trains and resumes with the model.
        loss_params: torch.nn.Module | None = getattr(objective, "trainable", None)
        params = list(model.parameters()) + (list(loss_params.parameters()) if loss_params is not None else [])
        self.optimizers["model"] = self.make_optimizer(params, optim.lr)
        self.modules["model"] = model
        if discriminator is not None:
            self.optimizers["d"] = self.make_optimizer(discriminator.parameters(), optim.lr_d or optim.lr)
            self.modules["disc"] = discriminator
        if loss_params is not None:
            self.modules["loss"] = loss_params

    def __call__(self, x: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        comps, recon = self._generator_update(x, labels, step)
        if self.discriminator is not None and step >= self.adv_start:
            with self.precision.autocast():
                d_loss, d_comps = self.objective.discriminator_loss(x, recon, step)
            self.backward_step(d_loss, self.optimizers["d"], self.discriminator.parameters())
            comps.update(d_comps)
        return comps

    def _generator_update(self, x: torch.Tensor, labels: torch.Tensor | None,
                          step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """K micro-batches each add the gradient of their loss / K, so with per-element mean losses the
        step equals one on the whole batch. Returns the mean components and the detached reconstruction."""
        k = self.optim.grad_accum_steps
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        chunks = zip(x.chunk(k), labels.chunk(k) if labels is not None else [None] * k)
        sums: dict[str, torch.Tensor] = {}
        recons = []
        for i, (xc, lc) in enumerate(chunks):
            # DDP: all-reduce the gradients once, on the last micro-batch
            last = i == k - 1 or not hasattr(self.forward_model, "no_sync")
            with nullcontext() if last else self.forward_model.no_sync():
                with self.precision.autocast():
                    out = self.forward_model(xc, lc)
                    loss, comps = self.objective(xc, out, step)
                self.precision.scaler.scale(loss if k == 1 else loss / k).backward()
            comps["loss"] = loss.detach()
            recons.append(out.recon.detach())
            sums = {n: sums[n] + v.detach() if n in sums else v.detach() for n, v in comps.items()}
        self.apply(opt, self.model.parameters())
        return (sums if k == 1 else {n: v / k for n, v in sums.items()}), torch.cat(recons)


class GANStep(Step):
    """One discriminator update on real and generated images, then one generator update (seed 003's
    MLP GAN; its learning rates follow TTUR: the discriminator's defaults to 4× the generator's)."""

    validates = False

    def __init__(self, gan: torch.nn.Module, optim: OptimConfig, precision: Precision, dist: DistInfo,
                 device: torch.device) -> None:
        super().__init__(optim, precision, dist, device)
        self.gan = gan
        lr_d = optim.lr_d if optim.lr_d is not None else 4 * optim.lr  # seed 003: 4e-4 vs 1e-4
        self.optimizers = {"g": self.make_optimizer(gan.generator.parameters(), optim.lr),
                           "d": self.make_optimizer(gan.discriminator.parameters(), lr_d)}
        self.modules["model"] = gan

    def __call__(self, x: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        gan = self.gan
        z = torch.randn((x.shape[0], *gan.latent_shape), device=self.device)
        with self.precision.autocast():
            fake = gan.decode(z)
            d_loss = gan_discriminator_loss(gan.discriminate(x), gan.discriminate(fake.detach()))
        self.backward_step(d_loss, self.optimizers["d"], gan.discriminator.parameters())
        with self.precision.autocast():
            g_loss = gan_generator_loss(gan.discriminate(fake))
        self.backward_step(g_loss, self.optimizers["g"], gan.generator.parameters())
        return {"loss": g_loss.detach(), "g_loss": g_loss.detach(), "d_loss": d_loss.detach()}

    def apply(self, opt: torch.optim.Optimizer, params: Any) -> None:
        params = list(params)  # read twice: by the all-reduce and by the clipping
        if self.dist.enabled:
            # The GAN is not wrapped in DDP (its G and D steps bypass forward()); average grads by hand.
            for p in params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.dist.world_size
        super().apply(opt, params)


def update_ema(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    """EMA of the floating-point weights; buffers such as BatchNorm's step counter are copied."""
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema[k].copy_(v)
