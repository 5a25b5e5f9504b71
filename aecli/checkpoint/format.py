"""Read and write aecli checkpoints. The format is documented in docs/checkpoint-format.md.

Every check runs on the raw header before any tensor is read or any model is built, so a hostile
file costs bounded time and memory and can never choose what code runs: the family name is a key
into the registry, the config goes through the family's dataclass and its validation.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aecli
from aecli.atomic import atomic_path
from aecli.data.spec import DataSpec
from aecli.errors import CheckpointError, UsageError
from aecli.untrusted import regular_file

if TYPE_CHECKING:
    import torch

    from aecli.models.base import Autoencoder

FORMAT_NAME = "aecli-checkpoint"
FORMAT_VERSION = 1
MODEL_PREFIX = "model."
EMA_PREFIX = "ema."
LATENT_SCALE_KEY = "latent_scale"  # optional: `aecli encode --scale-to-checkpoint`'s LDM scale factor
MAX_HEADER_BYTES = 16 * 1024 * 1024  # real headers are a few hundred KB at most
MAX_JSON_DEPTH = 32
# BatchNorm's statistics are stored beside the weights but are not parameters.
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class CheckpointHeader:
    """Everything in a checkpoint except the tensor data."""

    path: Path
    family: str
    config: dict[str, Any]
    data: DataSpec
    training: dict[str, Any]
    format_version: int
    metadata: dict[str, str]
    tensors: dict[str, dict[str, Any]]  # name -> {"dtype", "shape"}
    file_size: int
    # State-dict names that are buffers, not parameters; filled in by load_model from the built model.
    buffers: frozenset[str] | None = None

    @property
    def has_ema(self) -> bool:
        return any(k.startswith(EMA_PREFIX) for k in self.tensors)

    @property
    def parameter_count(self) -> int:
        """Number of trainable values in the model weights (EMA copies and buffers excluded)."""
        n = 0
        for name, info in self.tensors.items():
            if not name.startswith(MODEL_PREFIX):
                continue
            key = name[len(MODEL_PREFIX):]
            is_buffer = key in self.buffers if self.buffers is not None else key.endswith(_BUFFER_SUFFIXES)
            if not is_buffer:
                count = 1
                for d in info["shape"]:
                    count *= d
                n += count
        return n


@dataclass
class LoadedCheckpoint:
    model: Autoencoder
    header: CheckpointHeader
    data: DataSpec = field(init=False)

    def __post_init__(self) -> None:
        self.data = self.header.data


def _json_depth(obj: Any, depth: int = 0) -> int:
    if depth > MAX_JSON_DEPTH:
        return depth
    if isinstance(obj, dict):
        return max([_json_depth(v, depth + 1) for v in obj.values()] or [depth + 1])
    if isinstance(obj, list):
        return max([_json_depth(v, depth + 1) for v in obj] or [depth + 1])
    return depth


def _parse_json(path: Path, key: str, text: str | None, required: bool = True) -> Any:
    if text is None:
        if required:
            raise CheckpointError(f"{path}: checkpoint metadata has no {key!r} entry; "
                                  "the file was not written by aecli or was edited")
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: checkpoint metadata {key!r} is not valid JSON; "
                              "the file is corrupt or was edited") from None
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path}: checkpoint metadata {key!r} is nested too deeply")
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: checkpoint metadata {key!r} must be a JSON object")
    return value


def read_header(path: str | os.PathLike[str]) -> CheckpointHeader:
    """Parse and validate a checkpoint's header without reading tensor data."""
    p = Path(path)
    size = _check_file(p)
    _check_header_length(p, size)
    metadata, tensors = _safetensors_table(p)
    version = _format_version(p, metadata)
    family = metadata.get("family")
    if not family:
        raise CheckpointError(f"{p}: checkpoint metadata has no 'family' entry; the file was edited or is corrupt")
    config = _parse_json(p, "config", metadata.get("config"))
    data = _parse_json(p, "data", metadata.get("data"))
    training = _parse_json(p, "training", metadata.get("training"), required=False)
    try:
        spec = DataSpec.from_dict(data)
        _check_data_spec(spec)
    except (TypeError, ValueError):
        raise CheckpointError(f"{p}: checkpoint metadata 'data' is malformed (needs an integer image_size, "
                              "channels 1 or 3, value_range [lo, hi] with lo < hi, class_names a list of "
                              "strings)") from None
    return CheckpointHeader(path=p, family=family, config=config, data=spec, training=training,
                            format_version=version, metadata=metadata, tensors=tensors, file_size=size)


