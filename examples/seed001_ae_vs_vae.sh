#!/usr/bin/env bash
# Seed 001 in miniature: the Mish conv AE and VAE (Kaiming init, Adam betas 0.5/0.999, plateau scheduler,
# spatial latent) from examples/seed001_*.toml, at 32 px on the embedded `shapes` images with 3 stages
# instead of 5, then Q3's ground truth / AE / VAE comparison and Q5's PSNR/SSIM(/LPIPS) table.
# Offline; a few minutes on a laptop CPU.
# Usage: bash examples/seed001_ae_vs_vae.sh        (OUT=dir EPOCHS=n to change)
set -euo pipefail
OUT=${OUT:-runs/examples}
EX=$(dirname "$0")
RUN=$OUT/seed001_ae_vs_vae
EPOCHS=${EPOCHS:-4}
DATA=shapes:480
METRICS=psnr,ssim,kl
if aecli weights check --metrics lpips >/dev/null 2>&1; then METRICS=psnr,ssim,lpips,kl; fi

# 3 stride-2 stages at 32 px give a 4×4 code (the seed: 5 stages at 256 px, 8×8). lr 2e-3 instead of
# the seed's 1e-4: a few epochs need larger steps than its 1,000.
for model in ae vae; do
  aecli train --config "$EX/seed001_mish_conv_$model.toml" --data "$DATA" --image-size 32 \
    --epochs "$EPOCHS" --batch-size 16 --lr 2e-3 -m widths=16,32,64 -m latent_dim=16 \
    --log-every 100 --out "$RUN/$model" --resume auto
done

aecli evaluate "$RUN/ae/best.safetensors" "$RUN/vae/best.safetensors" --metrics "$METRICS" --split val \
  --csv-out "$RUN/q5_metrics.csv"
aecli reconstruct "$RUN/ae/best.safetensors" "$RUN/vae/best.safetensors" --data "$DATA" --split val \
  --n 10 --random --seed 0 --out "$RUN/q3"
aecli sample "$RUN/vae/best.safetensors" --n 16 --out "$RUN/vae_samples.png"
aecli sample "$RUN/ae/best.safetensors" --fit "$DATA" --n 16 --out "$RUN/ae_fitted_samples.png"
aecli interpolate "$RUN/vae/best.safetensors" --data "$DATA" --from-index 0 --to-index 1 --steps 8 \
  --method slerp --out "$RUN/vae_walk.png"
for model in ae vae; do
  aecli tsne "$RUN/$model/best.safetensors" --data "$DATA" --split all --out "$RUN/tsne_$model.png" \
    --json-out "$RUN/tsne_$model.json"
done
echo "Q3 grid: $RUN/q3/comparison.png; Q5 table: $RUN/q5_metrics.csv"
