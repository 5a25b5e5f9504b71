"""Seed 000 parts B and D: deep ResNet autoencoders with a flat latent.

- ``resnet-ae`` (B1/B2, ``DeepResNetAutoencoder``): 5 down / 5 up stages of residual blocks,
  BatchNorm, LeakyReLU(0.2), latent 256.
- ``resnet-vae`` (D1/D2, ``DeepResNetVAE``): the same trunk with mean/log-variance heads; can be
  class-conditional (seed 004).
- ``resnet-attn-ae`` (D3, ``DeepResNetAttentionAE``): the AE plus 8-head self-attention wherever a
  stage's feature map is 16×16 or 32×32, GroupNorm.

Encoder stage i: stride-2 conv (width_{i-1} → width_i), ``blocks_per_stage`` residual blocks, then
attention if the stage's resolution is in ``attn_resolutions``. The decoder mirrors it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aecli.errors import UsageError
from aecli.models.base import (
    ACTIVATIONS,
    Autoencoder,
    BaseConfig,
    check_positive,
    make_activation,
    make_norm,
    make_output,
)
from aecli.models.distributions import DiagonalGaussian, PointLatent
from aecli.models.registry import register_model

GROUPS = 32  # GroupNorm(32, C) as usual for ResNets at the seed widths (64…512)
MAX_WIDTH = 1 << 24  # larger values are refused outright; below, registry's parameter limit decides
MAX_STAGES = 8


@dataclass
class ResNetConfig(BaseConfig):
    widths: tuple[int, ...] = (64, 128, 256, 256, 512)  # one per stage; the stage count is len(widths)
    latent_dim: int = 256
    blocks_per_stage: int = 1
    norm: str = "batch"
    activation: str = "leakyrelu"
    attn_resolutions: tuple[int, ...] = ()  # feature-map sizes that get self-attention
    heads: int = 8

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so configs compare equal after a checkpoint round trip.
        self.widths = tuple(self.widths)
        self.attn_resolutions = tuple(self.attn_resolutions)

    def size_multiple(self) -> int:
        n = len(self.widths)
        return 2 ** n if 0 < n <= MAX_STAGES else 1

    def min_size(self) -> int:
        return self.size_multiple()

    def stage_sizes(self) -> list[int]:
        """Feature-map size after each encoder stage's down-sampling (= before each decoder up-sampling)."""
        return [self.image_size // 2 ** (i + 1) for i in range(len(self.widths))]

    def validate(self) -> None:
        check_positive(widths=self.widths, latent_dim=self.latent_dim,
                       blocks_per_stage=self.blocks_per_stage, heads=self.heads)
        if isinstance(self.blocks_per_stage, int) and self.blocks_per_stage > 16:
            raise UsageError(f"blocks_per_stage allows at most 16, got {self.blocks_per_stage}")
        if len(self.widths) > MAX_STAGES:
            raise UsageError(f"widths can list at most {MAX_STAGES} stages, got {len(self.widths)}")
        for name, values in (("widths", self.widths), ("latent_dim", (self.latent_dim,)),
                             ("blocks_per_stage", (self.blocks_per_stage,)), ("heads", (self.heads,))):
            if any(not isinstance(v, int) or v > MAX_WIDTH for v in values):
                raise UsageError(f"{name} must be integers ≤ {MAX_WIDTH}, got {getattr(self, name)!r}")
        if any(not isinstance(r, int) or r <= 0 for r in self.attn_resolutions):
            raise UsageError(f"attn_resolutions must be positive integers, got {list(self.attn_resolutions)}")
        if self.norm not in ("batch", "group", "none"):
            raise UsageError(f"norm must be one of batch, group, none, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        super().validate()
        for size, width in zip(self.stage_sizes(), self.widths):
            if size in self.attn_resolutions and width % self.heads:
                raise UsageError(f"attention at {size}×{size} needs the stage width {width} to be a "
                                 f"multiple of heads={self.heads}; change widths or heads")


@dataclass
class ResNetAEConfig(ResNetConfig):
    def validate(self) -> None:
        if self.num_classes:
            raise UsageError("plain autoencoders are not conditional (num_classes must be 0); "
                             "use resnet-vae for a class-conditional model")
        super().validate()


@dataclass
class ResNetAttnConfig(ResNetAEConfig):
    norm: str = "group"
    attn_resolutions: tuple[int, ...] = (16, 32)


def _norm(name: str, width: int) -> nn.Module:
    # At least 2 channels per group: a 1-channel group on a 1×1 map (tiny widths at 32 px) would
    # normalise a single value, which GroupNorm refuses and which would erase the signal anyway.
    return make_norm(name, width, min(GROUPS, max(1, width // 2)))


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, width: int, norm: str, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(norm, width), make_activation(activation), nn.Conv2d(width, width, 3, 1, 1),
            _norm(norm, width), make_activation(activation), nn.Conv2d(width, width, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all pixels of a feature map, with a residual connection."""

    def __init__(self, width: int, heads: int, norm: str) -> None:
        super().__init__()
        self.heads = heads
        self.norm = _norm(norm, width)
        self.qkv = nn.Conv2d(width, 3 * width, 1)
        self.proj = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # each (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # flash/memory-efficient kernels on GPU
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class DeepResNetAutoencoder(Autoencoder):
    """Shared trunk; subclasses choose the latent head (point or Gaussian)."""

    Config = ResNetConfig

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__(config)
        c = config
        w = list(c.widths)
        sizes = c.stage_sizes()
        self.stem = nn.Conv2d(c.channels, w[0], 3, 1, 1)
        self.down = nn.ModuleList()
        cin = w[0]
        for width, size in zip(w, sizes):
            layers: list[nn.Module] = [nn.Conv2d(cin, width, 4, 2, 1)]
            layers += [ResBlock(width, c.norm, c.activation) for _ in range(c.blocks_per_stage)]
            if size in c.attn_resolutions:
                layers.append(SelfAttention(width, c.heads, c.norm))
            self.down.append(nn.Sequential(*layers))
            cin = width
        self.bottom = sizes[-1]
        flat = w[-1] * self.bottom * self.bottom
        # Norm+act before flattening: the last residual block's output is un-normalised.
        self.enc_out = nn.Sequential(_norm(c.norm, w[-1]), make_activation(c.activation),
                                     nn.Flatten())
        self._init_head(flat)
        self.from_latent = nn.Sequential(nn.Linear(c.latent_dim, flat),
                                         nn.Unflatten(1, (w[-1], self.bottom, self.bottom)))
        # Decoder stage i (i = n-1 … 0) works at sizes[i], then up-samples to width_{i-1} (w_0 at the end).
        self.up = nn.ModuleList()
        for i in range(len(w) - 1, -1, -1):
            layers = [ResBlock(w[i], c.norm, c.activation) for _ in range(c.blocks_per_stage)]
            if sizes[i] in c.attn_resolutions:
                layers.append(SelfAttention(w[i], c.heads, c.norm))
            layers.append(nn.ConvTranspose2d(w[i], w[max(i - 1, 0)], 4, 2, 1))
            self.up.append(nn.Sequential(*layers))
        self.head = nn.Sequential(_norm(c.norm, w[0]), make_activation(c.activation),
                                  nn.Conv2d(w[0], c.channels, 3, 1, 1), make_output(c.output_activation))
        self._init_conditioning()

    def _init_head(self, flat: int) -> None:
        self.to_latent = nn.Linear(flat, self.config.latent_dim)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for stage in self.down:
            h = stage(h)
        return self.enc_out(h)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian | PointLatent:
        return PointLatent(self.to_latent(self.features(x)))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z)
        for stage in self.up:
            h = stage(h)
        return self.head(h)


@register_model("resnet-ae")
class ResNetAE(DeepResNetAutoencoder):
    Config = ResNetAEConfig
    description = "deep ResNet autoencoder (5 down/5 up residual stages), flat latent"
    seed = "000 B1/B2 (DeepResNetAutoencoder)"


@register_model("resnet-vae")
class ResNetVAE(DeepResNetAutoencoder):
    Config = ResNetConfig
    description = "deep ResNet VAE: the resnet-ae trunk with mean/log-variance heads"
    seed = "000 D1/D2 (DeepResNetVAE); conditional: 004"
    has_prior = True

    def _init_head(self, flat: int) -> None:
        self.to_mean = nn.Linear(flat, self.config.latent_dim)
        self.to_logvar = nn.Linear(flat, self.config.latent_dim)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        h = self.features(x)
        return DiagonalGaussian(self.to_mean(h), self.to_logvar(h))


@register_model("resnet-attn-ae")
class ResNetAttnAE(DeepResNetAutoencoder):
    Config = ResNetAttnConfig
    description = "deep ResNet autoencoder with multi-head self-attention at 16² and 32², GroupNorm"
    seed = "000 D3 (DeepResNetAttentionAE)"
