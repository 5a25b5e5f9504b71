"""`skip-ae`: seed 000 A1–A4 ``SkipConvAutoencoder``, a U-Net style autoencoder.

Encoder: ``num_blocks`` stride-2 blocks (channels base·2^i), flattened into a ``latent_dim`` code.
Decoder: the mirror image; after each up-sampling it concatenates the encoder feature of the same
resolution (the skip). The deepest feature is *not* skipped: it only reaches the decoder through the
latent, otherwise the bottleneck could be bypassed entirely.

Because the decoder needs the skips, a latent alone cannot be decoded (``decodes_latent = False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aecli.errors import UsageError
from aecli.models.base import (
    ACTIVATIONS,
    AEOutput,
    Autoencoder,
    BaseConfig,
    check_positive,
    make_activation,
    make_norm,
    make_output,
)
from aecli.models.distributions import PointLatent
from aecli.models.registry import register_model

# GroupNorm(8, C) as in small U-Nets: 32 groups would make 32-channel layers an instance norm.
GROUPS = 8
MAX_WIDTH = 1 << 24  # larger values are refused outright; below, registry's parameter limit decides


@dataclass
class SkipConfig(BaseConfig):
    base_channels: int = 32  # 48 for seed 000 A4 ("wide")
    num_blocks: int = 4
    latent_dim: int = 256
    norm: str = "group"  # group (A1, A3, A4) | batch (A2)
    activation: str = "silu"  # silu (A1, A2, A4) | leakyrelu (A3, slope 0.2)

    def size_multiple(self) -> int:
        return 2 ** self.num_blocks if isinstance(self.num_blocks, int) and 0 < self.num_blocks <= 8 else 1

    def min_size(self) -> int:
        return self.size_multiple()

    def validate(self) -> None:
        check_positive(base_channels=self.base_channels, num_blocks=self.num_blocks, latent_dim=self.latent_dim)
        if not isinstance(self.num_blocks, int) or self.num_blocks > 8:
            raise UsageError(f"num_blocks must be an integer from 1 to 8, got {self.num_blocks!r}")
        for name in ("base_channels", "latent_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value > MAX_WIDTH:
                raise UsageError(f"{name} must be an integer ≤ {MAX_WIDTH}, got {value!r}")
        if self.norm not in ("group", "batch", "none"):
            raise UsageError(f"norm must be one of group, batch, none, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.num_classes:
            raise UsageError("skip-ae is not conditional (num_classes must be 0); "
                             "use resnet-vae or conv-vae for a class-conditional model")
        super().validate()


def _norm(name: str, width: int) -> nn.Module:
    # At least 2 channels per group, so a 1×1 map (16 px input) never normalises a lone value.
    return make_norm(name, width, min(GROUPS, max(1, width // 2)))


def _conv_block(cin: int, cout: int, cfg: SkipConfig, stride: int = 1) -> nn.Sequential:
    # 4×4 kernels for stride 2 so every input pixel is covered evenly (no checkerboard bias).
    k, p = (4, 1) if stride == 2 else (3, 1)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, p), _norm(cfg.norm, cout),
                         make_activation(cfg.activation))


def _up_block(cin: int, cout: int, cfg: SkipConfig) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), _norm(cfg.norm, cout),
                         make_activation(cfg.activation))


@register_model("skip-ae")
class SkipConvAutoencoder(Autoencoder):
    Config = SkipConfig
    description = "U-Net style conv autoencoder with skip connections and a flat latent"
    seed = "000 A1–A4 (SkipConvAutoencoder)"
    decodes_latent = False

    def __init__(self, config: SkipConfig) -> None:
        super().__init__(config)
        c = config
        widths = [c.base_channels * 2 ** i for i in range(c.num_blocks)]
        self.widths = widths
        # Encoder block i: stride-2 conv then a 3×3 conv, both Conv→Norm→Act.
        self.down = nn.ModuleList()
        cin = c.channels
        for w in widths:
            self.down.append(nn.Sequential(_conv_block(cin, w, c, stride=2), _conv_block(w, w, c)))
            cin = w
        self.bottom = c.image_size // 2 ** c.num_blocks
        flat = widths[-1] * self.bottom * self.bottom
        self.to_latent = nn.Sequential(nn.Flatten(), nn.Linear(flat, c.latent_dim))
        self.from_latent = nn.Sequential(nn.Linear(c.latent_dim, flat),
                                         nn.Unflatten(1, (widths[-1], self.bottom, self.bottom)),
                                         make_activation(c.activation))
        # Decoder step i (i = n-1 … 1): up-sample w_i → w_{i-1}, concat skip i-1, fuse 2·w_{i-1} → w_{i-1}.
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in range(c.num_blocks - 1, 0, -1):
            self.up.append(_up_block(widths[i], widths[i - 1], c))
            self.fuse.append(_conv_block(2 * widths[i - 1], widths[i - 1], c))
        self.final_up = _up_block(widths[0], widths[0], c)
        self.head = nn.Sequential(nn.Conv2d(widths[0], c.channels, 3, 1, 1), make_output(c.output_activation))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    def encode_with_skips(self, x: torch.Tensor) -> tuple[PointLatent, list[torch.Tensor]]:
        """The code and the skip features (highest resolution first; the deepest is not a skip)."""
        feats = []
        h = x
        for block in self.down:
            h = block(h)
            feats.append(h)
        return PointLatent(self.to_latent(h)), feats[:-1]

    def decode_with_skips(self, z: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        if len(skips) != len(self.fuse):
            raise UsageError(f"skip-ae needs {len(self.fuse)} skip features, got {len(skips)}")
        h = self.from_latent(z)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips)):
            h = fuse(torch.cat([up(h), skip], dim=1))
        return self.head(self.final_up(h))

    def encode(self, x: torch.Tensor) -> PointLatent:
        return self.encode_with_skips(x)[0]

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise UsageError("skip-ae's decoder needs the encoder's skip features; interpolation/sampling are "
                         "not supported for it (use resnet-ae or conv-ae for latent-space commands)")

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                sample_posterior: bool | None = None) -> AEOutput:
        posterior, skips = self.encode_with_skips(x)
        z = posterior.mode()
        return AEOutput(recon=self.decode_with_skips(z, skips), posterior=posterior, z=z)
