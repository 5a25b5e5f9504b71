"""Model families. Importing this package registers all of them."""

from aecli.models import conv, flow, gan, ldm_kl, mlp, recurrent, resnet, skip, vq  # noqa: F401  (registration)
from aecli.models.base import AEOutput, Autoencoder, BaseConfig
from aecli.models.distributions import DiagonalGaussian, PointLatent
from aecli.models.registry import (
    create_model, get_family, list_models, make_config, register_model, supported_commands,
)

__all__ = [
    "AEOutput",
    "Autoencoder",
    "BaseConfig",
    "DiagonalGaussian",
    "PointLatent",
    "create_model",
    "get_family",
    "list_models",
    "make_config",
    "register_model",
    "supported_commands",
]
