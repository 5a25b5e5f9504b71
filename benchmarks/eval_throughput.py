"""Evaluation cost: `aecli evaluate` (one pass for all metrics, cached reference features) versus
the same metrics computed separately with each library's own calls.

    python benchmarks/eval_throughput.py [--n 1000] [--size 64] [--device cpu|cuda]

Offline stand-ins are used for the pretrained files (a Kaiming-initialised Inception, a random
AlexNet trunk for LPIPS): the timings are real, the metric values are not meaningful.
Prints wall times for
  (1) aecli evaluate --metrics rfid                     (FID of reconstructions alone, cold cache)
  (2) aecli evaluate --metrics psnr,ssim,lpips,rfid     (cold cache)     target (2) ≤ 1.2 × (1)
  (3) the same, second run                              (reference features cached) target (2)/(3) ≥ 1.8
  (4) separate library calls: PSNR by formula, pytorch_msssim.ssim, lpips.LPIPS, torch_fidelity.calculate_metrics
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def separate_library_calls(ckpt: Path, n: int, device: torch.device, work: Path, inception: Path,
                           lpips_trunk: Path, batch: int) -> None:
    """What a user would otherwise run: one loop per metric, then torch-fidelity on PNG folders."""
    import lpips
    import pytorch_msssim
    import torch_fidelity

    from aecli.checkpoint import load_model
    from aecli.data import open_source
    from aecli.images import save_png

    loaded = load_model(ckpt, device)
    model, spec = loaded.model, loaded.data
    data = open_source(spec.source, image_size=spec.image_size, channels=spec.channels, split="val", limit=n)

    def batches():
        for i in range(0, len(data), batch):
            x = data.take(list(range(i, min(i + batch, len(data))))).to(device).float() / 255
            with torch.no_grad():
                lo, hi = spec.value_range
                recon = spec.to_unit_range(model(x * (hi - lo) + lo).recon)
            yield x, recon

    psnr = [10 * torch.log10(1 / ((r - x) ** 2).flatten(1).mean(1)) for x, r in batches()]
    ssim = [pytorch_msssim.ssim(r, x, data_range=1.0, size_average=False) for x, r in batches()]
    net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).to(device)
    trunk = {k: v for k, v in torch.load(lpips_trunk, weights_only=True).items() if k.startswith("features.")}
    net.net.load_state_dict({k: trunk[f"features.{k.split('.', 1)[1]}"] for k in net.net.state_dict()})
    dist = []
    for x, r in batches():
        a, b = (r * 2 - 1), (x * 2 - 1)
        if a.shape[1] == 1:
            a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
        with torch.no_grad():
            dist.append(net(a, b).flatten())
    (work / "ref").mkdir()
    (work / "rec").mkdir()
    k = 0
    for x, r in batches():
        for xi, ri in zip(x, r):
            save_png(xi, work / "ref" / f"{k:05d}.png")
            save_png(ri, work / "rec" / f"{k:05d}.png")
            k += 1
    torch_fidelity.calculate_metrics(input1=str(work / "rec"), input2=str(work / "ref"), fid=True,
                                     feature_extractor_weights_path=str(inception), cuda=device.type == "cuda",
                                     verbose=False, cache=False, batch_size=batch)
    print(f"      (library values: psnr {torch.cat(psnr).mean():.2f}, ssim {torch.cat(ssim).mean():.3f}, "
          f"lpips {torch.cat(dist).mean():.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    import torchvision
    from typer.testing import CliRunner

    from aecli.checkpoint import save_model
    from aecli.cli import app
    from aecli.data.spec import DataSpec
    from aecli.models import create_model
    from _standins import save_random_inception

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"device {device}; {args.n} images of 3×{args.size}² (embedded shapes)")
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inception = save_random_inception(work / "inception.pth")
        trunk = work / "alexnet.pth"
        torch.save(torchvision.models.alexnet().state_dict(), trunk)
        ckpt = work / "model.safetensors"
        model = create_model("conv-ae", image_size=args.size, channels=3, widths=(32, 64, 128), latent="spatial")
        save_model(ckpt, model, DataSpec(args.size, 3, (-1.0, 1.0), source=f"shapes:{args.n * 10}"))

        def evaluate(metrics: str, cache: str) -> None:
            res = runner.invoke(app, ["evaluate", str(ckpt), "--metrics", metrics, "--n", str(args.n),
                                      "--device", str(device), "--inception-weights", str(inception),
                                      "--lpips-weights", str(trunk), "--cache", str(work / cache),
                                      "--batch-size", str(args.batch_size)])
            if res.exit_code != 0:
                raise SystemExit(res.output)

        # Decode the data once up front so no timing below pays for the first decode of shapes.
        from aecli.data import open_source
        open_source(f"shapes:{args.n * 10}", image_size=args.size, channels=3, split="val", limit=args.n)
        t_fid = timed(lambda: evaluate("rfid", "cache-a"))
        t_all = timed(lambda: evaluate("psnr,ssim,lpips,rfid", "cache-b"))
        t_again = timed(lambda: evaluate("psnr,ssim,lpips,rfid", "cache-b"))
        t_sep = timed(lambda: separate_library_calls(ckpt, args.n, device, work, inception, trunk, args.batch_size))
    print(f"  (1) evaluate rfid alone                 {t_fid:8.1f} s")
    print(f"  (2) evaluate psnr,ssim,lpips,rfid       {t_all:8.1f} s   (2)/(1) = {t_all / t_fid:.2f}  (target ≤ 1.2)")
    print(f"  (3) the same, reference cached          {t_again:8.1f} s   (2)/(3) = {t_all / t_again:.2f}  (target ≥ 1.8)")
    print(f"  (4) separate library calls              {t_sep:8.1f} s   (4)/(2) = {t_sep / t_all:.2f}")


if __name__ == "__main__":
    main()
