"""Hostile checkpoints, fuzzed: every file a stranger can hand us ends in a clear CheckpointError (or
loads, when a mutation happens to be harmless), within bounded time and memory, and never runs code.
Each generated file has one right answer: `contract` (below) states which files a loader must accept,
written from the format's specification, and the reader must agree with it on every case.

The broken-file catalogue with exact messages lives in test_checkpoint.py; this module throws
generated files at the reader (hypothesis, bounded example counts) and checks the invariants.
"""

from __future__ import annotations

import builtins
import contextlib
import itertools
import json
import math
import os
import pickle
import resource
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import pytest
import torch
import typer.main
import typer.testing
from conftest import tiny_kwargs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils._pytree import tree_flatten
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

from aecli.checkpoint import load_model, save_model
from aecli.cli import app
from aecli.data.spec import DataSpec
from aecli.errors import AecliError, CheckpointError
from aecli.checkpoint.format import FORMAT_VERSION
from aecli.models import create_model, list_models
from aecli.models.registry import get_family

FAMILY = "conv-vae"
FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL_FUZZ = settings(FUZZ, max_examples=60)
BYTES_FUZZ = settings(FUZZ, max_examples=100)  # byte garbage is refused at the first check: fewer suffice
# Work is bounded by counts and memory, never by seconds (a busy machine must not fail a test): the
# elements of real (non-meta) tensors a load creates, and the growth of the peak RSS.
MAX_REAL_ELEMENTS = 5_000_000  # 20 MB of float32; the test checkpoints hold a few thousand parameters
MAX_RSS_MB = 200
runner = CliRunner()
_COMMAND = typer.main.get_command(app)


def info(path: Path) -> Any:
    """`aecli info PATH --json` through CliRunner, without rebuilding the click command per call (the
    fuzz tests call it hundreds of times)."""
    with mock.patch.object(typer.testing, "_get_command", lambda _app: _COMMAND):
        return runner.invoke(app, ["info", str(path), "--json"])


# -- the good file every case starts from ---------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def good(workdir: Path) -> Path:
    model = create_model(FAMILY, **tiny_kwargs(FAMILY))
    spec = DataSpec(32, 1, model.value_range, [], "unit-test")
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    return save_model(workdir / "good.safetensors", model, spec, {"steps": 3}, ema_state=ema)


class _Parts(tuple):
    """(tensors, metadata) of the good file, with a short repr for hypothesis' failure reports."""

    def __repr__(self) -> str:
        return "<tensors and metadata of good.safetensors>"


@pytest.fixture(scope="module")
def parts(good: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(good), framework="pt") as fh:
        meta = dict(fh.metadata())
    return _Parts((load_file(str(good)), meta))


_counter = itertools.count()


def _path(workdir: Path) -> Path:
    return workdir / f"case{next(_counter):05d}.safetensors"


def _write(workdir: Path, data: bytes) -> Path:
    p = _path(workdir)
    p.write_bytes(data)
    return p


