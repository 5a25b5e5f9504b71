"""Model quality: the default conv-ae / conv-vae against PCA, the best linear autoencoder, at the same code size.

    python benchmarks/quality.py [--budget 600] [--latent-dim 64] [--families conv-ae,conv-vae]
                                 [--size 64] [--train 19000] [--test 1900] [--device cpu] [--keep DIR]

Data: 64² crops of the 19 photos that ship inside installed dependencies (no download): scikit-image's RGB
photos (astronaut, chelsea, coffee, rocket, Hubble deep field, immunohistochemistry, retina, motorcycle) and
grey ones as three equal channels (camera, brick, grass, gravel, moon, coins, clock, cell), scikit-learn's
china and flower, matplotlib's Grace Hopper. Split by region: in every photo the right-most fifth of the
columns gives the test crops and the rest the training crops, so no test pixel was ever seen in training.
PCA-k is fitted on the training crops (k = the model's code size) and scored on the test crops.

Each family is trained with `aecli.training.train` at its defaults (only --latent-dim and the data are set)
with `--max-time` = the budget: the cosine schedule re-plans its length from the measured step rate, so it
reaches zero at the deadline (aecli.training.schedules). Its checkpoint with the lowest validation loss (the
best epoch end or the weights at the deadline) is scored on the test crops by
`aecli.metrics.evaluate_checkpoints` (the `aecli evaluate` code). Prints one row per family: code size,
parameters, steps, measured training time, test PSNR (the mean over images, as `aecli evaluate` reports it)
and SSIM, the PSNR of the mean squared error over all test pixels (which weights the hardest crops most),
PCA-k's PSNR and the gap.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

# Every photo that ships inside an installed dependency (no download): scikit-image's RGB and grey photos
# (grey ones as three equal channels), scikit-learn's two sample images and matplotlib's Grace Hopper.
RGB_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
              "motorcycle", "china.jpg", "flower.jpg", "grace_hopper.jpg")
GREY_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "coins", "clock", "cell")
PHOTOS = RGB_PHOTOS + GREY_PHOTOS
TEST_FRACTION = 0.2  # right-most fifth of every photo's columns


def photos() -> dict[str, np.ndarray]:
    """The bundled photos, H×W×3 uint8."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_image
    from skimage import data

    out = {}
    for name in PHOTOS:
        if name == "motorcycle":
            img = data.stereo_motorcycle()[0]
        elif name == "grace_hopper.jpg":
            with matplotlib.cbook.get_sample_data(name) as f:
                img = np.asarray(Image.open(f).convert("RGB"))
        elif name.endswith(".jpg"):
            img = load_sample_image(name)
        else:
            img = getattr(data, name)()
        out[name] = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    return out


def crop_boxes(shapes: list[tuple[int, int]], size: int, n_train: int, n_test: int,
               seed: int = 0) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """(train, test) crop corners (photo index, y, x), the same number from every photo: a test crop lies in
    the photo's right-most columns, a training crop entirely left of them."""
    rng = np.random.default_rng(seed)
    train: list[tuple[int, int, int]] = []
    test: list[tuple[int, int, int]] = []
    for i, (h, w) in enumerate(shapes):
        cut = int(w * (1 - TEST_FRACTION))
        for n_total, out, lo, hi in ((n_train, train, 0, cut), (n_test, test, cut, w)):
            n = n_total // len(shapes) + (i < n_total % len(shapes))
            ys = rng.integers(0, h - size + 1, n)
            xs = rng.integers(lo, hi - size + 1, n)
            out += [(i, int(y), int(x)) for y, x in zip(ys, xs)]
    return train, test


