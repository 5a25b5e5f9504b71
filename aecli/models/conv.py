"""`conv-ae` and `conv-vae`: two convolutional trunks behind one flat-or-spatial latent interface.

- ``arch="residual"`` (the default): a modern design for photos. A patchify stem (a p×p stride-p conv), one
  stage per resolution down to 4×4 (pre-activation residual blocks with GroupNorm and SiLU, stride-2 convs
  between stages), then the code; the decoder mirrors it and ends in a PixelShuffle back to full size. Widths
  and depth follow ``image_size`` unless given. With a flat code it also has a *PCA path* (``pca_path``):
  the trainer fits PCA on the training images before the first step; the code is the whitened PCA
  projection plus a learned correction, the image the PCA reconstruction plus a learned residual (both
  zero-initialised), so training starts at the best linear autoencoder of that code size and learning is
  a gain over it (BENCHMARKS.md, "Model quality"). The PCA is a buffer of the checkpoint.
- ``arch="plain"``: the seeds' strided Conv→Norm→Act encoder and ConvTranspose decoder (seeds 000 C,
  001–004). Every seed's variant is a config of it, not a new class:
- seed 001 (256², 1024×8×8 spatial latent): ``widths=(64,128,256,512,1024), latent="spatial",
  activation="mish", init="kaiming", final_conv=True``; its VAE adds a 3×3 mean/logvar conv head.
- seed 002 TinyImageNet (13,912,707 parameters): ``widths=(64,128,256,512), latent="flat",
  latent_dim=512, latent_relu=True, activation="relu", output_activation="sigmoid"`` at 3×64×64.
- seeds 003/004 (28², 3×3 kernels with output_padding): ``kernel_size=3``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

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
from aecli.models.resnet import ResBlock, _norm as _group_norm

LATENTS = ("flat", "spatial")
INITS = ("default", "kaiming")
ARCHS = ("residual", "plain")
BOTTOM = 4  # the residual trunk halves the resolution down to this side (or the last side ≥ it)


MAX_LAYERS = 64
FIT_VALUES = 1 << 26  # the PCA path's fit reads at most this many pixel values (ConvTrunk.fit_indices)


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
    arch: str = "residual"  # residual: the modern default; plain: the seeds' strided trunk (every seed recipe)
    widths: tuple[int, ...] = ()  # one stage per width; () = from image_size: stem_width, 64, 128, ≤ 256 to 4×4
    # First stage's width when widths are sized from image_size. 64, not 32: the full-resolution stage does
    # the local work (the PCA path's refinement) and 64 wins at equal time (BENCHMARKS.md, "Model quality").
    stem_width: int = 64
    blocks: int = 1  # residual: residual blocks per stage
    patch: int = 4  # residual: the stem reads p×p patches (1, 2 or 4)
    kernel_size: int = 4  # plain: 4: k4 s2 p1 (seeds 001/002); 3: k3 s2 p1 + output_padding 1 (seeds 003/004)
    activation: str = "silu"
    norm: str = "group"
    latent: str = "flat"  # flat: Flatten → Linear → latent_dim; spatial: a C×s/2^d×s/2^d feature map
    latent_dim: int = 32  # flat: latent size; spatial VAE: latent channels; spatial AE: plain: unused (widths[-1])
    fc_hidden: int = 0  # flat only: a hidden Linear layer of this width between trunk and latent (0 = none)
    fc_hidden_decoder: bool = True  # False: the decoder starts Linear(latent_dim → features) (seed 004)
    init: str = "default"  # plain: kaiming: seed 001's _initialize_weights
    final_conv: bool = False  # plain: True: decoder ends Conv2d(widths[0], channels, 3, 1, 1) (seed 001)
    # Seed 002's glasses VAE: only its second conv is normalised (unnormed = (0, 2)), and its last conv has
    # no padding (valid_last: 64→31, mirrored by a padding-0 ConvTranspose back to 64); kernel 3 only.
    unnormed: tuple[int, ...] = ()  # plain: encoder stages (0-based) without the norm layer
    valid_last: bool = False
    # residual, flat code: a fixed PCA path beside the learned trunk (code = whitened PCA projection + learned
    # correction; image = PCA reconstruction + learned residual), fitted on the training images before the
    # first step, so training starts at the best linear autoencoder (BENCHMARKS.md, "Model quality").
    pca_path: bool = True
    # PCA path: the decoder also sees the PCA image (space-to-depth at the stem's resolution), so its residual
    # can be a local, translation-equivariant sharpening of it, which carries over to unseen images.
    pca_refine: bool = True

    # Options added after checkpoints were first written, with the value that rebuilds those files: a saved
    # config without "arch" is the plain trunk (the only one there was). Only read when loading a checkpoint.
    # A residual checkpoint written before the PCA path existed has none.
    LEGACY: ClassVar[dict[str, Any]] = {"arch": "plain", "pca_path": False, "pca_refine": False, "stem_width": 32}
    # Options that only the plain trunk reads: set on a residual model they would be silently ignored.
    PLAIN_ONLY: ClassVar[tuple[str, ...]] = ("kernel_size", "init", "final_conv", "unnormed", "valid_last")

    def __post_init__(self) -> None:
        if isinstance(self.widths, list):  # JSON round-trips give lists
            self.widths = tuple(self.widths)
        if isinstance(self.unnormed, list):
            self.unnormed = tuple(self.unnormed)

    # -- the resolved trunk: explicit widths, or widths sized from image_size -------------------------------
    def patch_size(self) -> int:
        if self.arch != "residual":
            return 1
        return self.patch

    def stage_widths(self) -> tuple[int, ...]:
        if self.widths:
            return self.widths
        side = self.image_size // self.patch_size() if self.arch == "residual" else self.image_size // 2
        n = 1
        while side % 2 == 0 and side // 2 >= BOTTOM:  # halve down to 4×4 (7×7 for 28 px)
            side //= 2
            n += 1
        return tuple(min(256, max(self.stem_width, 32 * 2**i)) for i in range(n))

    def linear_path(self) -> bool:
        """Whether the model has the PCA path: the option, on the residual trunk with a flat, signed code
        (seed 002's ReLU code, ``latent_relu``, has none)."""
        return self.pca_path and self.arch == "residual" and self.latent == "flat" and not getattr(
            self, "latent_relu", False)

    def size_multiple(self) -> int:
        if not self.widths:
            return 4  # the depth adapts to the size: any multiple of 4 works
        if self.arch == "residual":
            return self.patch_size() * 2 ** (len(self.widths) - 1)
        return 2 ** len(self.widths)

    def min_size(self) -> int:
        if self.arch == "residual":
            return max(8, self.size_multiple())
        # the deepest feature map is at least 1×1 (an unpadded last stage needs twice the side)
        return self.size_multiple() * (2 if self.valid_last else 1)

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise UsageError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.widths:
            check_ints(widths=self.widths, latent_dim=self.latent_dim, blocks=self.blocks)
        else:
            check_ints(latent_dim=self.latent_dim, blocks=self.blocks, stem_width=self.stem_width)
            if self.stem_width > 1024:
                raise UsageError(f"stem_width allows at most 1024 channels, got {self.stem_width}")
        if len(self.widths) > 10:
            raise UsageError(f"widths has {len(self.widths)} stages; at most 10 fit a 1024 px image")
        if self.blocks > 16:
            raise UsageError(f"blocks allows at most 16 per stage, got {self.blocks}")
        if self.patch not in (1, 2, 4):
            raise UsageError(f"patch must be 1, 2 or 4, got {self.patch!r}")
        if self.arch == "residual":
            defaults = {f.name: f.default for f in dataclasses.fields(type(self))}
            changed = [k for k in self.PLAIN_ONLY if getattr(self, k) != defaults[k]]
            if changed:
                raise UsageError(f"{', '.join(changed)} only apply to arch='plain' (the seeds' strided trunk); "
                                 "add -m arch=plain (arch = \"plain\" in a recipe)")
        elif self.blocks != 1 or self.patch != 4:
            raise UsageError("blocks and patch only apply to arch='residual'")
        if isinstance(self.fc_hidden, bool) or not isinstance(self.fc_hidden, int) or self.fc_hidden < 0:
            raise UsageError(f"fc_hidden must be 0 (none) or a positive width, got {self.fc_hidden!r}")
        for name in ("pca_path", "pca_refine"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.fc_hidden_decoder, bool):
            raise UsageError(f"fc_hidden_decoder must be true or false, got {self.fc_hidden_decoder!r}")
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
        n_stages = len(self.widths) or 10
        if not isinstance(self.unnormed, tuple) or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_stages for i in self.unnormed):
            raise UsageError(f"unnormed lists encoder stage indices 0…{n_stages - 1}, got {self.unnormed!r}")
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


