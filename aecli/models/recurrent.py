"""Seed 004's sequence models: an image is read as a sequence of rows (features = channels × width).

- `lstm-ae`: 2-layer LSTM encoder (hidden 128) → final hidden state → Linear → latent 128 → Linear →
  2-layer LSTM decoder fed that projection at every step, one output row per step → Linear to pixels.
- `gru-vae`: bidirectional GRU over rows → FC → mean/log-variance; transposed-conv decoder
  (Linear → C×s/4×s/4 → two ConvTranspose2d), sigmoid output for the seed's BCE loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aecli.errors import UsageError
from aecli.models.base import Autoencoder, BaseConfig, make_output
from aecli.models.conv import check_ints, reject_classes
from aecli.models.distributions import DiagonalGaussian, PointLatent
from aecli.models.registry import register_model


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H, C·W): one time step per image row."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, h, c * w)


@dataclass
class LSTMConfig(BaseConfig):
    output_activation: str = "sigmoid"
    hidden: int = 128
    num_layers: int = 2
    latent_dim: int = 128

    def validate(self) -> None:
        reject_classes("lstm-ae", self.num_classes)
        check_ints(hidden=self.hidden, num_layers=self.num_layers, latent_dim=self.latent_dim)
        super().validate()


@register_model("lstm-ae")
class LSTMAE(Autoencoder):
    Config = LSTMConfig
    description = "LSTM autoencoder over image rows (2 layers, hidden 128, latent 128)"
    seed = "004 LSTM AutoEncoder"

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__(config)
        cfg = config
        row = cfg.channels * cfg.image_size
        self.encoder = nn.LSTM(row, cfg.hidden, cfg.num_layers, batch_first=True)
        self.to_latent = nn.Linear(cfg.hidden, cfg.latent_dim)
        self.from_latent = nn.Linear(cfg.latent_dim, cfg.hidden)
        self.decoder = nn.LSTM(cfg.hidden, cfg.hidden, cfg.num_layers, batch_first=True)
        self.to_row = nn.Linear(cfg.hidden, row)
        self.out = make_output(cfg.output_activation)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    def encode(self, x: torch.Tensor) -> PointLatent:
        _, (h, _) = self.encoder(_rows(x))
        return PointLatent(self.to_latent(h[-1]))  # the last layer's final hidden state

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        steps = self.from_latent(z).unsqueeze(1).expand(-1, cfg.image_size, -1)
        seq, _ = self.decoder(steps.contiguous())
        rows = self.out(self.to_row(seq))  # (B, H, C·W)
        return rows.view(z.shape[0], cfg.image_size, cfg.channels, cfg.image_size).permute(0, 2, 1, 3)


@dataclass
class GRUVAEConfig(BaseConfig):
    output_activation: str = "sigmoid"
    hidden: int = 128  # per GRU direction
    num_layers: int = 1
    fc_hidden: int = 256
    latent_dim: int = 32
    decoder_channels: tuple[int, ...] = (64, 32)  # one ConvTranspose2d (×2 upsampling) per entry

    def __post_init__(self) -> None:
        if isinstance(self.decoder_channels, list):  # JSON round-trips give lists
            self.decoder_channels = tuple(self.decoder_channels)

    def size_multiple(self) -> int:
        return 2 ** len(self.decoder_channels)

    def min_size(self) -> int:
        return self.size_multiple()

    def validate(self) -> None:
        check_ints(hidden=self.hidden, num_layers=self.num_layers, fc_hidden=self.fc_hidden,
                   latent_dim=self.latent_dim, decoder_channels=self.decoder_channels)
        if len(self.decoder_channels) > 10:
            raise UsageError("decoder_channels has more than 10 stages; at most 10 fit a 1024 px image")
        super().validate()


@register_model("gru-vae")
class GRUVAE(Autoencoder):
    Config = GRUVAEConfig
    description = "VAE with a bidirectional GRU encoder over rows and a transposed-conv decoder"
    seed = "004 RNN-CNN VAE"
    has_prior = True

    def __init__(self, config: GRUVAEConfig) -> None:
        super().__init__(config)
        cfg = config
        dc = cfg.decoder_channels
        self.feat = cfg.image_size // 2 ** len(dc)
        self.encoder = nn.GRU(cfg.channels * cfg.image_size, cfg.hidden, cfg.num_layers,
                              batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(2 * cfg.hidden, cfg.fc_hidden), nn.ReLU(),
                                  nn.Linear(cfg.fc_hidden, 2 * cfg.latent_dim))
        dec: list[nn.Module] = [nn.Linear(cfg.latent_dim, dc[0] * self.feat**2), nn.ReLU(),
                                nn.Unflatten(1, (dc[0], self.feat, self.feat))]
        outs = (*dc[1:], cfg.channels)
        for i, (cin, cout) in enumerate(zip(dc, outs)):
            # k3 s2 p1 with output_padding 1 doubles the side exactly (seed 004's 7 → 14 → 28).
            dec.append(nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1))
            if i < len(outs) - 1:
                dec.append(nn.ReLU())
        dec.append(make_output(cfg.output_activation))
        self.decoder = nn.Sequential(*dec)
        self._init_conditioning()

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        _, h = self.encoder(_rows(x))
        both = torch.cat([h[-2], h[-1]], dim=1)  # last layer, forward and backward final states
        mean, logvar = self.head(both).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)