def _raw_header(raw: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _assemble(header: Any, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


# -- the invariants ----------------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _importing() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if "importlib" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def no_code_execution() -> Iterator[list[str]]:
    """Record (and refuse) every way a loader could run code from a file: unpickling, torch.load,
    eval/exec, shells. The list it yields must stay empty."""
    calls: list[str] = []

    def trap(name: str, original: Any) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            if _importing():  # module code runs through exec; torch imports some modules lazily
                return original(*args, **kwargs)
            calls.append(name)
            raise AssertionError(f"{name} called while loading a checkpoint")
        return refuse

    targets = [(pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (torch, "load"),
               (builtins, "eval"), (builtins, "exec"), (os, "system"), (subprocess, "Popen")]
    with contextlib.ExitStack() as stack:
        for module, name in targets:
            stack.enter_context(mock.patch.object(module, name, trap(f"{module.__name__}.{name}",
                                                                       getattr(module, name))))
        yield calls


class RealElements(TorchDispatchMode):
    """Counts the elements of every real (non-meta) tensor the operations inside it produce: how much
    work a load did, independent of the machine's speed. (A dispatch mode makes torch import
    torch._dynamo on first use; that is done once, at import, outside the no-code-execution trap.)"""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.elements += t.numel()
        return out


with RealElements(), torch.device("meta"):
    torch.nn.Linear(2, 2)


# -- the contract: which files a loader must accept, stated independently of aecli's reader ---------
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def _json_object(text: Any) -> dict | None:
    """A metadata entry as the format defines it: a JSON object no deeper than 32 levels, else None."""
    def depth(v: Any) -> int:
        inner = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else None
        return 0 if inner is None else 1 + max(map(depth, inner), default=0)
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None
    try:
        return value if isinstance(value, dict) and depth(value) <= 32 else None
    except RecursionError:
        return None


def _plain_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _data_spec_ok(data: dict, size: int, channels: int) -> bool:
    """The `data` entry: the model's size and channels, a finite value range lo < hi, string names."""
    try:
        lo, hi = (float(v) for v in data.get("value_range", (-1.0, 1.0)))
    except (TypeError, ValueError):
        return False
    val_count, val_fraction = data.get("val_count"), data.get("val_fraction")
    return (data.get("image_size") == size and _plain_int(data.get("image_size"))
            and data.get("channels") == channels and _plain_int(data.get("channels"))
            and math.isfinite(lo) and math.isfinite(hi) and lo < hi
            and isinstance(data.get("class_names", []), list)
            and all(isinstance(c, str) for c in data.get("class_names", []))
            and all(isinstance(data.get(k, ""), str) for k in ("source", "source_path"))
            and (val_count is None or (_plain_int(val_count) and val_count >= 1))
            and (val_fraction is None or (isinstance(val_fraction, float) and 0 < val_fraction < 1)))


def _weights_of(config: dict) -> tuple[dict[str, tuple[list[int], bool]], int, int] | None:
    """(name -> (shape, is float), image size, channels) of the model ``config`` describes (built on the
    meta device), or None when no model can be built from it."""
    if not all(isinstance(k, str) for k in config):
        return None
    try:
        with torch.device("meta"):
            model = create_model(FAMILY, **{**get_family(FAMILY).Config.LEGACY, **config})
    except Exception:  # any refusal to build: the file must be refused too
        return None
    weights = {k: (list(v.shape), v.is_floating_point()) for k, v in model.state_dict().items()}
    return weights, model.config.image_size, model.config.channels


def contract(path: Path) -> str:
    """'loaded' or 'refused': what a loader of aecli checkpoints must do with ``path``. The safetensors
    layer is judged by the safetensors library itself; the aecli layer by the format's rules: format
    name, a version this reader knows, the family, a config that builds a model whose weights (names,
    shapes, float-ness) are exactly the file's under both prefixes, a consistent data entry; and a
    header of at most 16 MiB (real ones are a few hundred KB)."""
    head = path.read_bytes()[:8]
    if len(head) == 8 and struct.unpack("<Q", head)[0] > 16 * 1024 * 1024:
        return "refused"
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: (list(fh.get_slice(k).get_shape()), fh.get_slice(k).get_dtype()) for k in fh.keys()}
    except Exception:  # safetensors refuses the file: so must we
        return "refused"
    try:
        version_ok = 1 <= int(meta.get("format_version", "")) <= FORMAT_VERSION
    except ValueError:
        version_ok = False
    config, data = _json_object(meta.get("config")), _json_object(meta.get("data"))
    training_ok = "training" not in meta or _json_object(meta["training"]) is not None
    if not (meta.get("format") == "aecli-checkpoint" and version_ok and meta.get("family") == FAMILY
            and config is not None and data is not None and training_ok):
        return "refused"
    built = _weights_of(config)
    if built is None or not _data_spec_ok(data, built[1], built[2]):
        return "refused"
    weights = built[0]
    wanted = {prefix + k: v for k, v in weights.items() for prefix in ("model.", "ema.")}
    if set(tensors) != set(wanted):
        return "refused"
    for name, (shape, dtype) in tensors.items():
        shape_needed, is_float = wanted[name]
        if shape != shape_needed or not (dtype in FLOAT_DTYPES and is_float):
            return "refused"
    return "loaded"


def outcome(path: Path, *, must_refuse: bool = False) -> str:
    """Load ``path``: 'loaded' or 'refused' (a one-line AecliError). Anything else fails the test, as
    does creating more than MAX_REAL_ELEMENTS tensor elements, growing the peak RSS by MAX_RSS_MB, or
    running code. The same file through `aecli info` must agree: exit 0, or exit 2 with one line and no
    traceback."""
    rss = _peak_rss_mb()
    with no_code_execution() as calls, RealElements() as work:
        try:
            ckpt = load_model(path)
        except AecliError as exc:
            assert isinstance(exc, CheckpointError), f"{type(exc).__name__}: {exc}"
            message = str(exc)
            assert message and "\n" not in message, repr(message)
            result = "refused"
        else:
            assert sum(p.numel() for p in ckpt.model.parameters()) > 0
            result = "loaded"
    assert not calls, calls
    assert work.elements < MAX_REAL_ELEMENTS, work.elements
    assert _peak_rss_mb() - rss < MAX_RSS_MB
    assert result == contract(path), (result, path.name)
    if must_refuse:
        assert result == "refused"
    cli = info(path)
    if result == "refused":
        assert cli.exit_code == 2, (cli.exit_code, cli.output)
        text = cli.output.strip()
        assert text.startswith("Error: ") and "\n" not in text and "Traceback" not in text, text
    else:
        assert cli.exit_code == 0, cli.output
    return result


# -- byte-level fuzzing ------------------------------------------------------------------------------
plausible_prefix = st.builds(lambda n, rest: struct.pack("<Q", n) + rest, st.integers(0, 4096),
                             st.binary(max_size=4096))


@BYTES_FUZZ
@given(data=st.one_of(st.binary(max_size=2048), plausible_prefix))
def test_random_bytes_are_refused(data: bytes, workdir: Path) -> None:
    outcome(_write(workdir, data), must_refuse=True)


@BYTES_FUZZ
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_are_refused(cut: float, good: Path, workdir: Path) -> None:
    raw = good.read_bytes()
    outcome(_write(workdir, raw[: int(cut * len(raw))]), must_refuse=True)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 7)), min_size=1,
                      max_size=8))
