"""torch.distributed set-up for torchrun and for Slurm's `srun` (one task per GPU, no torchrun).

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT. srun sets SLURM_PROCID/SLURM_LOCALID and,
for the tasks of a job step only, SLURM_STEP_NUM_TASKS; MASTER_ADDR defaults to the step's first host and
MASTER_PORT to a port derived from the job id (so two jobs sharing a node do not collide).
"""

from __future__ import annotations

import gc
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from aecli.errors import UsageError

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # none | torchrun | srun

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_env(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise UsageError(f"environment variable {name}={os.environ[name]!r} is not an integer; "
                         "unset it or launch with torchrun/srun") from None


def detect() -> DistInfo:
    """Who we are. torchrun's variables win (srun + torchrun on several nodes sets both).

    SLURM_NTASKS alone is not enough: a batch script with --ntasks=4 has it (and SLURM_PROCID=0)
    even where aecli runs once, outside srun; only the tasks of an srun step have SLURM_STEP_NUM_TASKS.
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        local = _int_env("LOCAL_RANK") if "LOCAL_RANK" in env else 0
        return DistInfo(_int_env("RANK"), _int_env("WORLD_SIZE"), local, "torchrun")
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env and _int_env("SLURM_STEP_NUM_TASKS") > 1:
        local = _int_env("SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        return DistInfo(_int_env("SLURM_PROCID"), _int_env("SLURM_STEP_NUM_TASKS"), local, "srun")
    return DistInfo()


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: 'gpu[03-05,09],cpu1' → 'gpu03' (what `scontrol show
    hostnames | head -n1` prints, without needing scontrol on the compute node)."""
    m = re.match(r"\s*([^,\[]+)(?:\[([^\]]+)\]([^,]*))?", nodelist)
    if not m:
        raise UsageError(f"cannot read the Slurm node list {nodelist!r}; export MASTER_ADDR before srun")
    prefix, ranges, suffix = m.groups()
    if not ranges:
        return prefix.strip()
    return prefix + ranges.split(",")[0].split("-")[0] + (suffix or "")


def _rendezvous_env(info: DistInfo) -> None:
    """Fill MASTER_ADDR/MASTER_PORT for srun-launched tasks when the job script did not."""
    env = os.environ
    if info.launcher == "srun":
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if "MASTER_ADDR" not in env and nodes:
            env["MASTER_ADDR"] = first_host(nodes)
        if "MASTER_PORT" not in env and env.get("SLURM_JOB_ID", "").isdigit():
            env["MASTER_PORT"] = str(port_for_job(int(env["SLURM_JOB_ID"])))
    env.setdefault("MASTER_PORT", str(DEFAULT_PORT))
    if "MASTER_ADDR" not in env:
        raise UsageError("distributed run without MASTER_ADDR: launch with torchrun, or export MASTER_ADDR "
                         "(e.g. the first host of $SLURM_JOB_NODELIST) before srun")


def port_for_job(job_id: int) -> int:
    """A per-job port in 15000-24999: below Linux's ephemeral range, distinct for concurrent jobs."""
    return 15000 + job_id % 10000


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group: NCCL on CUDA, gloo on CPU."""
    if not info.enabled or dist.is_initialized():
        return
    _rendezvous_env(info)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, init_method="env://")


def local_device(info: DistInfo, device: torch.device) -> torch.device:
    """With several processes per node, each takes the GPU matching its local rank."""
    if info.enabled and device.type == "cuda" and device.index is None:
        dev = torch.device("cuda", info.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        return dev
    return device


def gather_rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's generator states, keyed "rank{r}.torch" / "rank{r}.cuda" (rank 0's are saved
    separately). A collective: all ranks must call it; empty outside a distributed run."""
    if not dist.is_initialized():
        return {}
    comm = device if device.type == "cuda" else torch.device("cpu")  # NCCL gathers CUDA tensors only
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    out: dict[str, torch.Tensor] = {}
    for kind, state in states.items():
        local = state.to(comm)
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        out.update({f"rank{r}.{kind}": p.cpu() for r, p in enumerate(parts) if r > 0})
    return out


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


class StopVote:
    """Do all ranks agree to stop? Non-zero everywhere once any rank has seen a stop signal (or ran out of
    --max-time: wall clocks differ between ranks, so time is voted too).

    Each step's vote is all-reduced asynchronously and read one step later, so a step never waits
    for the host (on CUDA an immediate `.item()` would stall the queue every step); every rank reads
    the same vote at the same step, so all stop after the same step. Single process: no lag.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pending: tuple[object, torch.Tensor] | None = None

    def __call__(self, local: int) -> int:
        """``local``: 0 (go on) or a reason code; every rank gets the largest code any rank voted."""
        if not dist.is_initialized():
            return int(local)
        flag = torch.tensor([float(local)], device=self.device)
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True)
        previous, self._pending = self._pending, (work, flag)
        if previous is None:
            return 0
        previous[0].wait()  # type: ignore[attr-defined]
        return int(previous[1].item())

    def drain(self) -> None:
        """Finish the outstanding vote (before a barrier or shutting the process group down)."""
        if self._pending is not None:
            self._pending[0].wait()  # type: ignore[attr-defined]
            self._pending = None


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        gc.collect()  # modules in reference cycles (DDP) would otherwise outlive the group until exit
        dist.destroy_process_group()