def _check_file(p: Path) -> int:
    """The size of ``p`` once it is known to be a regular file (a FIFO blocks open() forever; /dev/zero
    has no size and never ends)."""
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; check the path")
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder; give a .safetensors file inside it (e.g. {p}/best.safetensors)")
    problem = regular_file(p)
    if problem is not None:
        raise CheckpointError(f"checkpoint {p} is {problem}, not a regular file; give an aecli .safetensors file")
    return p.stat().st_size


def _check_header_length(p: Path, size: int) -> None:
    """The 8-byte header length, bounded before the safetensors library parses (and allocates) it."""
    with open(p, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8:
        raise CheckpointError(f"{p} is not a safetensors file (only {size} bytes); give an aecli .safetensors "
                              "checkpoint")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{p} is not a safetensors file (header length {n} is implausible); give an aecli "
                              ".safetensors checkpoint")
    if n > size - 8:
        raise CheckpointError(f"{p} is truncated (header needs {n} bytes, file has {size - 8}); re-copy or "
                              "re-download it")


def _safetensors_table(p: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """(metadata, name → {"dtype", "shape"}) as the safetensors library validates them: JSON, string
    metadata, known dtypes, shapes that match their byte ranges, ranges that tile the data exactly.
    The file is memory-mapped, no tensor is read. (framework="numpy": no torch for `aecli info`.)"""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="numpy") as fh:
            metadata = fh.metadata() or {}
            slices = {name: fh.get_slice(name) for name in fh.keys()}
            return metadata, {n: {"dtype": s.get_dtype(), "shape": list(s.get_shape())} for n, s in slices.items()}
    except SafetensorError as exc:
        # The library's text can quote the file (tensor names): only its kind goes into the message.
        text = str(exc)
    if "incomplete metadata" in text:
        raise CheckpointError(f"{p} is truncated (its tensor data does not end where the header says); "
                              "re-copy or re-download it")
    if "invalid JSON" in text:
        raise CheckpointError(f"{p} is not a safetensors file (its header is not safetensors JSON); give an "
                              "aecli .safetensors checkpoint")
    raise CheckpointError(f"{p}: the tensor table in the header is inconsistent (shapes, dtypes and byte "
                          "offsets disagree); the file is corrupt")


def _format_version(p: Path, metadata: dict[str, str]) -> int:
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{p} is a safetensors file but not an aecli checkpoint (no aecli metadata); "
                              "only files written by `aecli train` can be loaded")
    if "format_version" not in metadata:
        raise CheckpointError(f"{p}: checkpoint metadata has no 'format_version' entry; the file was edited "
                              "or is corrupt")
    try:
        version = int(metadata["format_version"])
    except ValueError:
        raise CheckpointError(f"{p}: format_version {metadata.get('format_version')!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{p} uses checkpoint format version {version}, newer than this aecli reads "
                              f"({FORMAT_VERSION}); upgrade aecli (pip install -U aecli)")
    if version < 1:
        raise CheckpointError(f"{p}: format_version {version} is invalid")
    return version


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_data_spec(spec: DataSpec) -> None:
    """Raise ValueError unless every field has the type and range the commands rely on."""
    lo_hi = spec.value_range
    if not (_is_int(spec.image_size) and spec.image_size > 0 and spec.channels in (1, 3)
            and _is_int(spec.channels) and len(lo_hi) == 2 and all(math.isfinite(v) for v in lo_hi)
            and lo_hi[0] < lo_hi[1] and isinstance(spec.class_names, list)
            and all(isinstance(c, str) for c in spec.class_names) and isinstance(spec.source, str)
            and isinstance(spec.source_path, str)):
        raise ValueError("malformed data spec")
    # Optional since aecli 0.1 checkpoints written before them read as None (the default split).
    if spec.val_count is not None and not (_is_int(spec.val_count) and spec.val_count >= 1):
        raise ValueError("malformed val_count")
    if spec.val_fraction is not None and not (isinstance(spec.val_fraction, float) and 0 < spec.val_fraction < 1):
        raise ValueError("malformed val_fraction")