def _plain_trunk(cfg: ConvConfig, w: tuple[int, ...], heads: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The seeds' trunk: [stride-2 conv, norm, act] per width; the decoder mirrors it with ConvTranspose."""
    enc: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip((cfg.channels, *w[:-1]), w)):
        enc.append(_stage(cin, cout, cfg, False, valid=cfg.valid_last and i == len(w) - 1))
        if i not in cfg.unnormed:
            enc.append(make_norm(cfg.norm, cout))
        enc.append(make_activation(cfg.activation))

    # The decoder mirrors the encoder: one ConvTranspose per encoder stage.
    dec_in = cfg.latent_dim if cfg.latent == "spatial" and heads > 1 else w[-1]
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
    return nn.Sequential(*enc), nn.Sequential(*dec)


def _residual_trunk(cfg: ConvConfig, w: tuple[int, ...]) -> tuple[nn.Sequential, nn.Sequential]:
    """Patchify stem → per stage [stride-2 conv between stages, residual blocks] → norm, act. The decoder
    mirrors it (4×4 stride-2 ConvTranspose between stages) and ends conv → PixelShuffle to full size.

    The stem reads non-overlapping p×p patches: on a CPU, full-resolution layers would cost most of the
    time while a short code cannot carry detail finer than a few pixels anyway (BENCHMARKS.md)."""
    p, act, norm = cfg.patch_size(), cfg.activation, cfg.norm
    enc: list[nn.Module] = [nn.Conv2d(cfg.channels, w[0], p, p) if p > 1 else nn.Conv2d(cfg.channels, w[0], 3, 1, 1)]
    for i, width in enumerate(w):
        if i:
            enc.append(nn.Conv2d(w[i - 1], width, 3, 2, 1))
        enc += [ResBlock(width, norm, act) for _ in range(cfg.blocks)]
    enc += [_group_norm(norm, w[-1]), make_activation(act)]
    dec: list[nn.Module] = []
    for i in reversed(range(len(w))):
        dec += [ResBlock(w[i], norm, act) for _ in range(cfg.blocks)]
        if i:
            dec.append(nn.ConvTranspose2d(w[i], w[i - 1], 4, 2, 1))
    dec += [_group_norm(norm, w[0]), make_activation(act), nn.Conv2d(w[0], cfg.channels * p * p, 3, 1, 1)]
    if p > 1:
        dec.append(nn.PixelShuffle(p))
    dec.append(make_output(cfg.output_activation))
    return nn.Sequential(*enc), nn.Sequential(*dec)