def photo_crops(size: int = 64, n_train: int = 19000, n_test: int = 1900, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) crops, N×size×size×3 uint8 (``crop_boxes`` of the bundled photos)."""
    imgs = list(photos().values())
    boxes = crop_boxes([img.shape[:2] for img in imgs], size, n_train, n_test, seed)
    return tuple(np.stack([imgs[i][y:y + size, x:x + size] for i, y, x in part]) for part in boxes)  # type: ignore[return-value]


def to_unit(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255


def pca_scores(train: np.ndarray, test: np.ndarray, k: int) -> tuple[float, float, float]:
    """Test PSNR, SSIM and mean MSE of PCA-k fitted on the training crops (the `evaluate --baseline pca` code)."""
    from aecli.metrics import reconstruction as rec
    from aecli.metrics.baseline import PCA

    pca = PCA.fit(to_unit(train).flatten(1), k, device=torch.device("cpu"))
    x = to_unit(test)
    pred = pca.reconstruct(x.flatten(1)).view_as(x).clamp(0, 1)
    return float(rec.psnr(pred, x).mean()), float(rec.ssim(pred, x).mean()), float(rec.mse(pred, x).mean())


def write_pngs(crops: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, c in enumerate(crops):
        Image.fromarray(c).save(folder / f"{i:05d}.png")


def train_family(family: str, train_dir: Path, test_dir: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from aecli.checkpoint import load_model
    from aecli.metrics.evaluate import EvalConfig, evaluate_checkpoints
    from aecli.training import TrainConfig, train

    overrides = dict(v.split("=", 1) for v in args.train_opt)
    model_opts = {"latent_dim": args.latent_dim, **{k: _parse(v) for k, v in (o.split("=", 1) for o in args.model_opt)}}
    base = dict(family=family, model=model_opts, data=str(train_dir), image_size=args.size, device=args.device,
                out=str(work / family), workers=1, seed=0, **{k: _parse(v) for k, v in overrides.items()})
    # --max-time sets the length: the cosine schedule follows the deadline (aecli.training.schedules); the
    # epoch cap is only there so that the deadline, not the epochs, ends the run.
    cfg = TrainConfig(**{"epochs": 100_000, "max_time": str(int(args.budget)), **base})
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    ckpt = _lowest_val(work / family)
    report = evaluate_checkpoints([ckpt], EvalConfig(metrics=["psnr", "ssim", "mse"], data=str(test_dir), split="all",
                                                     device=args.device))
    row = report.rows[0]
    # Learned parameters only (the PCA path's fixed buffers hold the same numbers as the pca-k row's model).
    params = sum(p.numel() for p in load_model(ckpt).model.parameters())
    return {"family": family, "params": params, "steps": result.steps,
            "seconds": seconds, "psnr": row.values["psnr"], "ssim": row.values["ssim"], "mse": row.values["mse"]}


def _lowest_val(run: Path) -> Path:
    """The run's checkpoint with the lowest validation loss: best.safetensors (the best epoch end) or
    last.safetensors (the weights at the deadline, validated when --max-time stopped the run mid-epoch)."""
    from aecli.checkpoint import read_header

    files = [p for p in (run / "best.safetensors", run / "last.safetensors") if p.exists()]
    return min(files, key=lambda p: read_header(p).training["val"]["loss"])


def _parse(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if "," in text:
        return tuple(_parse(t) for t in text.split(",") if t)
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=600.0, help="training wall time per family, seconds")
    ap.add_argument("--latent-dim", type=int, default=64, help="code size (numbers per image) of every model and PCA")
    ap.add_argument("--families", default="conv-ae,conv-vae")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train", type=int, default=19000, help="training crops (1,000 per photo)")
    ap.add_argument("--test", type=int, default=1900, help="test crops (100 per photo)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-m", "--model-opt", action="append", default=[], help="family option KEY=VALUE (ablations)")
    ap.add_argument("-t", "--train-opt", action="append", default=[], help="training option KEY=VALUE (ablations)")
    ap.add_argument("--keep", type=Path, help="keep the crops and runs in this folder")
    args = ap.parse_args()

    train_u8, test_u8 = photo_crops(args.size, args.train, args.test)
    t = time.perf_counter()
    pca_psnr, pca_ssim, pca_mse = pca_scores(train_u8, test_u8, args.latent_dim)
    pca_s = time.perf_counter() - t
    print(f"# {len(train_u8)} train / {len(test_u8)} test crops of {args.size}² from {len(PHOTOS)} bundled "
          f"photos; budget {args.budget:.0f} s per family; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    if args.model_opt or args.train_opt:
        print(f"# options: {' '.join(args.model_opt + args.train_opt)}")
    rows = [{"family": f"pca-{args.latent_dim}", "params": args.latent_dim * (args.size ** 2 * 3 + 1), "steps": None,
             "seconds": pca_s, "psnr": pca_psnr, "ssim": pca_ssim, "mse": pca_mse}]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        write_pngs(train_u8, work / "train")
        write_pngs(test_u8, work / "test")
        for family in args.families.split(","):
            rows.append(train_family(family, work / "train", work / "test", work / "runs", args))

    print("| family | code size | params | steps | train time | test PSNR | test SSIM | PSNR of mean MSE | "
          "PCA-k PSNR | Δ dB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        steps = "" if r["steps"] is None else str(r["steps"])
        print(f"| {r['family']} | {args.latent_dim} | {r['params']:,} | {steps} | {r['seconds']:.0f} s | "
              f"{r['psnr']:.2f} dB | {r['ssim']:.4f} | {-10 * np.log10(r['mse']):.2f} dB | {pca_psnr:.2f} dB | "
              f"{r['psnr'] - pca_psnr:+.2f} |")


if __name__ == "__main__":
    main()
