"""Vector quantiser of VQ-VAE (van den Oord et al. 2017) with the options VQGAN/LDM practice added.

Each code vector z_e (one per latent pixel) is replaced by its nearest codebook entry e_k,
k = argmin_j ||z_e - e_j||². The decoder sees z_e + sg(e_k - z_e): the value of e_k with the gradient
of z_e (the straight-through estimator). The loss is

    ||sg(z_e) - e_k||²  +  β ||z_e - sg(e_k)||²      (codebook term + commitment term, means over elements)

With ``ema=True`` the codebook term is dropped and the codebook follows exponential moving averages
instead (paper appendix A.1): N_k ← γN_k + (1-γ)n_k, m_k ← γm_k + (1-γ)Σ z_e assigned to k,
e_k = m_k / Ñ_k with Laplace-smoothed counts Ñ_k = (N_k + ε)/(N + Kε)·N.

Dead-code restart (``dead_after`` > 0): a code no training batch has chosen for ``dead_after`` steps is
moved onto a randomly drawn encoder output of the current batch. Draws use torch's global RNG, which
the training state saves, so a resumed run restarts the same codes with the same vectors.

Every statistic is in float32 whatever the autocast dtype: argmin over fp16 distances ties too often.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, H, W): straight-through codebook vectors, input dtype
    indices: torch.Tensor  # (B, H, W) int64 code indices
    loss: torch.Tensor  # codebook + β·commitment (EMA: β·commitment), what the objective adds
    commitment: torch.Tensor  # ||z_e - sg(e)||², detached
    codebook_term: torch.Tensor  # ||sg(z_e) - e||², detached (logged in EMA mode too)
    perplexity: torch.Tensor  # exp(entropy of this batch's code usage), detached
    used: torch.Tensor  # fraction of the codebook this batch used, detached
    restarted: torch.Tensor  # codes restarted in this call (0 outside training)

    def log_parts(self) -> dict[str, torch.Tensor]:
        """The training-log columns (codebook health next to the losses)."""
        return {"vq_loss": self.loss.detach(), "vq_commitment": self.commitment,
                "vq_codebook": self.codebook_term, "vq_perplexity": self.perplexity,
                "vq_used": self.used, "vq_restarted": self.restarted}


def usage_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) of a code-count vector: K when all K codes are used equally, 1 when one code is."""
    p = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """``codebook_size`` codes of ``code_dim`` numbers; quantises (B, code_dim, H, W) feature maps."""

    def __init__(self, codebook_size: int, code_dim: int, commitment: float = 0.25, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, dead_after: int = 0) -> None:
        super().__init__()
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.commitment, self.ema, self.decay, self.eps, self.dead_after = commitment, ema, decay, eps, dead_after
        # taming's init; with EMA the codebook is a parameter that receives no gradient (the
        # optimizer skips it), so checkpoints hold it under the same name in both modes.
        weight = torch.empty(codebook_size, code_dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        self.codebook = nn.Parameter(weight, requires_grad=not ema)
        if ema:
            self.register_buffer("ema_count", torch.ones(codebook_size))
            self.register_buffer("ema_sum", weight.detach().clone())
        # Steps since each code was last chosen in training (dead-code restart, and a log of collapse).
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat`` (N, code_dim), float32 distances."""
        # autocast would run the matmul in bf16/fp16 even on float32 inputs
        off = torch.autocast(flat.device.type, enabled=False) if flat.device.type in ("cpu", "cuda") \
            else nullcontext()
        with off:
            e = self.codebook.float()
            d = flat.float().pow(2).sum(1, keepdim=True) - 2.0 * flat.float() @ e.t() + e.pow(2).sum(1)
        return d.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of (B, H, W) indices as a (B, code_dim, H, W) map."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor, update: bool = False) -> QuantizerOutput:
        """Quantise ``z`` (B, D, H, W). ``update``: a training step (restart dead codes, EMA update,
        usage counters); False for validation and inference, which change nothing."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()
        restarted = torch.zeros((), device=z.device)
        if update and self.dead_after > 0:
            restarted = self._restart_dead(flat.detach())
        idx = self.nearest(flat.detach())
        e = F.embedding(idx, self.codebook).float()
        commitment = F.mse_loss(flat, e.detach())
        codebook_term = F.mse_loss(e, flat.detach())
        loss = self.commitment * commitment + (0.0 if self.ema else codebook_term)
        # straight-through: value e, gradient of z. Without a graph, e itself: z + (e - z) is e only up
        # to rounding, and inference should hand out the codebook's vectors exactly.
        quantized = flat + (e - flat).detach() if flat.requires_grad else e
        # index_add_, not bincount: it also runs on the meta device (parameter counts, shape checks)
        counts = flat.new_zeros(self.codebook_size).index_add_(0, idx, flat.new_ones(len(idx)))
        if update:
            counts = self._update(flat.detach(), idx, counts)
        return QuantizerOutput(
            quantized=quantized.view(b, h, w, d).permute(0, 3, 1, 2).contiguous().to(z.dtype),
            indices=idx.view(b, h, w), loss=loss, commitment=commitment.detach(),
            codebook_term=codebook_term.detach(), perplexity=usage_perplexity(counts).detach(),
            used=(counts > 0).float().mean(), restarted=restarted)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One training step's bookkeeping; returns the (all-rank) counts."""
        sums = torch.zeros(self.codebook_size, self.code_dim, device=flat.device).index_add_(0, idx, flat) \
            if self.ema else None
        if _distributed():  # every rank must keep the same codebook
            torch.distributed.all_reduce(counts)
            if sums is not None:
                torch.distributed.all_reduce(sums)
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        if self.ema:
            assert sums is not None
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.codebook_size * self.eps) * n
            self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        return counts

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> torch.Tensor:
        """Move codes unused for ``dead_after`` steps onto random rows of ``flat``; returns how many.

        Written without a host sync (no ``nonzero``): every code draws a candidate row each step and
        only dead codes take it, so the RNG is advanced the same way whatever dies."""
        dead = self.unused_steps >= self.dead_after
        k = self.codebook_size
        # Distinct rows when the batch has enough of them (so two restarted codes do not coincide).
        pick = torch.randperm(len(flat), device=flat.device)[:k] if len(flat) >= k else \
            torch.randint(len(flat), (k,), device=flat.device)
        new = flat[pick]
        if _distributed():  # rank 0's choice for everyone
            torch.distributed.broadcast(new, 0)
        self.codebook.copy_(torch.where(dead.unsqueeze(1), new.to(self.codebook.dtype), self.codebook))
        if self.ema:
            self.ema_count.masked_fill_(dead, 1.0)
            self.ema_sum.copy_(torch.where(dead.unsqueeze(1), new, self.ema_sum))
        self.unused_steps.masked_fill_(dead, 0)
        return dead.sum().float()

    def extra_repr(self) -> str:
        return (f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, commitment={self.commitment}, "
                f"ema={self.ema}, dead_after={self.dead_after}")