def test_bit_flips_in_the_header(flips: list[tuple[float, int]], good: Path, workdir: Path) -> None:
    """Flipped bits in the length prefix or the JSON header: refused, or loaded when harmless (a flip
    inside the 'created' timestamp changes nothing the reader checks)."""
    raw = bytearray(good.read_bytes())
    header_end = 8 + struct.unpack("<Q", raw[:8])[0]
    for where, bit in flips:
        raw[int(where * header_end)] ^= 1 << bit
    outcome(_write(workdir, bytes(raw)))


@BYTES_FUZZ
@given(n=st.one_of(st.integers(2**24, 2**64 - 1), st.integers(1, 2**24)))
def test_oversized_header_lengths_are_refused(n: int, good: Path, workdir: Path) -> None:
    raw = good.read_bytes()
    assume_len = max(n, len(raw) - 7)  # any length past the end of the file
    outcome(_write(workdir, struct.pack("<Q", assume_len) + raw[8:]), must_refuse=True)


# -- structured fuzzing: the JSON header and the metadata -------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=30)


@SMALL_FUZZ
@given(name=st.sampled_from(["__metadata__", "model.to_latent.1.weight", "ema.decoder.3.bias", "model.new"]),
       field=st.sampled_from(["dtype", "shape", "data_offsets", None]), value=json_values)
