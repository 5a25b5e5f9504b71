"""Device choice shared by every command."""

from __future__ import annotations

import torch

from aecli.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """auto|cpu|cuda|cuda:N → torch.device, with a clear error when CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s) "
                             f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
        return torch.device(name)
    raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
