"""torch.distributed set-up for torchrun and for Slurm's `srun` (one task per GPU, no torchrun).

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; srun sets SLURM_PROCID/SLURM_NTASKS/
SLURM_LOCALID, and MASTER_ADDR must come from the job script (first host of SLURM_JOB_NODELIST).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from aecli.errors import UsageError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> DistInfo:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env and "MASTER_ADDR" in env:
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistInfo()


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group: NCCL on CUDA, gloo on CPU."""
    if not info.enabled or dist.is_initialized():
        return
    os.environ.setdefault("MASTER_PORT", "29500")
    if "MASTER_ADDR" not in os.environ:
        raise UsageError("distributed run without MASTER_ADDR: launch with torchrun, or export MASTER_ADDR "
                         "(e.g. the first host of $SLURM_JOB_NODELIST) before srun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, init_method="env://")


def local_device(info: DistInfo, device: torch.device) -> torch.device:
    """With several processes per node, each takes the GPU matching its local rank."""
    if info.enabled and device.type == "cuda" and device.index is None:
        dev = torch.device("cuda", info.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        return dev
    return device


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any rank (e.g. a stop signal seen by one process)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
