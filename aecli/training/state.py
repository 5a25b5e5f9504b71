"""Resume state: everything needed to continue a run bit-exactly, in one safetensors file.

No pickle: optimizer tensors go in as tensors, the rest (param groups, counters, RNG of Python,
plateau state, scaler) as JSON metadata. The file holds its own copy of the weights, so it is
consistent with itself even if a kill lands between writing it and last.safetensors.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aecli.atomic import atomic_path
from aecli.errors import UsageError
from aecli.training.rundir import RunDir

STATE_FORMAT = "aecli-train-state"


@dataclass
class Counters:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # batches of `epoch` already done
    best_val: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> dict:
    sd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.state.{pid}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}.state."
    for name, value in tensors.items():
        if name.startswith(head):
            pid, key = name[len(head):].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(run_dir: Path, *, models: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
               counters: Counters, schedule: dict[str, Any], scaler: torch.amp.GradScaler | None,
               ema: dict[str, torch.Tensor] | None, rank_rngs: dict[str, torch.Tensor] | None = None) -> None:
    """``rank_rngs``: the other ranks' generator states of a distributed run ("rank1.torch", ...),
    so every rank's VAE noise continues exactly after a resume."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, module in models.items():
        for k, v in module.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().to("cpu").contiguous().clone()
    if ema is not None:
        for k, v in ema.items():
            tensors[f"ema.{k}"] = v.detach().to("cpu").contiguous().clone()
    opt_meta = {name: _flatten_optimizer(f"opt_{name}", opt, tensors) for name, opt in optimizers.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    for key, value in (rank_rngs or {}).items():
        tensors[f"rng.{key}"] = value.to("cpu")
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py_state = random.getstate()
    meta = {
        "format": STATE_FORMAT,
        "counters": json.dumps(counters.__dict__),
        "optimizers": json.dumps(opt_meta),
        "schedule": json.dumps(schedule),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None and scaler.is_enabled() else {}),
        "python_rng": json.dumps([py_state[0], list(py_state[1]), py_state[2]]),
    }
    with atomic_path(RunDir(run_dir).state) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


@dataclass
class LoadedState:
    counters: Counters
    schedule: dict[str, Any]
    scaler: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    optimizer_meta: dict[str, Any]
    python_rng: list[Any]

    def restore_rank_rng(self, rank: int, device: torch.device) -> bool:
        """Set this rank's generators from the state; False when the file has none (older files)."""
        cpu = self.tensors.get(f"rng.rank{rank}.torch")
        if cpu is None:
            return False
        torch.set_rng_state(cpu)
        cuda = self.tensors.get(f"rng.rank{rank}.cuda")
        if cuda is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda, device)
        return True

    def module_state(self, name: str) -> dict[str, torch.Tensor]:
        head = f"{name}."
        return {k[len(head):]: v for k, v in self.tensors.items() if k.startswith(head)}

    def restore(self, models: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                scaler: torch.amp.GradScaler | None) -> None:
        for name, module in models.items():
            module.load_state_dict(self.module_state(name))
        for name, opt in optimizers.items():
            _restore_optimizer(f"opt_{name}", opt, self.optimizer_meta[name], self.tensors)
        if scaler is not None and self.scaler:
            scaler.load_state_dict(self.scaler)
        torch.set_rng_state(self.tensors["rng.torch"])
        cuda_states = [self.tensors[k] for k in sorted(self.tensors) if k.startswith("rng.cuda.")]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
        version, inner, gauss = self.python_rng
        random.setstate((version, tuple(inner), gauss))


def load_state(run_dir: Path) -> LoadedState:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = RunDir(run_dir).state
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
        if meta.get("format") != STATE_FORMAT:
            raise ValueError("not a training state")
        counters = Counters(**json.loads(meta["counters"]))
        return LoadedState(counters=counters, schedule=json.loads(meta["schedule"]),
                           scaler=json.loads(meta["scaler"]), tensors=tensors,
                           optimizer_meta=json.loads(meta["optimizers"]),
                           python_rng=json.loads(meta["python_rng"]))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot resume from {run_dir}: {path.name} is unreadable ({exc}); "
                         "start a new run or point --resume at another run folder") from None
