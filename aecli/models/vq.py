"""`vq-vae` and `vqgan`: vector-quantised autoencoders (VQ-VAE; taming-transformers' VQGAN; the LDM VQ
first stages).

One taming-style trunk serves both; the families differ in defaults, and vqgan is meant to be trained
with the perceptual + adversarial objective (`--recon l1 --lpips 1 --adv ...`, see examples/vqgan_f16.toml).

Encoder: 3×3 conv → per level ``blocks_per_stage`` residual blocks at ``widths[i]`` (self-attention where
the feature map's side is in ``attn_resolutions``), a stride-2 conv to the next level → middle block
(res, [attention], res) → norm, act, 3×3 conv to ``code_dim`` channels. So the downsampling factor is
f = 2^(len(widths) - 1), as with taming's ``ch_mult``. The decoder mirrors it with nearest-neighbour
upsampling + 3×3 conv. The quantiser sits between them (aecli/models/quantizer.py).

The latent of an image is its map of quantised code vectors (code_dim × s/f × s/f): what ``encode``
returns and ``decode`` takes; ``encode_indices``/``decode_indices`` work with the integer codes.
There is no prior over the codes (that would be a second, autoregressive or diffusion model), so
``sample`` refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from aecli.errors import UsageError
from aecli.models.base import (
    ACTIVATIONS,
    NORMS,
    AEOutput,
    Autoencoder,
    BaseConfig,
    make_activation,
    make_output,
)
from aecli.models.conv import check_ints, reject_classes
from aecli.models.distributions import PointLatent
from aecli.models.quantizer import QuantizerOutput, VectorQuantizer
from aecli.models.registry import register_model
from aecli.models.resnet import ResBlock, SelfAttention, _norm

MAX_LEVELS = 8
MAX_CODES = 1 << 20

NO_PRIOR_OVER_CODES = ("a vector-quantised autoencoder has no prior over its codes (sampling needs a "
                       "second model, e.g. a transformer trained on its code indices), and a Gaussian fitted "
                       "to its latents would decode off-codebook vectors")


@dataclass
class VQConfig(BaseConfig):
    widths: tuple[int, ...] = (64, 128, 128)  # one per resolution level; f = 2^(len - 1)
    blocks_per_stage: int = 2
    attn_resolutions: tuple[int, ...] = ()  # feature-map sides that get self-attention
    mid_attention: bool = False  # self-attention in the middle block (taming/LDM: yes)
    heads: int = 1  # taming's AttnBlock is single-head
    norm: str = "none"
    activation: str = "relu"
    # the quantiser
    codebook_size: int = 512  # K
    code_dim: int = 64  # D, the channels of the latent map
    commitment: float = 0.25  # β of the commitment term
    ema_codebook: bool = False  # codebook by exponential moving averages instead of its loss term
    ema_decay: float = 0.99
    dead_after: int = 0  # restart a code unused for this many training steps (0 = never)

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        self.attn_resolutions = tuple(self.attn_resolutions)

    @property
    def factor(self) -> int:
        n = len(self.widths)
        return 2 ** (n - 1) if 0 < n <= MAX_LEVELS else 1

    def size_multiple(self) -> int:
        return self.factor

    def min_size(self) -> int:
        return max(self.factor, 4)

    def validate(self) -> None:
        if len(self.widths) > MAX_LEVELS:
            raise UsageError(f"widths lists at most {MAX_LEVELS} levels, got {len(self.widths)}")
        check_ints(widths=self.widths, blocks_per_stage=self.blocks_per_stage, heads=self.heads,
                   codebook_size=self.codebook_size, code_dim=self.code_dim)
        if self.blocks_per_stage > 16:
            raise UsageError(f"blocks_per_stage allows at most 16, got {self.blocks_per_stage}")
        if self.codebook_size > MAX_CODES or self.codebook_size < 2:
            raise UsageError(f"codebook_size must be between 2 and {MAX_CODES}, got {self.codebook_size}")
        if any(isinstance(r, bool) or not isinstance(r, int) or r <= 0 for r in self.attn_resolutions):
            raise UsageError(f"attn_resolutions must be positive integers, got {list(self.attn_resolutions)}")
        if self.norm not in NORMS:
            raise UsageError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        for name in ("mid_attention", "ema_codebook"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.commitment, bool) or not isinstance(self.commitment, (int, float)) \
                or not 0 <= self.commitment < float("inf"):
            raise UsageError(f"commitment (β) must be a number >= 0, e.g. 0.25; got {self.commitment!r}")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) \
                or not 0 < self.ema_decay < 1:
            raise UsageError(f"ema_decay must be in (0, 1), e.g. 0.99; got {self.ema_decay!r}")
        if isinstance(self.dead_after, bool) or not isinstance(self.dead_after, int) or self.dead_after < 0:
            raise UsageError(f"dead_after must be a whole number of steps >= 0 (0 = no restarts), "
                             f"got {self.dead_after!r}")
        reject_classes(type(self).family_name, self.num_classes)
        super().validate()
        for side, width in zip(self.level_sizes(), self.widths):
            if side in self.attn_resolutions and width % self.heads:
                raise UsageError(f"attention at {side}×{side} needs the width {width} to be a multiple of "
                                 f"heads={self.heads}; change widths or heads")
        if self.mid_attention and self.widths[-1] % self.heads:
            raise UsageError(f"mid_attention needs widths[-1]={self.widths[-1]} to be a multiple of heads={self.heads}")

    family_name: ClassVar[str] = "vq-vae"

    def level_sizes(self) -> list[int]:
        """Feature-map side at each level (the input size, halved per level)."""
        return [self.image_size // 2 ** i for i in range(len(self.widths))]


@dataclass
class VQGANConfig(VQConfig):
    widths: tuple[int, ...] = (64, 128, 128, 256)  # f8
    attn_resolutions: tuple[int, ...] = ()
    mid_attention: bool = True
    norm: str = "group"
    activation: str = "silu"
    codebook_size: int = 1024
    code_dim: int = 64

    family_name: ClassVar[str] = "vqgan"


def _level(width: int, side: int, cfg: VQConfig) -> list[nn.Module]:
    layers: list[nn.Module] = [ResBlock(width, cfg.norm, cfg.activation) for _ in range(cfg.blocks_per_stage)]
    if side in cfg.attn_resolutions:
        layers.append(SelfAttention(width, cfg.heads, cfg.norm))
    return layers


def _middle(width: int, cfg: VQConfig) -> nn.Sequential:
    attn = [SelfAttention(width, cfg.heads, cfg.norm)] if cfg.mid_attention else []
    return nn.Sequential(ResBlock(width, cfg.norm, cfg.activation), *attn, ResBlock(width, cfg.norm, cfg.activation))


class VQAutoencoder(Autoencoder):
    """The shared trunk + quantiser."""

    Config = VQConfig
    sample_refusal = NO_PRIOR_OVER_CODES

    def __init__(self, config: VQConfig) -> None:
        super().__init__(config)
        c = config
        w, sides = list(c.widths), c.level_sizes()
        enc: list[nn.Module] = [nn.Conv2d(c.channels, w[0], 3, 1, 1)]
        for i, (width, side) in enumerate(zip(w, sides)):
            enc += _level(width, side, c)
            if i < len(w) - 1:
                enc.append(nn.Conv2d(width, w[i + 1], 4, 2, 1))
        enc += [_middle(w[-1], c), _norm(c.norm, w[-1]), make_activation(c.activation),
                nn.Conv2d(w[-1], c.code_dim, 3, 1, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantizer(c.codebook_size, c.code_dim, c.commitment, ema=c.ema_codebook,
                                         decay=c.ema_decay, dead_after=c.dead_after)
        dec: list[nn.Module] = [nn.Conv2d(c.code_dim, w[-1], 3, 1, 1), _middle(w[-1], c)]
        for i in range(len(w) - 1, -1, -1):
            dec += _level(w[i], sides[i], c)
            if i > 0:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w[i], w[i - 1], 3, 1, 1)]
        dec += [_norm(c.norm, w[0]), make_activation(c.activation), nn.Conv2d(w[0], c.channels, 3, 1, 1),
                make_output(c.output_activation)]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        side = self.config.image_size // self.config.factor
        return (self.config.code_dim, side, side)

    def quantize(self, x: torch.Tensor, update: bool = False) -> QuantizerOutput:
        return self.quantizer(self.encoder(x), update=update)

    def encode(self, x: torch.Tensor) -> PointLatent:
        """The quantised code vectors (never updates the codebook, even in training mode)."""
        return PointLatent(self.quantize(x).quantized)

    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes, (B, s/f, s/f) int64."""
        return self.quantize(x).indices

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images from (B, h, w) integer codes; codes outside the codebook are refused."""
        if indices.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) or indices.dim() != 3:
            raise UsageError(f"code indices must be an integer tensor (B, H, W); got {indices.dtype} "
                             f"{tuple(indices.shape)}")
        k = self.config.codebook_size
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
            raise UsageError(f"code indices must be in 0 … {k - 1} (this codebook has {k} codes); got "
                             f"{int(indices.min())} … {int(indices.max())}")
        return self.decode(self.quantizer.lookup(indices.long()))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                sample_posterior: bool | None = None) -> AEOutput:
        """Reconstruct ``x``; in training mode the codebook's bookkeeping (EMA, restarts) runs too."""
        q = self.quantize(x, update=self.training)
        recon = self.decode(q.quantized, labels)
        return AEOutput(recon=recon, posterior=PointLatent(q.quantized), z=q.quantized, quant=q)

    def sample(self, n: int, labels: torch.Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise UsageError(f"{self.family} cannot sample: {NO_PRIOR_OVER_CODES}")

    def extra_repr(self) -> str:
        return f"family={self.family!r}, f={self.config.factor}"


@register_model("vq-vae")
class VQVAE(VQAutoencoder):
    Config = VQConfig
    description = ("VQ-VAE: residual conv encoder/decoder around a vector quantiser (codebook, commitment β, "
                   "straight-through; EMA codebook and dead-code restart as options)")
    seed = "van den Oord et al. 2017 (not in the seeds; issue 19)"


@register_model("vqgan")
class VQGAN(VQAutoencoder):
    Config = VQGANConfig
    description = ("VQGAN: taming-style ResNet trunk with attention around the vector quantiser; train with "
                   "L1 + LPIPS + PatchGAN (examples/vqgan_f16.toml)")
    seed = "Esser et al. 2021 / LDM VQ first stages (not in the seeds; issue 19)"