def build_from_header(header: CheckpointHeader) -> Autoencoder:
    """Build the (untrained) model a header describes, only from registered families."""
    # Imported here: the registry builds torch modules, and reading a header stays torch-free.
    from aecli.models.registry import create_model, get_family, list_models

    if header.family not in list_models():
        raise CheckpointError(f"{header.path}: unknown model family {header.family!r}; this aecli knows "
                              f"{', '.join(list_models())} (a newer aecli may know it)")
    # A config saved before an option existed means that option's legacy value, not today's default.
    config = {**get_family(header.family).Config.LEGACY, **header.config}
    try:
        model = create_model(header.family, **config)
    except UsageError as exc:
        raise CheckpointError(f"{header.path}: invalid model config in checkpoint: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        # A value of the wrong type (a string where a number belongs) fails inside validation. Torch's
        # messages may carry a C++ stack trace: only their first line is shown.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{header.path}: invalid model config in checkpoint ({first}); "
                              "the file is corrupt or was edited") from None
    problem = _spec_mismatch(model, header.data)
    if problem:
        raise CheckpointError(f"{header.path}: {problem}; the file was edited")
    return model


def _spec_mismatch(model: Autoencoder, data: DataSpec) -> str:
    """Why the data spec cannot belong to ``model`` ('' when it can)."""
    cfg = model.config
    if (cfg.image_size, cfg.channels) != (data.image_size, data.channels):
        return (f"the model config ({cfg.image_size}px, {cfg.channels} ch) and the data spec "
                f"({data.image_size}px, {data.channels} ch) disagree")
    # Class names are optional, but when a conditional model has them, label i must name class i.
    if cfg.num_classes and data.class_names and len(data.class_names) != cfg.num_classes:
        return (f"the model has {cfg.num_classes} classes but the data spec names "
                f"{len(data.class_names)}: the model config and data spec disagree")
    return ""


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu",
               ema: bool = False) -> LoadedCheckpoint:
    """Rebuild the exact model a checkpoint describes, in eval mode, on ``device``.

    ``ema=True`` loads the EMA weights when the file has them (an error otherwise).
    """
    import torch
    from safetensors import SafetensorError, safe_open

    header = read_header(path)
    # A skeleton on the meta device first: the file's tensors must match it before one real parameter
    # is allocated, so a hostile config (latent_dim=10**6 in a 40 KB file) costs no memory.
    with torch.device("meta"):
        skeleton = build_from_header(header)
    if ema and not header.has_ema:
        raise CheckpointError(f"{header.path} has no EMA weights; drop --ema or train with --ema DECAY")
    expected = skeleton.state_dict()
    header.buffers = frozenset(expected) - {name for name, _ in skeleton.named_parameters()}
    # Both weight sets are checked even when only one is loaded, so `aecli info` vouches for the file.
    stray = sorted(k for k in header.tensors if not k.startswith((MODEL_PREFIX, EMA_PREFIX)))
    _check_tensor_set(header, MODEL_PREFIX, expected, stray)
    if header.has_ema:
        _check_tensor_set(header, EMA_PREFIX, expected, [])
    prefix = EMA_PREFIX if ema else MODEL_PREFIX
    try:
        # safe_open reads only the tensors asked for (the other weight set stays on disk).
        with safe_open(str(header.path), framework="pt", device="cpu") as fh:
            state = {name: fh.get_tensor(prefix + name) for name in expected}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{header.path}: cannot read tensors ({exc}); the file is corrupt") from None
    model = build_from_header(header)
    model.load_state_dict(state, strict=True)
    model.to(torch.device(device) if isinstance(device, str) else device)
    model.eval()
    return LoadedCheckpoint(model=model, header=header)


