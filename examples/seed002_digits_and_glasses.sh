#!/usr/bin/env bash
# Seed 002 in miniature, offline: §1 the 784-200-20 MLP autoencoder (examples/seed002_mnist_mlp_ae.toml)
# on the embedded 28×28 `digits`, fully evaluated (incl. latent statistics as in §2.3); §3 the "glasses"
# VAE (examples/seed002_glasses_vae.toml) at 32 px on `shapes`, then its encoding arithmetic with shape
# classes standing in for "glasses" / "no glasses": the attribute vector star − circle added to circles.
# A few minutes on a laptop CPU.
# Usage: bash examples/seed002_digits_and_glasses.sh     (OUT=dir PYTHON=python-with-aecli to change)
set -euo pipefail
OUT=${OUT:-runs/examples}
EX=$(dirname "$0")
RUN=$OUT/seed002_digits_and_glasses
PYTHON=${PYTHON:-python3}

# §1: the seed's own settings (lr 0.00025, batch 32, summed MSE, 10 epochs), digits instead of MNIST.
aecli train --config "$EX/seed002_mnist_mlp_ae.toml" --data digits --log-every 100 --out "$RUN/mlp_ae" \
  --resume auto
aecli evaluate "$RUN/mlp_ae/best.safetensors" --metrics mse,psnr,ssim,latent --json-out "$RUN/mlp_ae_eval.json"
aecli reconstruct "$RUN/mlp_ae/best.safetensors" --data digits --split val --n 10 --out "$RUN/mlp_ae_recon"
aecli sample "$RUN/mlp_ae/best.safetensors" --fit digits --n 36 --out "$RUN/mlp_ae_fitted_samples.png"
aecli tsne "$RUN/mlp_ae/best.safetensors" --data digits --split all --out "$RUN/mlp_ae_tsne.png" \
  --json-out "$RUN/mlp_ae_tsne.json"

# §3: the glasses VAE (its widths 8/16/32 and latent 100 kept) at 32 px; 8 epochs at lr 1e-3 instead of
# the seed's 1e-4, which needs many more steps than this miniature has.
aecli train --config "$EX/seed002_glasses_vae.toml" --data shapes:480 --image-size 32 --epochs 8 --lr 1e-3 \
  --log-every 100 --out "$RUN/glasses_vae" --resume auto
aecli evaluate "$RUN/glasses_vae/best.safetensors" --metrics mse,psnr,ssim,kl --split val
aecli sample "$RUN/glasses_vae/best.safetensors" --n 18 --grid-columns 6 --out "$RUN/glasses_vae_samples.png"

# Encoding arithmetic needs attribute folders: write the shapes as PNGs, one folder per class.
"$PYTHON" - "$RUN/shapes_by_class" <<'PY'
import sys
from pathlib import Path

from PIL import Image

from aecli.data import open_source

data = open_source("shapes:480", image_size=32, channels=3, split="all")
root = Path(sys.argv[1])
for i in range(len(data)):
    image, label = data.images[i], int(data.labels[i])
    folder = root / data.class_names[label]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
PY
S=$RUN/shapes_by_class
aecli tsne "$RUN/glasses_vae/best.safetensors" --data "$S" --out "$RUN/glasses_vae_tsne.png" --split all
aecli arithmetic "$RUN/glasses_vae/best.safetensors" --plus "$S/star" --minus "$S/circle" --apply "$S/circle" \
  --n 6 --scale 0,0.5,1,1.5 --out "$RUN/arithmetic_circle_plus_star.png" --save-vector "$RUN/star_vector.safetensors"
aecli arithmetic "$RUN/glasses_vae/best.safetensors" --expr "$S/star - $S/circle + $S/square" \
  --out "$RUN/arithmetic_expr.png"
echo "arithmetic grids: $RUN/arithmetic_*.png"
