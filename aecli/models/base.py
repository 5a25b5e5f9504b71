"""The interface every model family implements.

A family subclasses ``Autoencoder``, declares a dataclass ``Config`` (subclass of ``BaseConfig``)
and implements ``encode`` and ``_decode``. Commands only use this interface, so every command works
with every family that has the needed capability:

- ``has_encoder``: ``encode(x)`` exists (reconstruct, evaluate recon metrics, tsne). False for ``gan``.
- ``has_prior``: latents are trained towards N(0, I), so ``sample()`` is meaningful (VAEs, flow-VAE, GAN).
- ``decodes_latent``: ``decode(z)`` works from a latent alone (interpolate, arithmetic, sample --fit).
  False for ``skip-ae``, whose decoder also needs the encoder's skip features.
- ``sample_refusal``: non-empty when ``sample`` (with or without --fit) is meaningless, with the reason
  (vector-quantised families: no prior over their codes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from aecli.errors import UsageError
from aecli.models.distributions import DiagonalGaussian, PointLatent

ACTIVATIONS = ("mish", "silu", "relu", "leakyrelu")
NORMS = ("batch", "group", "none")
OUTPUTS = ("tanh", "sigmoid", "none")  # none: unbounded (LDM/diffusers decoders), data in [-1, 1]


@dataclass
class BaseConfig:
    image_size: int = 32
    channels: int = 3
    num_classes: int = 0  # > 0: conditional decoder (class embedding added to the latent)
    output_activation: str = "tanh"  # tanh/none → data in [-1, 1]; sigmoid → data in [0, 1]

    # Sizes are checked against this; families override ``size_multiple``/``min_size``.
    MAX_IMAGE_SIZE: ClassVar[int] = 1024
    # Options a family added after its checkpoints were first written, mapped to the value that rebuilds
    # files saved without them (a new default must not change what an old checkpoint means).
    LEGACY: ClassVar[dict[str, Any]] = {}

    def size_multiple(self) -> int:
        return 1

    def min_size(self) -> int:
        return 8

    def valid_sizes(self) -> list[int]:
        m, lo = self.size_multiple(), self.min_size()
        start = max(m, ((lo + m - 1) // m) * m)
        return list(range(start, self.MAX_IMAGE_SIZE + 1, m))

    def validate(self) -> None:
        """Raise UsageError naming the bad option and the fix. Families extend this."""
        if self.channels not in (1, 3):
            raise UsageError(f"channels must be 1 or 3, got {self.channels}")
        if self.num_classes < 0 or self.num_classes > 100_000:
            raise UsageError(f"num_classes must be between 0 and 100000, got {self.num_classes}")
        if self.output_activation not in OUTPUTS:
            raise UsageError(
                f"output_activation must be one of {', '.join(OUTPUTS)}, got {self.output_activation!r}"
            )
        if self.image_size not in self.valid_sizes():
            sizes = self.valid_sizes()
            shown = [s for s in sizes if s in (28, 32, 64, 128, 256, 512)] or sizes[:8]
            raise UsageError(
                f"image size {self.image_size} does not fit this model: sizes must be multiples of "
                f"{self.size_multiple()} between {sizes[0] if sizes else '-'} and {self.MAX_IMAGE_SIZE} "
                f"(e.g. {', '.join(map(str, shown))})"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_positive(**values: int | float) -> None:
    """Shared guard for widths/latent sizes: a config from a file may hold anything."""
    for name, value in values.items():
        if isinstance(value, (list, tuple)):
            if not value or any((not isinstance(v, (int, float))) or v <= 0 for v in value):
                raise UsageError(f"{name} must be a non-empty list of positive numbers, got {value!r}")
        elif not isinstance(value, (int, float)) or value <= 0:
            raise UsageError(f"{name} must be positive, got {value!r}")


@dataclass
class AEOutput:
    recon: torch.Tensor
    posterior: DiagonalGaussian | PointLatent
    z: torch.Tensor  # the latent the decoder saw (after flows, before class conditioning)
    z0: torch.Tensor | None = None  # flow-vae: the posterior sample before the flows
    log_det: torch.Tensor | None = None  # flow-vae: sum of log|det J| over flows, shape (B,)
    quant: Any = None  # vq families: the QuantizerOutput (codes, quantiser loss, codebook health)


def make_activation(name: str) -> nn.Module:
    if name == "mish":
        return nn.Mish()
    if name == "silu":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "leakyrelu":
        return nn.LeakyReLU(0.2)
    raise UsageError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")


def make_norm(name: str, channels: int, groups: int = 32) -> nn.Module:
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        g = groups
        while channels % g:  # the largest group count ≤ groups that divides channels
            g -= 1
        return nn.GroupNorm(g, channels)
    if name == "none":
        return nn.Identity()
    raise UsageError(f"norm must be one of {', '.join(NORMS)}, got {name!r}")


def make_output(name: str) -> nn.Module:
    if name == "none":
        return nn.Identity()
    return nn.Tanh() if name == "tanh" else nn.Sigmoid()


class Autoencoder(nn.Module):
    """Base class of every family. Subclasses set ``Config`` and implement ``encode``/``_decode``."""

    Config: ClassVar[type[BaseConfig]] = BaseConfig
    family: ClassVar[str] = ""  # set by @register_model
    description: ClassVar[str] = ""
    seed: ClassVar[str] = ""  # which seed document (and section) the family reproduces
    has_encoder: ClassVar[bool] = True
    has_prior: ClassVar[bool] = False
    decodes_latent: ClassVar[bool] = True
    sample_refusal: ClassVar[str] = ""
    # `aecli train` options this family trains best with, used where the user sets none (flat option name →
    # value; the run's config.json records what was used). Seed recipes set every option explicitly.
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: BaseConfig) -> None:
        super().__init__()
        self.config = config
        self.class_embed: nn.Embedding | None = None

    # -- conditioning ---------------------------------------------------------------------------
    def _init_conditioning(self) -> None:
        """Call at the end of __init__ (needs ``latent_shape``): seed 004's conditional VAE."""
        if self.config.num_classes > 0:
            self.class_embed = nn.Embedding(self.config.num_classes, self.latent_shape[0])

    def condition(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.class_embed is None:
            return z
        if labels is None:
            raise UsageError("this model is conditional: give class labels (e.g. --class K)")
        e = self.class_embed(labels)
        return z + e.view(e.shape[0], e.shape[1], *([1] * (z.dim() - 2)))

    # -- the interface --------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent, without the batch dimension: (D,) flat or (C, H, W) spatial."""
        raise NotImplementedError

    @property
    def value_range(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.config.output_activation == "sigmoid" else (-1.0, 1.0)

    @property
    def is_conditional(self) -> bool:
        return self.class_embed is not None

    def encode(self, x: torch.Tensor) -> DiagonalGaussian | PointLatent:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transform_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hook between posterior sample and decoder (planar flows). Returns (z_K, log_det)."""
        return z, None

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self._decode(self.condition(z, labels))

    def forward(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        sample_posterior: bool | None = None,
    ) -> AEOutput:
        """Reconstruct ``x``. VAEs sample the posterior while training and use its mean otherwise."""
        posterior = self.encode(x)
        sample = self.training if sample_posterior is None else sample_posterior
        z0 = posterior.sample() if sample else posterior.mode()
        z, log_det = self.transform_latent(z0)
        recon = self.decode(z, labels)
        return AEOutput(recon=recon, posterior=posterior, z=z, z0=z0 if log_det is not None else None,
                        log_det=log_det)

    def sample(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Decode ``n`` draws from the prior N(0, temperature² I)."""
        if not self.has_prior:
            raise UsageError(
                f"{self.family} has no prior to sample from (it is a plain autoencoder); "
                "use a VAE/GAN family, or `aecli sample --fit DATA` to fit a Gaussian to its latents"
            )
        device = next(self.parameters()).device
        # Draw on the generator's device so a CPU generator gives the same images on CPU and CUDA.
        gen_device = generator.device if generator is not None else device
        z = torch.randn((n, *self.latent_shape), generator=generator, device=gen_device).to(device)
        z = z * temperature
        return self.decode(z, labels)

    def extra_repr(self) -> str:
        return f"family={self.family!r}"
