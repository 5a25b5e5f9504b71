"""``ldm-kl``: the latent-diffusion KL autoencoder (Rombach et al. 2022), i.e. the Stable Diffusion VAE.

The same computation as diffusers' ``AutoencoderKL`` and LDM's ``AutoencoderKL``, configured with
diffusers' names, and with diffusers' parameter names, so its state dict *is* a diffusers state dict
(aecli.interop maps the single-file LDM layout onto it):

    encoder: conv_in → per level (block_out_channels[i]): ``layers_per_block`` ResNet blocks, then a
             stride-2 conv (all levels but the last) → mid block (ResNet, self-attention, ResNet)
             → GroupNorm, SiLU, conv_out to 2·latent_channels (mean and log-variance)
    quant_conv (1×1), the DiagonalGaussian posterior, post_quant_conv (1×1)
    decoder: conv_in → mid block → per level, widest first: ``layers_per_block + 1`` ResNet blocks,
             then nearest ×2 up-sampling and a conv (all levels but the last) → GroupNorm, SiLU, conv_out

The decoder's output is unbounded (no tanh) like the reference; data live in [-1, 1].
``scaling_factor``/``shift_factor`` describe the latent convention diffusion models train on
(``(z − shift) · scale``): ``encode``/``decode`` work on raw latents like diffusers' ``vae.encode``/
``vae.decode``, and ``sample()`` draws from N(0, I) in the scaled space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aecli.errors import UsageError
from aecli.models.base import Autoencoder, BaseConfig, check_positive
from aecli.models.distributions import DiagonalGaussian
from aecli.models.registry import register_model

EPS = 1e-6  # every GroupNorm of the reference uses eps=1e-6
MAX_LEVELS = 8
MAX_WIDTH = 1 << 16


@dataclass
class LDMKLConfig(BaseConfig):
    # Defaults: the kl-f8 autoencoder of Stable Diffusion (83.7M parameters, 4×32×32 latent at 256 px).
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 1.0  # SD's kl-f8: 0.18215 (1 / std of its latents)
    shift_factor: float = 0.0
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    image_size: int = 256
    output_activation: str = "none"

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)  # JSON gives lists

    def size_multiple(self) -> int:
        n = len(self.block_out_channels)
        return 2 ** (n - 1) if 0 < n <= MAX_LEVELS else 1

    def min_size(self) -> int:
        return max(8, self.size_multiple())

    def validate(self) -> None:
        check_positive(block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
                       latent_channels=self.latent_channels, norm_num_groups=self.norm_num_groups)
        if len(self.block_out_channels) > MAX_LEVELS:
            raise UsageError(f"block_out_channels can list at most {MAX_LEVELS} levels, "
                             f"got {len(self.block_out_channels)}")
        for name, values in (("block_out_channels", self.block_out_channels),
                             ("latent_channels", (self.latent_channels,)),
                             ("layers_per_block", (self.layers_per_block,)),
                             ("norm_num_groups", (self.norm_num_groups,))):
            if any(not isinstance(v, int) or isinstance(v, bool) or v > MAX_WIDTH for v in values):
                raise UsageError(f"{name} must be integers ≤ {MAX_WIDTH}, got {getattr(self, name)!r}")
        if self.layers_per_block > 16:
            raise UsageError(f"layers_per_block allows at most 16, got {self.layers_per_block}")
        bad = [w for w in self.block_out_channels if w % self.norm_num_groups]
        if bad:
            raise UsageError(f"block_out_channels {list(bad)} are not multiples of norm_num_groups="
                             f"{self.norm_num_groups} (GroupNorm needs that); change either")
        for name in ("scaling_factor", "shift_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                    or abs(value) == float("inf"):
                raise UsageError(f"{name} must be a finite number, got {value!r}")
        if self.scaling_factor <= 0:
            raise UsageError(f"scaling_factor must be > 0, got {self.scaling_factor}")
        for name in ("use_quant_conv", "use_post_quant_conv", "mid_block_add_attention"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.output_activation == "sigmoid":
            raise UsageError("ldm-kl works on data in [-1, 1]: output_activation must be none or tanh")
        super().validate()


def _norm(config: LDMKLConfig, width: int) -> nn.GroupNorm:
    return nn.GroupNorm(config.norm_num_groups, width, eps=EPS)


class ResnetBlock(nn.Module):
    """x + conv(SiLU(norm(conv(SiLU(norm(x)))))); a 1×1 conv on the shortcut when the width changes."""

    def __init__(self, config: LDMKLConfig, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = _norm(config, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = _norm(config, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, residual. Linear q/k/v/out (diffusers' layout;
    LDM's 1×1 convs are the same maps)."""

    def __init__(self, config: LDMKLConfig, width: int) -> None:
        super().__init__()
        self.group_norm = _norm(config, width)
        self.to_q = nn.Linear(width, width)
        self.to_k = nn.Linear(width, width)
        self.to_v = nn.Linear(width, width)
        self.to_out = nn.ModuleList([nn.Linear(width, width)])  # "to_out.0", as diffusers names it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = (proj(t).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))  # one head
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # softmax(q kᵀ / √C) v
        return x + self.to_out[0](out).transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    def __init__(self, config: LDMKLConfig, width: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(config, width, width), ResnetBlock(config, width, width)])
        self.attentions = nn.ModuleList([AttnBlock(config, width)] if config.mid_block_add_attention else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class Downsample(nn.Module):
    """Stride-2 3×3 conv after zero-padding one pixel right and bottom (the reference's asymmetric pad)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ResNet blocks, then an optional resampler (``downsamplers``/``upsamplers``)."""

    def __init__(self, resnets: list[ResnetBlock], down: Downsample | None = None,
                 up: Upsample | None = None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        if down is not None:
            self.downsamplers = nn.ModuleList([down])
        if up is not None:
            self.upsamplers = nn.ModuleList([up])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resnets:
            x = block(x)
        for resample in getattr(self, "downsamplers", []) or getattr(self, "upsamplers", []):
            x = resample(x)
        return x


class Encoder(nn.Module):
    def __init__(self, config: LDMKLConfig) -> None:
        super().__init__()
        widths, n = config.block_out_channels, config.layers_per_block
        self.conv_in = nn.Conv2d(config.channels, widths[0], 3, 1, 1)
        self.down_blocks = nn.ModuleList()
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks = [ResnetBlock(config, cin if j == 0 else w, w) for j in range(n)]
            self.down_blocks.append(Level(blocks, down=Downsample(w) if i < len(widths) - 1 else None))
            cin = w
        self.mid_block = MidBlock(config, widths[-1])
        self.conv_norm_out = _norm(config, widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.latent_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down_blocks:
            h = level(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, config: LDMKLConfig) -> None:
        super().__init__()
        widths, n = list(reversed(config.block_out_channels)), config.layers_per_block + 1
        self.conv_in = nn.Conv2d(config.latent_channels, widths[0], 3, 1, 1)
        self.mid_block = MidBlock(config, widths[0])
        self.up_blocks = nn.ModuleList()
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks = [ResnetBlock(config, cin if j == 0 else w, w) for j in range(n)]
            self.up_blocks.append(Level(blocks, up=Upsample(w) if i < len(widths) - 1 else None))
            cin = w
        self.conv_norm_out = _norm(config, widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], config.channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


@register_model("ldm-kl")
class LDMKL(Autoencoder):
    Config = LDMKLConfig
    description = "latent-diffusion / Stable Diffusion KL autoencoder (diffusers AutoencoderKL layout)"
    seed = "LDM kl-f8 (Rombach et al. 2022); diffusers AutoencoderKL"
    has_prior = True

    def __init__(self, config: LDMKLConfig) -> None:
        super().__init__(config)
        c2 = 2 * config.latent_channels
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(c2, c2, 1) if config.use_quant_conv else None
        self.post_quant_conv = (nn.Conv2d(config.latent_channels, config.latent_channels, 1)
                                if config.use_post_quant_conv else None)
        self.output = nn.Tanh() if config.output_activation == "tanh" else nn.Identity()
        self._init_conditioning()

    @property
    def latent_shape(self) -> tuple[int, ...]:
        side = self.config.image_size // 2 ** (len(self.config.block_out_channels) - 1)
        return (self.config.latent_channels, side, side)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = moments.chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)  # clamps logvar to [-30, 20], as LDM does

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.output(self.decoder(z))

    def sample(self, n: int, labels: torch.Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode N(0, temperature² I) draws of the scaled latent (z − shift)·scale."""
        device = next(self.parameters()).device
        gen_device = generator.device if generator is not None else device
        z = torch.randn((n, *self.latent_shape), generator=generator, device=gen_device).to(device)
        z = z * temperature / self.config.scaling_factor + self.config.shift_factor
        return self.decode(z, labels)

    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight: where the LDM objective compares gradient norms (adaptive weight)."""
        return self.decoder.conv_out.weight
