#!/usr/bin/env bash
# Regenerates the README gallery from the embedded data (offline, a few minutes on a CPU):
#   bash docs/gallery/make_gallery.sh
# Writes small PNGs into docs/gallery/ (the run folders go to a temp dir and are deleted).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=docs/gallery
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

aecli train conv-ae --data digits --epochs 15 --out "$WORK/ae" --log-every 1000
aecli train conv-vae --data digits --epochs 15 --beta 0.5 --reduction sum --recon bce --out "$WORK/vae" --log-every 1000
aecli train conv-vae --data digits --epochs 15 --beta 0.5 --reduction sum --recon bce --num-classes 10 \
  --out "$WORK/cvae" --log-every 1000

cp "$WORK/vae/loss_curves.png" "$OUT/loss_curves.png"
aecli reconstruct "$WORK/ae/best.safetensors" "$WORK/vae/best.safetensors" --data digits --split val --n 10 \
  --out "$WORK/recon"
cp "$WORK/recon/comparison.png" "$OUT/reconstruct_ae_vs_vae.png"
aecli sample "$WORK/vae/best.safetensors" --n 64 --seed 0 --out "$OUT/samples_vae.png"
aecli sample "$WORK/cvae/best.safetensors" --per-class 8 --seed 0 --out "$OUT/samples_per_class.png"
aecli sample "$WORK/ae/best.safetensors" --n 32 --fit digits --out "$OUT/samples_ae_fit.png"
aecli interpolate "$WORK/vae/best.safetensors" --data digits --from-index 0 --to-index 7 --steps 10 \
  --method slerp --out "$OUT/interpolate_slerp.png"
aecli tsne "$WORK/vae/best.safetensors" --data digits --split all --out "$OUT/tsne_vae.png"
rm -f "$OUT/tsne_vae.csv"

# Vector quantisation: the codebook usage histogram of a VQ-VAE with EMA codebook and dead-code restart.
aecli train vq-vae --data digits --epochs 3 -m widths=32,64 -m codebook_size=64 -m code_dim=8 \
  -m ema_codebook=true -m dead_after=50 --out "$WORK/vq" --log-every 1000
aecli evaluate "$WORK/vq/best.safetensors" --data digits --split all --metrics psnr,codebook \
  --codebook-plots "$WORK/vq"
cp "$WORK/vq/vq_best_codebook.png" "$OUT/codebook_vq_vae.png"
ls -la "$OUT"