def _flat_heads(cfg: ConvConfig, n_feat: int, heads: int, shape: tuple[int, int, int]) -> tuple[nn.Sequential, nn.Sequential]:
    """Flatten → [hidden FC] → Linear to the code, and back: Linear → [act] → Unflatten to ``shape``."""
    to: list[nn.Module] = [nn.Flatten()]
    fro: list[nn.Module] = []
    width = n_feat
    if cfg.fc_hidden:
        to += [nn.Linear(n_feat, cfg.fc_hidden), make_activation(cfg.activation)]
        width = cfg.fc_hidden
        if cfg.fc_hidden_decoder:
            fro += [nn.Linear(cfg.latent_dim, cfg.fc_hidden), make_activation(cfg.activation)]
    to.append(nn.Linear(width, heads * cfg.latent_dim))
    if getattr(cfg, "latent_relu", False):  # a conv-ae-only option (a VAE mean may be negative)
        to.append(nn.ReLU())
    fro.append(nn.Linear(cfg.fc_hidden if fro else cfg.latent_dim, n_feat))
    if cfg.arch != "residual":  # a residual decoder starts with a pre-activation block
        fro.append(make_activation(cfg.activation))
    fro.append(nn.Unflatten(1, shape))
    return nn.Sequential(*to), nn.Sequential(*fro)