def test_tensor_entries_in_the_header(name: str, field: str | None, value: Any, good: Path,
                                      workdir: Path) -> None:
    """Edited dtype/shape/offsets fields, whole entries replaced by any JSON, a bogus __metadata__."""
    header, data = _raw_header(good.read_bytes())
    if field is None or not isinstance(header.get(name), dict):
        header[name] = value
    else:
        header[name][field] = value
    outcome(_write(workdir, _assemble(header, data)))


def _with_metadata(parts: tuple[dict, dict], workdir: Path, **changes: str | None) -> Path:
    tensors, meta = parts
    new = {**meta, **{k: v for k, v in changes.items() if v is not None}}
    for k in [k for k, v in changes.items() if v is None]:
        new.pop(k, None)
    p = _path(workdir)
    save_file(tensors, str(p), metadata=new)
    return p


@FUZZ
@given(key=st.sampled_from(["config", "data", "training", "family", "format", "format_version", "extra"]),
       value=st.one_of(json_values.map(json.dumps), st.text(max_size=40), st.none()))
def test_metadata_entries_with_any_json(key: str, value: str | None, parts: tuple[dict, dict],
                                        workdir: Path) -> None:
    outcome(_with_metadata(parts, workdir, **{key: value}))


config_values = st.one_of(
    json_values,
    st.integers(-2**64, -1), st.integers(2**20, 2**64), st.sampled_from([float("nan"), float("inf"), 1e308]),
    st.lists(st.integers(-10, 10**9), min_size=0, max_size=12))


@FUZZ
@given(data=st.data())
def test_config_values_negative_enormous_or_wrong_type(data: st.DataObject, parts: tuple[dict, dict],
                                                        workdir: Path) -> None:
    """Any option of the family set to any value: refused before building (enormous sizes included),
    or loaded when the value still describes the weights in the file."""
    config = json.loads(parts[1]["config"])
    keys = sorted(config) + ["not_an_option"]
    edits = data.draw(st.dictionaries(st.sampled_from(keys), config_values, min_size=1, max_size=3))
    outcome(_with_metadata(parts, workdir, config=json.dumps({**config, **edits})))


@SMALL_FUZZ
@given(family=st.one_of(st.text(max_size=30), st.sampled_from(list_models())))
def test_unknown_or_other_family_names_are_refused(family: str, parts: tuple[dict, dict], workdir: Path) -> None:
    if family == FAMILY or not family:
        family = FAMILY + "x"  # empty is "missing", covered by the metadata test
    outcome(_with_metadata(parts, workdir, family=family), must_refuse=True)


_DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.uint8, torch.bool]


@SMALL_FUZZ
@given(data=st.data())
def test_wrong_dtypes_and_shapes(data: st.DataObject, parts: tuple[dict, dict], workdir: Path) -> None:
    """Real safetensors files whose tensors have another dtype or shape: float precisions load (they
    are cast, as load_state_dict does); integer/bool weights and any shape change are refused."""
    tensors, meta = dict(parts[0]), parts[1]
    name = data.draw(st.sampled_from(sorted(tensors)))
    t = tensors[name]
    op = data.draw(st.sampled_from(["dtype", "flatten", "unsqueeze", "drop", "grow"]))
    if op == "dtype":
        new = t.to(data.draw(st.sampled_from(_DTYPES)))
    elif op == "flatten":
        new = t.flatten()
    elif op == "unsqueeze":
        new = t.unsqueeze(0)
    elif op == "drop":
        new = t.flatten()[: max(0, t.numel() - 1)]
    else:
        new = torch.cat([t.flatten(), t.flatten()[:1]])
    tensors[name] = new.contiguous()
    p = _path(workdir)
    save_file(tensors, str(p), metadata=meta)
    result = outcome(p)
    same_shape = list(new.shape) == list(t.shape)
    castable = new.dtype == t.dtype or (new.dtype.is_floating_point and t.dtype.is_floating_point)
    assert result == ("loaded" if same_shape and castable else "refused"), (name, op, new.dtype, new.shape)


