"""Name → model family registry (timm-style).

A family is an ``Autoencoder`` subclass with a dataclass ``Config``. ``create_model(name, **kwargs)``
is the only way aecli builds a model, so a checkpoint can never make us instantiate anything but a
registered family: the family name in a file is only ever used as a key into this dict.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from aecli.errors import UsageError

if TYPE_CHECKING:
    from aecli.models.base import Autoencoder

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type[Autoencoder]] = {}

# A config that would allocate more parameters than this is refused before any memory is touched
# (hostile or mistyped checkpoints). 2e9 float32 parameters is 8 GB: larger than any seed model ×100.
MAX_PARAMETERS = 2_000_000_000


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make an ``Autoencoder`` subclass buildable as ``name``."""

    def deco(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"model family {name!r} registered twice")
        cls.family = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def _ensure_loaded() -> None:
    # Importing the package registers every family (its __init__ imports each module).
    import aecli.models  # noqa: F401


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_family(name: str) -> type[Autoencoder]:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown model family {name!r}; choose one of: {', '.join(sorted(_REGISTRY))} "
            "(`aecli models` lists them)"
        ) from None


def supported_commands(cls: type[Autoencoder]) -> list[str]:
    """Which commands a family supports, derived from its capabilities (``aecli models``, and the
    reason a command gives when it refuses a family)."""
    cmds = ["train"]
    if cls.has_encoder:
        cmds += ["reconstruct", "encode", "evaluate", "tsne"]
    elif cls.has_prior:
        cmds += ["evaluate"]
    if not cls.sample_refusal and (cls.has_prior or (cls.has_encoder and cls.decodes_latent)):
        cmds.append("sample" if cls.has_prior else "sample --fit")
    if cls.decodes_latent:
        cmds += ["decode", "interpolate"]
        if cls.has_encoder:
            cmds.append("arithmetic")
    return cmds


def make_config(name: str, **kwargs: Any) -> Any:
    """Build and validate the family's config; unknown options are rejected by name."""
    cls = get_family(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise UsageError(
            f"{name} has no option {', '.join(unknown)}; its options are: {', '.join(sorted(fields))}"
        )
    try:
        config = cls.Config(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"invalid {name} config: {exc}") from None
    config.validate()
    return config


def create_model(name: str, **kwargs: Any) -> Autoencoder:
    """Build a registered family from keyword options (the saved config is ``name`` + kwargs)."""
    import torch

    cls = get_family(name)
    config = make_config(name, **kwargs)
    # Count parameters on the meta device first: costs no memory, so an absurd config from a file
    # or a typo (widths=1e6) is refused instead of exhausting RAM.
    try:
        with torch.device("meta"):
            probe = cls(config)
    except (RuntimeError, OverflowError) as exc:  # torch: "Storage size calculation overflowed"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # no C++ stack trace
        raise UsageError(f"{name} config cannot be built ({first}); reduce widths/latent size") from None
    n_params = sum(p.numel() for p in probe.parameters())
    if n_params > MAX_PARAMETERS:
        raise UsageError(
            f"{name} config would have {n_params:,} parameters (limit {MAX_PARAMETERS:,}); "
            "reduce widths/latent size"
        )
    return cls(config)
