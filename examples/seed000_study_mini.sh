#!/usr/bin/env bash
# The seed 000 study (FFHQ 256², 17 runs: A1–A4, B1, B2.1–B2.4, C1–C5, D1–D3) in miniature: every
# examples/seed000_*.toml recipe trained on the embedded `shapes` images at 32 px with tiny widths (-m),
# then ONE `aecli evaluate` comparing all checkpoints in a single table (+ CSV/JSON), a reconstruction
# comparison, prior samples and a t-SNE. Offline; a few minutes on a laptop CPU.
# The LPIPS runs (B2.2–B2.4, C5, D2) need the AlexNet file; without it they are skipped with a note
# (fetch it once where internet exists: aecli weights download --metrics lpips).
# Usage: bash examples/seed000_study_mini.sh        (OUT=dir EPOCHS=n to change)
set -euo pipefail
OUT=${OUT:-runs/examples}
EX=$(dirname "$0")
RUN=$OUT/seed000_study_mini
EPOCHS=${EPOCHS:-2}
DATA=shapes:240  # the first 24 are validation (the recipes' val_count 1000, scaled down)

if aecli weights check --metrics lpips >/dev/null 2>&1; then
  LPIPS=1; METRICS=l1,psnr,ssim,lpips,kl
else
  LPIPS=0; METRICS=l1,psnr,ssim,kl
  echo "note: LPIPS weights not found: skipping B2.2-B2.4, C5 and D2, and the lpips metric"
fi

study() {  # study ID [-m KEY=VALUE ...]: examples/seed000_ID_*.toml, miniature; --resume auto makes reruns cheap
  local id=$1 toml name
  shift
  toml=$(ls "$EX"/seed000_"$id"_*.toml)
  name=$(basename "$toml" .toml)
  aecli train --config "$toml" --data "$DATA" --image-size 32 --val-count 24 --epochs "$EPOCHS" \
    --batch-size 16 --log-every 100 --out "$RUN/${name#seed000_}" --resume auto "$@"
}
lpips_study() { if [ "$LPIPS" = 1 ]; then study "$@"; fi; }

# Part A: skip autoencoders (base 32 → 8, wide 48 → 12)
study A1 -m base_channels=8 -m latent_dim=64
study A2 -m base_channels=8 -m latent_dim=64
study A3 -m base_channels=8 -m latent_dim=64
study A4 -m base_channels=12 -m latent_dim=64
# Part B: ResNet AE and the LPIPS-weight ablation (5 stages kept, widths ÷8)
RESNET=(-m widths=8,16,32,32,64 -m latent_dim=64)
study B1 "${RESNET[@]}"
study B2.1 "${RESNET[@]}"
lpips_study B2.2 "${RESNET[@]}"
lpips_study B2.3 "${RESNET[@]}"
lpips_study B2.4 "${RESNET[@]}"
# Part C: conv VAEs, the β sweep, wide, + LPIPS (4 layers kept, widths ÷4)
study C1 -m widths=8,16,32,64 -m latent_dim=64
study C2 -m widths=8,16,32,64 -m latent_dim=64
study C3 -m widths=8,16,32,64 -m latent_dim=64
study C4 -m widths=16,32,64,128 -m latent_dim=64
lpips_study C5 -m widths=8,16,32,64 -m latent_dim=64
# Part D: deep ResNet VAE, + LPIPS, attention AE (2 heads: 8-channel maps cannot feed 8 heads usefully)
study D1 "${RESNET[@]}"
lpips_study D2 "${RESNET[@]}"
study D3 "${RESNET[@]}" -m heads=2

# One table for the whole study: one row per checkpoint, one pass each over the validation images.
# The recipes' split is "the first N images" (val_count), so score exactly those: --split all --n 24.
aecli evaluate "$RUN"/*/best.safetensors --metrics "$METRICS" --data "$DATA" --split all --n 24 \
  --csv-out "$RUN/study.csv" --json-out "$RUN/study.json"
# Ground truth, then one row per family's baseline.
aecli reconstruct "$RUN/A1_skip_convae_depth10/best.safetensors" "$RUN/B1_resnet_ae/best.safetensors" \
  "$RUN/C1_vae_beta_small/best.safetensors" "$RUN/D1_deep_resnet_vae/best.safetensors" \
  --data "$DATA" --split all --n 8 --out "$RUN/reconstruct"
# The VAEs have a prior; the β sweep shows in the samples.
for vae in C1_vae_beta_small C3_vae_beta_large D1_deep_resnet_vae; do
  aecli sample "$RUN/$vae/best.safetensors" --n 16 --seed 0 --out "$RUN/samples_$vae.png"
done
aecli tsne "$RUN/C1_vae_beta_small/best.safetensors" --data "$DATA" --split all --out "$RUN/tsne_C1.png" \
  --json-out "$RUN/tsne_C1.json"
echo "study table: $RUN/study.csv; pictures under $RUN"