# -- deterministic hostile files ---------------------------------------------------------------------
class _Canary:
    """Unpickling this runs `touch PATH`: if the file ever appears, a loader executed file contents."""

    path = ""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def _hostile(case: str, parts: tuple[dict, dict], good: Path, workdir: Path) -> Path:
    tensors, meta = parts
    config = json.loads(meta["config"])
    canary = _Canary()
    canary.path = str(workdir / "canary")
    payload = pickle.dumps(canary)
    p = _path(workdir)
    deep = "[" * 100_000 + "]" * 100_000
    if case == "torch-save-pickle":
        with open(p, "wb") as fh:
            torch.save({"model": canary}, fh)  # a legacy .pt/.ckpt file with a pickled payload
    elif case == "pickle-bytes":
        p.write_bytes(payload)
    elif case == "pickle-in-metadata":
        return _with_metadata(parts, workdir, config=payload.decode("latin-1"), training=payload.decode("latin-1"))
    elif case == "pickle-as-tensor":
        save_file({**tensors, "model.__reduce__": torch.frombuffer(bytearray(payload), dtype=torch.uint8)},
                  str(p), metadata=meta)
    elif case == "code-in-family":
        return _with_metadata(parts, workdir, family=f"__import__('os').system('touch {canary.path}')")
    elif case == "deep-json-config":
        return _with_metadata(parts, workdir, config=deep)
    elif case == "deep-json-33-levels":
        return _with_metadata(parts, workdir, config=json.dumps({**config, "x": json.loads("[" * 33 + "]" * 33)}))
    elif case == "deep-json-header":
        header, data = _raw_header(good.read_bytes())
        header["model.extra"] = json.loads("[" * 500 + "]" * 500)
        p.write_bytes(_assemble(header, data))
    elif case == "deep-json-raw-header":
        header_text = deep.encode()
        p.write_bytes(struct.pack("<Q", len(header_text)) + header_text)
    elif case == "huge-metadata-1MB":
        return _with_metadata(parts, workdir, config=json.dumps({**config, "note": "x" * 1_000_000}))
    elif case == "huge-metadata-17MB":
        return _with_metadata(parts, workdir, training=json.dumps({"log": "x" * 17_000_000}))
    elif case == "huge-shape-in-header":
        header, data = _raw_header(good.read_bytes())
        header["model.to_latent.1.weight"]["shape"] = [2**40, 2**40]
        p.write_bytes(_assemble(header, data))
    elif case == "negative-offsets":
        header, data = _raw_header(good.read_bytes())
        header["model.decoder.3.bias"]["data_offsets"] = [-8, 0]
        p.write_bytes(_assemble(header, data))
    elif case == "overlapping-offsets":
        header, data = _raw_header(good.read_bytes())
        first = next(k for k in header if k != "__metadata__")
        for k, v in header.items():
            if k != "__metadata__" and v["dtype"] == header[first]["dtype"] and v["shape"] == header[first]["shape"]:
                v["data_offsets"] = header[first]["data_offsets"]
        p.write_bytes(_assemble(header, data))
    elif case == "enormous-latent":
        return _with_metadata(parts, workdir, config=json.dumps({**config, "latent_dim": 10**6}))
    elif case == "terabyte-widths":
        return _with_metadata(parts, workdir, config=json.dumps({**config, "widths": [10**6, 10**6]}))
    elif case == "overflowing-latent":
        return _with_metadata(parts, workdir, config=json.dumps({**config, "latent_dim": 2**62}))
    elif case == "nan-config":
        return _with_metadata(parts, workdir, config=json.dumps({**config, "latent_dim": float("nan")}))
    elif case == "negative-widths":
        return _with_metadata(parts, workdir, config=json.dumps({**config, "widths": [-4, 8]}))
    elif case == "data-spec-nan-range":
        return _with_metadata(parts, workdir, data=json.dumps({"image_size": 32, "channels": 1,
                                                               "value_range": [float("nan"), 1.0]}))
    else:
        raise AssertionError(case)
    return p


