"""`gan`: seed 003 §4's fully connected GAN.

Generator z (100) → 256 → 512 → 1024 → C·s·s with LeakyReLU(0.2) and a Tanh output; discriminator
image → 1024 → 512 → 256 → 1 with LeakyReLU(0.2) and Dropout(0.3). The discriminator returns logits
(the trainer uses BCE-with-logits, numerically safer than a Sigmoid followed by BCE).
There is no encoder: ``decode`` is the generator and ``sample`` draws z ~ N(0, I).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import nn

from aecli.errors import UsageError
from aecli.models.base import Autoencoder, BaseConfig, make_output
from aecli.models.conv import check_ints, reject_classes
from aecli.models.registry import register_model


@dataclass
class GANConfig(BaseConfig):
    latent_dim: int = 100
    g_hidden: tuple[int, ...] = (256, 512, 1024)
    d_hidden: tuple[int, ...] = (1024, 512, 256)
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if isinstance(self.g_hidden, list):  # JSON round-trips give lists
            self.g_hidden = tuple(self.g_hidden)
        if isinstance(self.d_hidden, list):
            self.d_hidden = tuple(self.d_hidden)

    def validate(self) -> None:
        reject_classes("gan", self.num_classes)
        check_ints(latent_dim=self.latent_dim, g_hidden=self.g_hidden, d_hidden=self.d_hidden)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0 <= self.dropout < 1:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout!r}")
        super().validate()


@register_model("gan")
class GAN(Autoencoder):
    Config = GANConfig
    description = "Fully connected GAN (generator + discriminator); no encoder"
    seed = "003 §4"
    has_encoder = False
    has_prior = True

    def __init__(self, config: GANConfig) -> None:
        super().__init__(config)
        cfg = config
        n_pix = cfg.channels * cfg.image_size**2
        gen: list[nn.Module] = []
        for a, b in zip((cfg.latent_dim, *cfg.g_hidden[:-1]), cfg.g_hidden):
            gen += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        gen += [nn.Linear(cfg.g_hidden[-1], n_pix), make_output(cfg.output_activation),
                nn.Unflatten(1, (cfg.channels, cfg.image_size, cfg.image_size))]
        self.generator = nn.Sequential(*gen)

        disc: list[nn.Module] = [nn.Flatten()]
        for a, b in zip((n_pix, *cfg.d_hidden[:-1]), cfg.d_hidden):
            disc += [nn.Linear(a, b), nn.LeakyReLU(0.2), nn.Dropout(cfg.dropout)]
        disc.append(nn.Linear(cfg.d_hidden[-1], 1))
        self.discriminator = nn.Sequential(*disc)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    def encode(self, x: torch.Tensor) -> NoReturn:
        raise UsageError(
            "gan has no encoder; it cannot reconstruct or encode images (use sample/interpolate on its "
            "z, or an autoencoder family such as conv-vae)"
        )

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """Real/fake logits, shape (B,)."""
        return self.discriminator(x).squeeze(1)