def _safetensors_dtypes() -> dict[Any, str]:
    import torch

    return {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
            torch.uint8: "U8", torch.bool: "BOOL"}


def _check_tensor_set(header: CheckpointHeader, prefix: str, expected: dict[str, torch.Tensor],
                      stray: list[str]) -> None:
    """Names, shapes and dtypes under ``prefix`` must be exactly those of the built model."""
    st_dtype = _safetensors_dtypes()
    found = {k[len(prefix):]: v for k, v in header.tensors.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(found))
    unexpected = [prefix + k for k in sorted(set(found) - set(expected))] + stray
    if missing or unexpected:
        parts = []
        if missing:
            names = [prefix + k for k in missing]
            parts.append(f"missing tensors {', '.join(names[:5])}{' …' if len(names) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
        raise CheckpointError(f"{header.path}: weights do not match the {header.family} config "
                              f"({'; '.join(parts)}); the file is corrupt or was edited")
    for name, tensor in expected.items():
        info = found[name]
        if list(info["shape"]) != list(tensor.shape):
            raise CheckpointError(f"{header.path}: tensor {prefix + name!r} has shape {info['shape']}, the "
                                  f"config needs {list(tensor.shape)}; the file is corrupt or was edited")
        # Float weights may be stored at another precision (load_state_dict casts); integers may not.
        is_float = info["dtype"] in ("F64", "F32", "F16", "BF16")
        if not (is_float and tensor.is_floating_point()) and info["dtype"] != st_dtype.get(tensor.dtype):
            raise CheckpointError(f"{header.path}: tensor {prefix + name!r} has dtype {info['dtype']}, "
                                  f"expected {tensor.dtype}; the file is corrupt or was edited")


def _tensor_dict(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone(): safetensors refuses tensors that share storage (tied weights, views).
    return {prefix + k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_model(path: str | os.PathLike[str], model: Autoencoder, data: DataSpec,
               training: dict[str, Any] | None = None,
               ema_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` (and optional EMA weights) as an aecli checkpoint, atomically.

    ``ema_state`` must have exactly the keys of ``model.state_dict()`` (parameters and buffers), as
    ``load_model(..., ema=True)`` loads it in place of the model weights.
    """
    import torch
    from safetensors.torch import save_file

    state = model.state_dict()
    # Checked here, not at load time: a mismatch is a bug in the caller and must not reach a file.
    problem = _spec_mismatch(model, data)
    if problem:
        raise ValueError(problem)
    tensors = _tensor_dict(MODEL_PREFIX, state)
    if ema_state is not None:
        if set(ema_state) != set(state):
            diff = sorted(set(ema_state) ^ set(state))
            raise ValueError(f"ema_state must have the model's state_dict keys; differs in {diff[:5]}")
        tensors.update(_tensor_dict(EMA_PREFIX, ema_state))
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "family": model.family,
        "config": json.dumps(model.config.to_dict()),
        "data": json.dumps(data.to_dict()),
        "training": json.dumps(training or {}),
        "aecli_version": aecli.__version__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def set_metadata(path: str | os.PathLike[str], key: str, value: Any) -> Path:
    """Add or replace one optional metadata entry (JSON text) of a checkpoint, keeping every tensor and
    every other entry as they are; atomic, and refused for reserved keys and for files that fail
    ``read_header``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    reserved = {"format", "format_version", "family", "config", "data", "training"}
    if key in reserved:
        raise ValueError(f"{key!r} is a reserved checkpoint metadata key")
    header = read_header(path)
    with safe_open(str(header.path), framework="pt", device="cpu") as fh:
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    metadata = {**header.metadata, key: json.dumps(value)}
    with atomic_path(header.path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return header.path

