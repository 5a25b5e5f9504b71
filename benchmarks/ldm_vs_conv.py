"""ldm-kl with the LDM objective against conv-vae, same latent shape, equal optimizer steps (issue 17).

    python benchmarks/ldm_vs_conv.py [--steps 1000] [--eval-every 250] [--data shapes:512] [--size 32]
                                     [--batch-size 16] [--lr-ldm 5e-4] [--lr-conv 5e-4] [--threads 1]
                                     [--only RUN,RUN] [-m KEY=VALUE (an ldm-kl option)] [--keep DIR]
    runs: ldm-kl.ldm, conv-vae.ldm, conv-vae.sum, conv-vae.default (default: all four)

"Same size" here means: the same latent (4×8×8 at 32 px: 256 numbers per image), the same data,
batch, seed, number of optimizer steps and schedule (aecli's default: cosine with a 50-step warm-up
over the whole run), and about the same parameter count (242k against 248k; printed).

- ``ldm-kl``: block_out_channels 16,32,32 (three levels: /4), layers_per_block 1, norm_num_groups 8
  (2-4 channels per group; the diffusers default of 32 groups would normalise single channels at
  these widths), ``--objective ldm --recon l1 --beta 1e-6`` (LDM's kl-f8 loss; no LPIPS: no
  pretrained weights offline, and no GAN: LDM starts it at step 50,001).
- ``conv-vae``: the residual trunk with a spatial latent (patch 2, widths 32,64 → 8×8, latent_dim 4),
  trained with the same LDM objective (``conv-vae.ldm``: isolates the architecture), with aecli's
  default objective at LDM's weights (``conv-vae.sum``: ``--recon l1 --beta 1e-6 --reduction sum``, the
  same loss without the learned log-variance) and with aecli's default objective as it is
  (``conv-vae.default``: conv-vae's training defaults, since issue 16 ``--recon gaussian --reduction sum``
  at β = 1; BENCHMARKS.md's row was measured before, with MSE + 1.0 × KL, both per-element means).

Every run is trained by ``aecli.training.train`` (the `aecli train` code) for ``--steps`` steps,
saving a checkpoint every ``--eval-every`` steps; each is scored on the data's validation split with
``aecli.metrics.evaluate_checkpoints`` (the `aecli evaluate` code, posterior mean). Prints a table:
family, objective, params, lr, steps, PSNR, SSIM, training time.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

LDM_MODEL = {"block_out_channels": (16, 32, 32), "layers_per_block": 1, "norm_num_groups": 8}
CONV_MODEL = {"latent": "spatial", "latent_dim": 4, "patch": 2, "widths": (32, 64)}
LDM_LOSS = {"objective": "ldm", "recon": "l1", "beta": 1e-6}
SUM_LOSS = {"recon": "l1", "beta": 1e-6, "reduction": "sum"}


def run(name: str, family: str, model: dict[str, Any], loss: dict[str, Any], lr: float, work: Path,
        args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train one configuration; score its periodic checkpoints. One row per evaluated step count."""
    from aecli.checkpoint import read_header
    from aecli.metrics.evaluate import EvalConfig, evaluate_checkpoints
    from aecli.training import TrainConfig, train

    out = work / name
    cfg = TrainConfig(family=family, model=dict(model), data=args.data, image_size=args.size,
                      batch_size=args.batch_size, lr=lr, max_steps=args.steps, save_every_steps=args.eval_every,
                      seed=args.seed, device=args.device, workers=1, out=str(out), log_every=10**9, **loss)
    start = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - start
    ckpts = sorted(out.glob("step*.safetensors"))
    report = evaluate_checkpoints(ckpts, EvalConfig(metrics=["psnr", "ssim"], device=args.device))
    params = read_header(ckpts[-1]).parameter_count
    rows = []
    for ckpt, row in zip(ckpts, report.rows):
        rows.append({"name": name, "family": family, "params": params, "lr": lr,
                     "steps": int(ckpt.stem.removeprefix("step")), "psnr": row.values["psnr"],
                     "ssim": row.values["ssim"], "seconds": seconds})
    return rows


def _parse(text: str) -> Any:
    if "," in text:
        return tuple(_parse(t) for t in text.split(",") if t)
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="optimizer steps of every run")
    ap.add_argument("--eval-every", type=int, default=250, help="score a checkpoint every this many steps")
    ap.add_argument("--data", default="shapes:512", help="embedded data: shapes:N or digits")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr-ldm", type=float, default=5e-4)
    ap.add_argument("--lr-conv", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    ap.add_argument("--only", default="", help="comma-separated run names to run (default: all)")
    ap.add_argument("-m", "--ldm-opt", action="append", default=[],
                    help="ldm-kl option KEY=VALUE, e.g. norm_num_groups=16 or block_out_channels=32,64,64 (ablations)")
    ap.add_argument("--keep", type=Path, help="keep the runs in this folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ldm_model = {**LDM_MODEL, **{k: _parse(v) for k, v in (o.split("=", 1) for o in args.ldm_opt)}}
    runs = [("ldm-kl.ldm", "ldm-kl", ldm_model, LDM_LOSS, args.lr_ldm),
            ("conv-vae.ldm", "conv-vae", CONV_MODEL, LDM_LOSS, args.lr_conv),
            ("conv-vae.sum", "conv-vae", CONV_MODEL, SUM_LOSS, args.lr_conv),
            ("conv-vae.default", "conv-vae", CONV_MODEL, {}, args.lr_conv)]
    if args.only:
        runs = [r for r in runs if r[0] in args.only.split(",")]
    if args.ldm_opt:
        print(f"# ldm-kl options: {ldm_model}")
    print(f"# {args.data} at {args.size} px, batch {args.batch_size}, {args.steps} steps, seed {args.seed}; "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s), device {args.device}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        for name, family, model, loss, lr in runs:
            rows += run(name, family, model, loss, lr, work, args)
            print(f"# {name}: done, {rows[-1]['seconds']:.0f} s", flush=True)

    print("| run | family | params | lr | steps | PSNR | SSIM | train time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["steps"], r["name"])):
        print(f"| {r['name']} | {r['family']} | {r['params']:,} | {r['lr']:g} | {r['steps']} | "
              f"{r['psnr']:.2f} dB | {r['ssim']:.4f} | {r['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
