"""`conv-ae` and `conv-vae`: strided Conv→Norm→Act encoder, ConvTranspose decoder (seeds 000 C, 001–004).

One trunk serves both, so every seed's variant is a config, not a new class:
- seed 001 (256², 1024×8×8 spatial latent): ``widths=(64,128,256,512,1024), latent="spatial",
  activation="mish", init="kaiming", final_conv=True``; its VAE adds a 3×3 mean/logvar conv head.
- seed 002 TinyImageNet (13,912,707 parameters): ``widths=(64,128,256,512), latent="flat",
  latent_dim=512, latent_relu=True, activation="relu", output_activation="sigmoid"`` at 3×64×64.
- seeds 003/004 (28², 3×3 kernels with output_padding): ``kernel_size=3``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aecli.errors import UsageError
from aecli.models.base import (
    ACTIVATIONS,
    NORMS,
    Autoencoder,
    BaseConfig,
    check_positive,
    make_activation,
    make_norm,
    make_output,
)
from aecli.models.distributions import DiagonalGaussian, PointLatent
from aecli.models.registry import register_model

LATENTS = ("flat", "spatial")
INITS = ("default", "kaiming")


MAX_LAYERS = 64


def check_ints(**values: object) -> None:
    """Layer sizes must be positive whole numbers: a TOML ``32.0`` would otherwise crash inside torch."""
    for name, value in values.items():
        items = value if isinstance(value, (list, tuple)) else (value,)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in items):
            raise UsageError(f"{name} must be whole numbers, got {value!r}")
        # Depth is bounded before the meta-device parameter count: building 10^30 layers, even on
        # the meta device, would never finish (a hostile or mistyped config).
        if len(items) > MAX_LAYERS or (name == "num_layers" and value > MAX_LAYERS):  # type: ignore[operator]
            got = f"{len(items)} entries" if isinstance(value, (list, tuple)) else repr(value)
            raise UsageError(f"{name} allows at most {MAX_LAYERS} layers, got {got}")
    check_positive(**values)  # type: ignore[arg-type]


def reject_classes(family: str, num_classes: int) -> None:
    if num_classes:
        raise UsageError(
            f"{family} is not conditional: num_classes must be 0 "
            "(class-conditional families: conv-vae, gru-vae, flow-vae, resnet-vae)"
        )


@dataclass
class ConvConfig(BaseConfig):
    widths: tuple[int, ...] = (32, 64)  # one stride-2 stage per width
    kernel_size: int = 4  # 4: k4 s2 p1 (seeds 001/002); 3: k3 s2 p1 + output_padding 1 (seeds 003/004)
    activation: str = "relu"
    norm: str = "batch"
    latent: str = "flat"  # flat: Flatten → Linear → latent_dim; spatial: a C×s/2^d×s/2^d feature map
    latent_dim: int = 32  # flat: latent size; spatial VAE: latent channels; spatial AE: unused (widths[-1])
    fc_hidden: int = 0  # flat only: a hidden Linear layer of this width between trunk and latent (0 = none)
    init: str = "default"  # kaiming: seed 001's _initialize_weights
    final_conv: bool = False  # True: decoder ends Conv2d(widths[0], channels, 3, 1, 1) (seed 001)
    # Seed 002's glasses VAE: only its second conv is normalised (unnormed = (0, 2)), and its last conv has
    # no padding (valid_last: 64→31, mirrored by a padding-0 ConvTranspose back to 64); kernel 3 only.
    unnormed: tuple[int, ...] = ()  # encoder stages (0-based) without the norm layer
    valid_last: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.widths, list):  # JSON round-trips give lists
            self.widths = tuple(self.widths)
        if isinstance(self.unnormed, list):
            self.unnormed = tuple(self.unnormed)

    def size_multiple(self) -> int:
        return 2 ** len(self.widths)

    def min_size(self) -> int:
        # the deepest feature map is at least 1×1 (an unpadded last stage needs twice the side)
        return self.size_multiple() * (2 if self.valid_last else 1)

    def validate(self) -> None:
        check_ints(widths=self.widths, latent_dim=self.latent_dim)
        if len(self.widths) > 10:
            raise UsageError(f"widths has {len(self.widths)} stages; at most 10 fit a 1024 px image")
        if isinstance(self.fc_hidden, bool) or not isinstance(self.fc_hidden, int) or self.fc_hidden < 0:
            raise UsageError(f"fc_hidden must be 0 (none) or a positive width, got {self.fc_hidden!r}")
        if self.kernel_size not in (3, 4):
            raise UsageError(f"kernel_size must be 3 or 4, got {self.kernel_size!r}")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.norm not in NORMS:
            raise UsageError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.latent not in LATENTS:
            raise UsageError(f"latent must be one of {', '.join(LATENTS)}, got {self.latent!r}")
        if self.init not in INITS:
            raise UsageError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not isinstance(self.unnormed, tuple) or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.widths) for i in self.unnormed):
            raise UsageError(f"unnormed lists encoder stage indices 0…{len(self.widths) - 1}, got {self.unnormed!r}")
        if not isinstance(self.valid_last, bool) or (self.valid_last and self.kernel_size != 3):
            raise UsageError("valid_last is true/false and needs kernel_size 3 (seed 002's glasses VAE)")
        if self.latent == "spatial" and self.fc_hidden:
            raise UsageError("fc_hidden needs latent='flat' (a spatial latent has no fully connected layer)")
        super().validate()


def _stage(cin: int, cout: int, cfg: ConvConfig, transpose: bool, valid: bool = False) -> nn.Conv2d | nn.ConvTranspose2d:
    pad = 0 if valid else 1  # valid: seed 002's glasses VAE, 64 → 31 → 64
    if not transpose:
        return nn.Conv2d(cin, cout, cfg.kernel_size, 2, pad)
    # k4 p1 doubles exactly; k3 needs output_padding 1 to double (the seeds' 7→14→28, and 31→64).
    return nn.ConvTranspose2d(cin, cout, cfg.kernel_size, 2, pad, output_padding=cfg.kernel_size % 2)


class ConvTrunk(Autoencoder):
    """The shared builder. ``heads`` = 1 (AE code) or 2 (VAE mean and log-variance)."""

    heads = 1

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config)
        cfg = config
        w = cfg.widths
        self.feat = cfg.image_size // 2 ** len(w)  # side of the deepest feature map
        if cfg.valid_last:  # an unpadded k3 s2 conv on an even side m gives m/2 - 1
            self.feat = cfg.image_size // 2 ** (len(w) - 1) // 2 - 1
        spatial = cfg.latent == "spatial"

        enc: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip((cfg.channels, *w[:-1]), w)):
            enc.append(_stage(cin, cout, cfg, False, valid=cfg.valid_last and i == len(w) - 1))
            if i not in cfg.unnormed:
                enc.append(make_norm(cfg.norm, cout))
            enc.append(make_activation(cfg.activation))
        self.encoder = nn.Sequential(*enc)

        # Latent interface: a conv head (spatial VAE), nothing (spatial AE: the features are the code),
        # or Flatten → [hidden FC] → Linear (flat).
        n_feat = w[-1] * self.feat * self.feat
        if spatial:
            self.to_latent: nn.Module = (
                nn.Conv2d(w[-1], self.heads * cfg.latent_dim, 3, 1, 1) if self.heads > 1 else nn.Identity()
            )
            self.from_latent: nn.Module = nn.Identity()
        else:
            to: list[nn.Module] = [nn.Flatten()]
            fro: list[nn.Module] = []
            width = n_feat
            if cfg.fc_hidden:
                to += [nn.Linear(n_feat, cfg.fc_hidden), make_activation(cfg.activation)]
                fro += [nn.Linear(cfg.latent_dim, cfg.fc_hidden), make_activation(cfg.activation)]
                width = cfg.fc_hidden
            to.append(nn.Linear(width, self.heads * cfg.latent_dim))
            if getattr(cfg, "latent_relu", False):  # a conv-ae-only option (a VAE mean may be negative)
                to.append(nn.ReLU())
            fro += [nn.Linear(cfg.fc_hidden or cfg.latent_dim, n_feat),
                    make_activation(cfg.activation), nn.Unflatten(1, (w[-1], self.feat, self.feat))]
            self.to_latent = nn.Sequential(*to)
            self.from_latent = nn.Sequential(*fro)

        # The decoder mirrors the encoder: one ConvTranspose per encoder stage.
        dec_in = cfg.latent_dim if spatial and self.heads > 1 else w[-1]
        rev = w[::-1]
        if cfg.final_conv:
            # seed 001: ConvT(w[-1], w[-1]), …, ConvT(w[1], w[0]), then a 3×3 conv to the image channels.
            outs = rev
        else:
            # seed 002: ConvT(w[-1], w[-2]), …, ConvT(w[0], channels) straight into the output activation.
            outs = (*rev[1:], cfg.channels)
        dec: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip((dec_in, *outs[:-1]), outs)):
            dec.append(_stage(cin, cout, cfg, True, valid=cfg.valid_last and i == 0))
            if cfg.final_conv or i < len(outs) - 1:
                dec += [make_norm(cfg.norm, cout), make_activation(cfg.activation)]
        if cfg.final_conv:
            dec.append(nn.Conv2d(w[0], cfg.channels, 3, 1, 1))
        dec.append(make_output(cfg.output_activation))
        self.decoder = nn.Sequential(*dec)

        if cfg.init == "kaiming":
            self._kaiming_init()

    def _kaiming_init(self) -> None:
        # seed 001 _initialize_weights: Linear layers keep PyTorch's default.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        cfg = self.config
        if cfg.latent == "flat":
            return (cfg.latent_dim,)
        c = cfg.latent_dim if self.heads > 1 else cfg.widths[-1]
        return (c, self.feat, self.feat)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z))


@dataclass
class ConvAEConfig(ConvConfig):
    latent_relu: bool = False  # flat only: ReLU on the code (seed 002 TinyImageNet: Linear → ReLU)

    def validate(self) -> None:
        reject_classes("conv-ae", self.num_classes)
        if self.latent_relu and self.latent != "flat":
            raise UsageError("latent_relu needs latent='flat'")
        super().validate()


@register_model("conv-ae")
class ConvAE(ConvTrunk):
    Config = ConvAEConfig
    description = "Convolutional autoencoder: strided conv encoder, transposed-conv decoder, flat or spatial code"
    seed = "001 Q1 AE; 002 §2 (TinyImageNet); 003 §1"

    def encode(self, x: torch.Tensor) -> PointLatent:
        return PointLatent(self._features(x))


@dataclass
class ConvVAEConfig(ConvConfig):
    """The trunk's options; its own class so flow-vae extends the VAE's config, not conv-ae's."""


@register_model("conv-vae")
class ConvVAE(ConvTrunk):
    Config = ConvVAEConfig
    description = "Convolutional VAE: the conv-ae trunk with mean/log-variance heads; optional class conditioning"
    seed = "000 C1-C5; 001 Q1 VAE; 002 §3; 004 CNN-CNN and conditional VAE"
    has_prior = True
    heads = 2

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config)
        self._init_conditioning()

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = self._features(x).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)
