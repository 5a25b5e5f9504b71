"""`mlp-ae`: the fully connected autoencoder of seed 002 §1 (784 → 200 → 20 → 200 → 784, sigmoid)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aecli.errors import UsageError
from aecli.models.base import ACTIVATIONS, Autoencoder, BaseConfig, make_activation, make_output
from aecli.models.conv import check_ints, reject_classes
from aecli.models.distributions import PointLatent
from aecli.models.registry import register_model


@dataclass
class MLPConfig(BaseConfig):
    output_activation: str = "sigmoid"
    hidden: tuple[int, ...] = (200,)  # encoder hidden widths; the decoder mirrors them
    latent_dim: int = 20
    activation: str = "relu"

    def __post_init__(self) -> None:
        if isinstance(self.hidden, list):  # JSON round-trips give lists
            self.hidden = tuple(self.hidden)

    def validate(self) -> None:
        reject_classes("mlp-ae", self.num_classes)
        check_ints(hidden=self.hidden, latent_dim=self.latent_dim)
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        super().validate()


@register_model("mlp-ae")
class MLPAE(Autoencoder):
    Config = MLPConfig
    description = "Fully connected autoencoder on flattened pixels (any size; 784→200→20 on MNIST)"
    seed = "002 §1"

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        cfg = config
        n_in = cfg.channels * cfg.image_size**2
        sizes = (n_in, *cfg.hidden)
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), make_activation(cfg.activation)]
        enc.append(nn.Linear(sizes[-1], cfg.latent_dim))  # the code itself has no activation (seed)
        self.encoder = nn.Sequential(*enc)

        rev = (cfg.latent_dim, *sizes[::-1])  # latent → hidden[-1] → … → hidden[0] → pixels
        dec: list[nn.Module] = []
        for a, b in zip(rev[:-2], rev[1:-1]):
            dec += [nn.Linear(a, b), make_activation(cfg.activation)]
        dec += [nn.Linear(rev[-2], n_in), make_output(cfg.output_activation),
                nn.Unflatten(1, (cfg.channels, cfg.image_size, cfg.image_size))]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    def encode(self, x: torch.Tensor) -> PointLatent:
        return PointLatent(self.encoder(x))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)
