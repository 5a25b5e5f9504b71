"""Distributed training on CPU (gloo): torchrun and Slurm's srun (SLURM_* variables, no torchrun).

The independent reference: DDP averages the gradients of two per-rank batches of 32, and the two ranks
take interleaved halves of the same (seed, epoch) permutation, so 2 ranks × batch 32 must train the same
weights as 1 process × batch 64 (up to float summation order). That only holds if both ranks' data is used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_interrupt import EXIT_INTERRUPTED, Live, assert_same_weights, clean_env, run_aecli, state_step

from aecli.checkpoint import load_model, read_header
from aecli.errors import UsageError
from aecli.training import distributed
from aecli.training.distributed import DistInfo, detect, first_host, port_for_job

MLP = ["-m", "hidden=32", "-m", "latent_dim=8"]  # mlp-ae: no noise, no BatchNorm: ranks must agree exactly


def mlp_args(batch: int, *extra: str) -> list[str]:
    return ["train", "mlp-ae", *MLP, "--data", "digits", "--epochs", "2", "--batch-size", str(batch),
            "--device", "cpu", "--workers", "1", "--grid-columns", "2", "--seed", "1", *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(run_dir: Path, kind: str) -> list[dict]:
    all_rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in all_rows if r["kind"] == kind]


def assert_close_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.allclose(ta[k], tb[k], rtol=0, atol=atol), (k, (ta[k] - tb[k]).abs().max())


@pytest.fixture(scope="module")
def single_batch64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    done = run_aecli(mlp_args(64, "--out", str(out), "--log-every", "1000"))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def torchrun_2x32(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("torchrun") / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "aecli", *mlp_args(32, "--out", str(out), "--log-every", "1000")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


# -- launcher detection (no processes) ----------------------------------------------------------
@pytest.mark.parametrize("env, expected", [
    ({}, DistInfo()),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, DistInfo(3, 4, 1, "torchrun")),
    # A batch script with --ntasks=4 running aecli once, outside srun: one process, not a hang.
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, DistInfo()),
    ({"SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0"},
     DistInfo(2, 4, 0, "srun")),
    ({"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}, DistInfo()),  # `srun aecli train` on 1 GPU
    # srun + torchrun (multi-node): one srun task per node, torchrun's variables describe the workers.
    ({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"},
     DistInfo(5, 8, 1, "torchrun")),
])
def test_detect_reads_torchrun_and_srun_variables(env: dict, expected: DistInfo,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID",
                 "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert detect() == expected


def test_detect_rejects_non_integer_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "zero")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="RANK='zero'"):
        detect()


@pytest.mark.parametrize("nodelist, host", [
    ("localhost", "localhost"), ("node1,node2", "node1"), ("gpu[03-05,09],cpu1", "gpu03"),
    ("n[7]", "n7"), ("rack1-[10-12]-ib", "rack1-10-ib"), ("a[2,4-6]", "a2"),
])
def test_first_host_of_a_slurm_nodelist(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


def test_srun_rendezvous_defaults_from_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[03-04]")
    monkeypatch.setenv("SLURM_JOB_ID", "1234567")
    distributed._rendezvous_env(DistInfo(1, 2, 1, "srun"))
    assert os.environ["MASTER_ADDR"] == "gpu03"
    assert os.environ["MASTER_PORT"] == str(port_for_job(1234567)) == "19567"
    monkeypatch.delenv("MASTER_ADDR")
    with pytest.raises(UsageError, match="MASTER_ADDR"):  # torchrun always sets it; without it: clear error
        distributed._rendezvous_env(DistInfo(1, 2, 0, "torchrun"))


def test_stop_vote_without_process_group_is_the_local_flag() -> None:
    vote = distributed.StopVote(torch.device("cpu"))
    assert vote(0) == 0 and vote(1) == 1 and vote(2) == 2  # 0: go on; 1: out of --max-time; 2: a signal
    vote.drain()


# -- real processes ------------------------------------------------------------------------------
def test_torchrun_two_gloo_ranks_train_like_one_process_with_the_global_batch(
        torchrun_2x32: tuple[Path, str], single_batch64: Path) -> None:
    out, stdout = torchrun_2x32
    assert "batch 32 × 2 processes = global batch 64; 50 steps" in stdout  # 1616 images / 64 per step
    assert_close_weights(out / "last.safetensors", single_batch64 / "last.safetensors")
    # Only rank 0 logs: each epoch's rows once, counting both ranks' images (25 steps × 2 × 32).
    epochs = rows(out, "epoch")
    assert [(r["epoch"], r["split"]) for r in epochs] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    assert [r["images"] for r in epochs] == [1600] * 4 == [r["images"] for r in rows(single_batch64, "epoch")]
    # Validation (90 images per rank) reduced across ranks equals the single process's over all 180.
    for dist_row, single_row in zip(epochs, rows(single_batch64, "epoch")):
        assert dist_row["loss"] == pytest.approx(single_row["loss"], rel=1e-5, abs=1e-6)
    # Same checkpoint format as a single-process run: same tensors, dtypes, shapes and metadata keys.
    a, b = read_header(out / "last.safetensors"), read_header(single_batch64 / "last.safetensors")
    assert {k: (v["dtype"], v["shape"]) for k, v in a.tensors.items()} == \
        {k: (v["dtype"], v["shape"]) for k, v in b.tensors.items()}
    assert a.metadata.keys() == b.metadata.keys() and a.config == b.config and a.data == b.data
    assert a.training["world_size"] == 2
    loaded = load_model(out / "last.safetensors")
    assert loaded.model(torch.rand(2, 1, 32, 32)).recon.shape == (2, 1, 32, 32)


def test_srun_tasks_stop_together_on_one_ranks_sigterm_and_resume_exactly(
        torchrun_2x32: tuple[Path, str], tmp_path: Path) -> None:
    """Two tasks as srun starts them (SLURM_* only; MASTER_ADDR from the node list). SIGTERM reaches
    rank 1 only; both ranks stop after the same step, rank 0 saves, both exit 75; --resume auto
    finishes with the weights of the uninterrupted torchrun run, bit for bit."""
    out = tmp_path / "run"
    args = mlp_args(32, "--resume", "auto", "--out", str(out), "--log-every", "1")

    def launch() -> list[Live]:
        port = str(free_port())
        return [Live(args, clean_env(SLURM_JOB_ID="77", SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2",
                                     SLURM_PROCID=str(r), SLURM_LOCALID=str(r), SLURM_STEP_NODELIST="localhost",
                                     MASTER_PORT=port)) for r in (0, 1)]

    ranks = launch()
    assert "global batch 64" in ranks[0].wait_for(r"training mlp-ae")
    ranks[0].wait_for(r"step 8/50 ")
    ranks[1].proc.send_signal(signal.SIGTERM)
    codes = [r.finish() for r in ranks]
    assert codes == [EXIT_INTERRUPTED] * 2, [r.stderr for r in ranks]
    assert ranks[1].stdout == []  # only rank 0 prints progress
    step = state_step(out)[0]
    assert 8 <= step < 50

    ranks = launch()
    assert f"step {step + 1}/50 " in ranks[0].wait_for(r"step \d+/50 ")
    assert [r.finish() for r in ranks] == [0, 0], [r.stderr for r in ranks]
    assert_same_weights(out / "last.safetensors", torchrun_2x32[0] / "last.safetensors")


def test_two_rank_vae_resumes_bit_identically(tmp_path: Path) -> None:
    """VAE noise is drawn on every rank: each rank's generator is saved with the state, so a 2-rank
    conv-vae stopped mid-run and resumed equals the uninterrupted 2-rank run, bit for bit."""
    vae = ["train", "conv-vae", "-m", "widths=8,16", "-m", "latent_dim=4", "--data", "shapes:160",
           "--image-size", "16", "--channels", "1", "--epochs", "2", "--batch-size", "16", "--device", "cpu",
           "--workers", "1", "--grid-columns", "2", "--seed", "2", "--log-every", "1"]

    def ranks(out: Path, port: str) -> list[Live]:
        return [Live([*vae, "--resume", "auto", "--out", str(out)],
                     clean_env(SLURM_JOB_ID="78", SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_PROCID=str(r),
                               SLURM_LOCALID=str(r), SLURM_STEP_NODELIST="localhost", MASTER_PORT=port))
                for r in (0, 1)]

    reference = ranks(tmp_path / "ref", str(free_port()))
    assert [r.finish() for r in reference] == [0, 0], [r.stderr for r in reference]
    stopped = ranks(tmp_path / "run", str(free_port()))
    stopped[0].wait_for(r"step 3/8 ")
    stopped[0].proc.send_signal(signal.SIGTERM)
    assert [r.finish() for r in stopped] == [EXIT_INTERRUPTED] * 2, [r.stderr for r in stopped]
    assert "rng.rank1.torch" in load_file(str(tmp_path / "run" / "state.safetensors"))
    resumed = ranks(tmp_path / "run", str(free_port()))
    assert [r.finish() for r in resumed] == [0, 0], [r.stderr for r in resumed]
    assert_same_weights(tmp_path / "run" / "last.safetensors", tmp_path / "ref" / "last.safetensors")


def test_two_ranks_with_gradient_accumulation_train_like_one_process_with_the_global_batch(
        single_batch64: Path, tmp_path: Path) -> None:
    """2 ranks × batch 16 × --grad-accum-steps 2: DDP all-reduces once per step (no_sync on the first
    micro-batch) and the result equals 1 process × batch 64."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "aecli",
           *mlp_args(16, "--grad-accum-steps", "2", "--out", str(out), "--log-every", "1000")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "batch 16 × 2 accumulated × 2 processes = global batch 64; 50 steps" in done.stdout
    assert_close_weights(out / "last.safetensors", single_batch64 / "last.safetensors")
    assert read_header(out / "last.safetensors").training["effective_batch"] == 64
