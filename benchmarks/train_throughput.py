"""Training throughput: (a) the seeds' plain loop, (b) aecli train, (c) the compute-only limit.

    python benchmarks/train_throughput.py [--workload small|conv|both] [--steps N] [--device cpu|cuda]

(a) torchvision ImageFolder + PIL transforms + DataLoader + Adam, as in seeds 001/002;
(b) `aecli.training.train` on the same files (its step-window images/s from metrics.jsonl, and the
    end-to-end wall time including the one-off decode);
(c) the same model and optimizer step (aecli's Adam settings) on batches already in memory.
Each run generates its own data in a temp folder. Prints images/s and the ratios b/a and b/c.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORKLOADS = {
    # seed 002 §1: the MNIST MLP AE on 28² grayscale PNGs, batch 32
    "small": dict(family="mlp-ae", model={}, size=28, channels=1, count=4096, ext="png", batch=32),
    # seed 001's Mish conv AE scaled to 64² RGB JPEGs, batch 32
    "conv": dict(family="conv-ae", model=dict(arch="plain", widths=(64, 128, 256), kernel_size=4, activation="mish",
                                              norm="batch", latent="spatial", init="kaiming", final_conv=True),
                 size=64, channels=3, count=1024, ext="jpg", batch=32),
    # seed 000 D1 at full size: aecli in bf16 (GPU) against the seeds' fp32 loop; run with --device cuda
    "resnet256": dict(family="resnet-vae", model={}, size=256, channels=3, count=512, ext="jpg", batch=8,
                      precision="bf16"),
}


def make_images(folder: Path, count: int, size: int, channels: int, ext: str) -> None:
    rng = np.random.default_rng(0)
    (folder / "all").mkdir(parents=True)
    for i in range(count):
        base = rng.integers(0, 255, size=(size // 4, size // 4, channels), dtype=np.uint8)
        arr = np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))  # blocky, compressible like real images
        img = Image.fromarray(arr[:, :, 0] if channels == 1 else arr)
        img.save(folder / "all" / f"{i:05d}.{ext}", quality=90) if ext == "jpg" else img.save(folder / "all" / f"{i:05d}.{ext}")


def build(w: dict, device: torch.device) -> torch.nn.Module:
    from aecli.models import create_model

    torch.manual_seed(0)
    return create_model(w["family"], image_size=w["size"], channels=w["channels"], **w["model"]).to(device)


def seed_style(folder: Path, w: dict, steps: int, device: torch.device) -> float:
    import torchvision
    import torchvision.transforms as T

    tf = [T.Grayscale()] if w["channels"] == 1 else []
    tf += [T.Resize(w["size"]), T.CenterCrop(w["size"]), T.ToTensor(), T.Normalize([0.5] * w["channels"], [0.5] * w["channels"])]
    data = torchvision.datasets.ImageFolder(str(folder), transform=T.Compose(tf))
    loader = torch.utils.data.DataLoader(data, batch_size=w["batch"], shuffle=True, drop_last=True)
    model = build(w, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    done, t0 = 0, None
    while done < steps + 5:
        for x, _ in loader:
            if done == 5:
                t0 = time.perf_counter()  # after warm-up
            x = x.to(device)
            if w["family"] == "mlp-ae":
                x = (x + 1) / 2  # sigmoid output: data in [0, 1]
            loss = torch.nn.functional.mse_loss(model(x).recon, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # the seeds accumulate loss.item() every step
            done += 1
            if done >= steps + 5:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * w["batch"] / (time.perf_counter() - t0)


def compute_only(w: dict, steps: int, device: torch.device) -> float:
    from aecli.training.trainer import make_optimizer

    model = build(w, device)
    opt = make_optimizer(model.parameters(), "adam", 1e-3, (0.9, 0.999), 0.0, device)  # the optimizer aecli uses
    lo = 0.0 if w["family"] == "mlp-ae" else -1.0
    batches = [torch.rand(w["batch"], w["channels"], w["size"], w["size"], device=device) * (1 - lo) + lo
               for _ in range(8)]
    for i in range(steps + 5):
        if i == 5:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x = batches[i % 8]
        loss = torch.nn.functional.mse_loss(model(x).recon, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * w["batch"] / (time.perf_counter() - t0)


def aecli_train(folder: Path, w: dict, steps: int, device: torch.device, out: Path) -> tuple[float, float]:
    from aecli.training import TrainConfig, train

    per_epoch = int(w["count"] * 0.9) // w["batch"]
    epochs = max(1, -(-(steps + 5) // per_epoch))
    cfg = TrainConfig(family=w["family"], model=dict(w["model"]), data=str(folder), image_size=w["size"],
                      channels=w["channels"], epochs=epochs, batch_size=w["batch"], lr=1e-3, out=str(out),
                      recon="mse",  # the plain loop's loss (conv-ae's own default is gaussian)
                      log_every=max(1, steps // 4), device=str(device), grid_size=4,
                      precision=w.get("precision", "fp32") if device.type == "cuda" else "fp32")
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if r["kind"] == "step"][1:]  # the first window includes warm-up
    steps_done = epochs * per_epoch
    return float(np.median(rates)) if rates else float("nan"), steps_done * w["batch"] / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["small", "conv", "both", "resnet256"], default="both")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    names = ["small", "conv"] if args.workload == "both" else [args.workload]
    for name in names:
        w = WORKLOADS[name]
        steps = args.steps if name == "small" else max(20, args.steps // 5)
        if w.get("precision") and device.type == "cuda":
            print(f"[{name}] aecli runs in {w['precision']}; (a) and (c) in fp32 (the seeds' setting)")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "data"
            make_images(folder, w["count"], w["size"], w["channels"], w["ext"])
            a = seed_style(folder, w, steps, device)
            b, b_wall = aecli_train(folder, w, steps, device, Path(tmp) / "run")
            c = compute_only(w, steps, device)
        print(f"[{name}] {w['family']} {w['channels']}×{w['size']}² batch {w['batch']}, {steps} steps")
        print(f"  (a) seed-style loop      {a:10.1f} img/s")
        print(f"  (b) aecli train          {b:10.1f} img/s   (end to end incl. decode, val, checkpoints: {b_wall:.1f} img/s)")
        print(f"  (c) compute-only limit   {c:10.1f} img/s")
        print(f"  b/a = {b / a:.2f}×   b/c = {b / c:.2f}")


if __name__ == "__main__":
    main()