HOSTILE = ["torch-save-pickle", "pickle-bytes", "pickle-in-metadata", "pickle-as-tensor", "code-in-family",
           "deep-json-config", "deep-json-33-levels", "deep-json-header", "deep-json-raw-header",
           "huge-metadata-1MB", "huge-metadata-17MB", "huge-shape-in-header", "negative-offsets",
           "overlapping-offsets", "enormous-latent", "terabyte-widths", "overflowing-latent", "nan-config",
           "negative-widths", "data-spec-nan-range"]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_files_are_refused_without_running_code(case: str, parts: tuple[dict, dict], good: Path,
                                                        workdir: Path) -> None:
    path = _hostile(case, parts, good, workdir)
    outcome(path, must_refuse=True)
    assert not (workdir / "canary").exists(), "a loader executed the file's contents"


def test_overlapping_offsets_case_is_not_vacuous(parts: tuple[dict, dict], good: Path, workdir: Path) -> None:
    """safetensors itself refuses overlapping tensors; make sure the case above really overlaps some."""
    header, _ = _raw_header(_hostile("overlapping-offsets", parts, good, workdir).read_bytes())
    offsets = [tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__"]
    assert len(set(offsets)) < len(offsets)


# -- memory and time bound, measured in a fresh process ---------------------------------------------
_BOUND_CHILD = textwrap.dedent("""
    import json, resource, sys
    from aecli.checkpoint import load_model
    from aecli.errors import CheckpointError
    from test_fuzz_checkpoint import RealElements
    load_model(sys.argv[1])  # warm up: imports, allocator, the good file's own weights
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = []
    for path in sys.argv[2:]:
        before = rss()
        with RealElements() as work:
            try:
                load_model(path)
                kind = "loaded"
            except CheckpointError as exc:
                kind = "refused: " + str(exc)[:200]
        results.append({"path": path, "outcome": kind, "elements": work.elements, "rss_mb": rss() - before})
    print(json.dumps(results))
""")


def test_enormous_configs_are_refused_in_bounded_time_and_memory(parts: tuple[dict, dict], good: Path,
                                                                 workdir: Path) -> None:
    """In a fresh process (the peak RSS is a high-water mark, so it must start low): configs that would
    allocate 1.5 GB to terabytes are refused, each creating fewer than MAX_REAL_ELEMENTS real tensor
    elements and < 200 MB of extra peak memory (counts, not seconds: a busy machine is slow). The 1.5 GB
    one is below the parameter limit: the file's tensors are checked against a meta-device skeleton
    before anything real is allocated."""
    tensors, meta = parts
    config = json.loads(meta["config"])
    cases = {"latent_dim": 10**6, "fc_hidden": 10**6, "widths": [10**6, 10**6], "num_classes": 100_000}
    paths = []
    for key, value in cases.items():
        paths.append(str(_with_metadata(parts, workdir, config=json.dumps({**config, key: value}))))
    # Also a wide GAN config stored with the conv-vae tensors (family switched).
    gan = {**tiny_kwargs("gan"), "g_hidden": [30_000, 30_000]}
    paths.append(str(_with_metadata(parts, workdir, family="gan", config=json.dumps(gan))))
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", _BOUND_CHILD, str(good), *paths], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    for row in json.loads(done.stdout):
        assert row["outcome"].startswith("refused"), row
        assert row["elements"] < MAX_REAL_ELEMENTS, row
        assert row["rss_mb"] < MAX_RSS_MB, row
    # Independent check that the cases are really enormous: count parameters on the meta device.
    with torch.device("meta"):
        big = create_model(FAMILY, **{**config, "latent_dim": 10**6})
    assert sum(p.numel() for p in big.parameters()) * 4 > 1.5e9  # > 1.5 GB of float32
