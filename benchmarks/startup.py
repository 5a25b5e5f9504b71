"""Start-up cost: `aecli --help` and `aecli info CKPT` wall time vs `python -c pass`.

    python benchmarks/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from aecli.checkpoint import save_model
    from aecli.data.spec import DataSpec
    from aecli.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "m.safetensors"
        save_model(ckpt, create_model("conv-ae", image_size=32, channels=1), DataSpec(32, 1))
        base = wall([sys.executable, "-c", "pass"], args.repeat)
        helpt = wall([sys.executable, "-m", "aecli", "--help"], args.repeat)
        info = wall([sys.executable, "-m", "aecli", "info", str(ckpt)], args.repeat)
    print(f"python -c pass     {base:.3f} s")
    print(f"aecli --help       {helpt:.3f} s  (+{helpt - base:.3f} s over python)")
    print(f"aecli info CKPT    {info:.3f} s  (+{info - base:.3f} s; imports torch to rebuild and check the model)")


if __name__ == "__main__":
    main()
