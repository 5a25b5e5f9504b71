"""Using a trained model: reconstruct, sample, interpolate, latent arithmetic.

Each command of the CLI (`aecli reconstruct|sample|interpolate|arithmetic`) is a thin wrapper over one
function here, so a Python user can do the same: ``reconstruct(...)``, ``sample(...)``,
``interpolate(...)``, ``arithmetic(...)``/``expression(...)``. The latent tools they share (batched
encoding, Gaussian fit, lerp/slerp, latent files) live in ``aecli.inference.latents``.
"""

from aecli.inference.arithmetic import ArithmeticResult, arithmetic, expression
from aecli.inference.interpolate import InterpolateResult, interpolate
from aecli.inference.latents import (
    GaussianFit,
    decode_latents,
    encode_images,
    fit_gaussian,
    interpolate_latents,
    lerp,
    load_latents,
    save_latents,
    slerp,
)
from aecli.inference.reconstruct import ReconstructResult, reconstruct
from aecli.inference.sample import SampleResult, sample

__all__ = [
    "ArithmeticResult", "GaussianFit", "InterpolateResult", "ReconstructResult", "SampleResult", "arithmetic",
    "decode_latents", "encode_images", "expression", "fit_gaussian", "interpolate", "interpolate_latents",
    "lerp", "load_latents", "reconstruct", "sample", "save_latents", "slerp",
]