class ConvTrunk(Autoencoder):
    """The shared builder. ``heads`` = 1 (AE code) or 2 (VAE mean and log-variance)."""

    heads = 1
    # The PCA path's VAE starts with a small posterior spread (std e^-3 ≈ 0.05 of the whitened code's unit
    # scale): a unit spread would bury the PCA code in noise at the first step.
    LOGVAR_INIT = -6.0

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config)
        cfg = config
        w = cfg.stage_widths()
        residual = cfg.arch == "residual"
        if residual:
            self.feat = cfg.image_size // (cfg.patch_size() * 2 ** (len(w) - 1))
            encoder, decoder = _residual_trunk(cfg, w)
        else:
            self.feat = cfg.image_size // 2 ** len(w)  # side of the deepest feature map
            if cfg.valid_last:  # an unpadded k3 s2 conv on an even side m gives m/2 - 1
                self.feat = cfg.image_size // 2 ** (len(w) - 1) // 2 - 1
            encoder, decoder = _plain_trunk(cfg, w, self.heads)
        self.encoder = encoder  # registered before the latent layers and the decoder: the seeds' parameter order

        # Latent interface: a conv head (spatial VAE; residual spatial AE), nothing (plain spatial AE: the
        # features are the code), or Flatten → [hidden FC] → Linear (flat).
        if cfg.latent == "spatial":
            coded = self.heads > 1 or residual
            self.to_latent: nn.Module = (
                nn.Conv2d(w[-1], self.heads * cfg.latent_dim, 3, 1, 1) if coded else nn.Identity())
            self.from_latent: nn.Module = (
                nn.Conv2d(cfg.latent_dim, w[-1], 3, 1, 1) if residual else nn.Identity())
        else:
            self.to_latent, self.from_latent = _flat_heads(
                cfg, w[-1] * self.feat * self.feat, self.heads, (w[-1], self.feat, self.feat))
        self.decoder = decoder

        if cfg.init == "kaiming":
            self._kaiming_init()
        if cfg.linear_path():
            self._init_linear_path()

    # -- the PCA path ----------------------------------------------------------------------------------
    def _init_linear_path(self) -> None:
        """Buffers for the PCA, saved in every checkpoint so that a file rebuilds without data (zeros until
        ``fit_linear``: an unfitted model is the plain residual network)."""
        cfg = self.config
        d = cfg.channels * cfg.image_size**2
        self.register_buffer("pca_mean", torch.zeros(d))
        self.register_buffer("pca_components", torch.zeros(cfg.latent_dim, d))  # orthonormal rows
        self.register_buffer("pca_scale", torch.ones(cfg.latent_dim))  # √variance of each component
        self.decoder[-1] = nn.Identity()  # the output is PCA + residual, clamped to the range (_decode)
        if cfg.pca_refine:
            # Added to the decoder's features where they reach the stem's resolution (after the last upsampling).
            p = cfg.patch_size()
            self.refine = nn.Conv2d(cfg.channels * p * p, cfg.stage_widths()[0], 3, 1, 1)
            ups = [i for i, m in enumerate(self.decoder) if isinstance(m, nn.ConvTranspose2d)]
            self._refine_at = ups[-1] + 1 if ups else 0

    @property
    def fits_data(self) -> bool:
        """The trainer calls ``fit_linear`` on a fresh run (never on resume: the PCA is in the weights)."""
        return self.config.linear_path()

    def fit_indices(self, n_images: int) -> torch.Tensor:
        """Which training images the PCA is fitted on: all, or an evenly spaced subset of at most
        FIT_VALUES numbers (a 256 MiB float32 matrix)."""
        n = max(1, min(n_images, FIT_VALUES // (self.config.channels * self.config.image_size**2)))
        return torch.linspace(0, n_images - 1, n).round().long()

    @torch.no_grad()
    def fit_linear(self, x: torch.Tensor) -> None:
        """Fit the PCA path on training images ``x`` (N×C×H×W in the model's value range): a randomized SVD
        (Halko et al.) with a fixed seed, so a run with the same data and seed gets the same weights."""
        k = self.config.latent_dim
        flat = x.flatten(1).float()
        mean = flat.mean(0)
        # n images span at most n - 1 directions: code numbers beyond them keep a zero linear part.
        r = min(k, flat.shape[0] - 1, flat.shape[1])
        self.pca_mean.copy_(mean)
        self.pca_components.zero_()
        self.pca_scale.fill_(1.0)
        if r > 0:
            with torch.random.fork_rng(devices=[flat.device] if flat.device.type == "cuda" else []):
                torch.manual_seed(0)
                _, s, v = torch.svd_lowrank(flat - mean, q=min(r + 32, *flat.shape), niter=4)
            self.pca_components[:r] = v[:, :r].T
            self.pca_scale[:r] = (s[:r] / (flat.shape[0] - 1) ** 0.5).clamp_min(1e-6)
        # Zero the learned code correction and image residual: before any step the model *is* this PCA.
        head = self.to_latent[-1]  # the code's Linear
        last = [m for m in self.decoder if isinstance(m, nn.Conv2d)][-1]  # the decoder's last conv
        for layer in (head, last):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.heads > 1:
            nn.init.constant_(head.bias[k:], self.LOGVAR_INIT)

    def _linear_code(self, x: torch.Tensor) -> torch.Tensor:
        """The whitened PCA code: unit variance per number on the training images, like the VAE prior."""
        return (x.flatten(1) - self.pca_mean) @ self.pca_components.T / self.pca_scale

    def _linear_image(self, z: torch.Tensor) -> torch.Tensor:
        return ((z * self.pca_scale) @ self.pca_components + self.pca_mean).view(z.shape[0], *self._image_shape())

    def _image_shape(self) -> tuple[int, int, int]:
        cfg = self.config
        return (cfg.channels, cfg.image_size, cfg.image_size)

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
        c = cfg.latent_dim if self.heads > 1 or cfg.arch == "residual" else cfg.stage_widths()[-1]
        return (c, self.feat, self.feat)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.to_latent(self.encoder(x))
        if not self.config.linear_path():
            return h
        k = self.config.latent_dim  # the PCA code is the (VAE: mean) code's linear part
        return torch.cat([h[:, :k] + self._linear_code(x), h[:, k:]], dim=1)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if not self.config.linear_path():
            return self.decoder(self.from_latent(z))
        linear = self._linear_image(z)
        if self.config.pca_refine:
            h = self.decoder[:self._refine_at](self.from_latent(z))
            h = h + self.refine(nn.functional.pixel_unshuffle(linear, self.config.patch_size()))
            out = self.decoder[self._refine_at:](h) + linear
        else:
            out = self.decoder(self.from_latent(z)) + linear
        # In range like the other outputs, but with the gradient of the unclamped sum (straight through): a
        # plain clamp would stop learning on every pixel where the PCA overshoots.
        return out + (out.clamp(*self.value_range) - out).detach()


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
    # Per-image fitted-variance loss: maximises the mean per-image PSNR, where MSE spends the model on the
    # few hardest images and loses to PCA there (BENCHMARKS.md, "Model quality").
    train_defaults = {"recon": "gaussian"}

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
    # The negative ELBO in nats per image with a calibrated decoder (σ-VAE): β = 1 is then the real
    # likelihood bound, and the decoder's fitted variance sets the balance that a hand-picked β would.
    train_defaults = {"recon": "gaussian", "reduction": "sum"}

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config)
        self._init_conditioning()

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = self._features(x).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)
