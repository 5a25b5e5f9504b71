#!/usr/bin/env bash
# Seed 004 in miniature on the embedded 28×28 `digits` (offline stand-in for MNIST and QuickDraw):
# the LSTM AE and the CNN AE (examples/seed004_lstm_ae.toml, seed004_cnn_ae.toml) compared by their
# t-SNE pictures and k-NN accuracy; then the GRU-VAE, CNN-VAE and conditional VAE of the QuickDraw
# recipes (BCE, summed per image) with BCE and KLD logged apart and per-class samples.
# A few minutes on a laptop CPU.
# Usage: bash examples/seed004_digits_tsne.sh        (OUT=dir EPOCHS=n to change)
set -euo pipefail
OUT=${OUT:-runs/examples}
EX=$(dirname "$0")
RUN=$OUT/seed004_digits_tsne
EPOCHS=${EPOCHS:-8}
COMMON=(--data digits --epochs "$EPOCHS" --batch-size 64 --log-every 100 --resume auto)

# Autoencoders: the seed's batch 256 is most of the 1,617 training digits, so batch 64 here.
for model in lstm_ae cnn_ae; do
  aecli train --config "$EX/seed004_$model.toml" "${COMMON[@]}" --out "$RUN/$model"
done
aecli evaluate "$RUN/lstm_ae/best.safetensors" "$RUN/cnn_ae/best.safetensors" --metrics mse,psnr,ssim \
  --split val --csv-out "$RUN/autoencoders.csv"
aecli reconstruct "$RUN/lstm_ae/best.safetensors" "$RUN/cnn_ae/best.safetensors" --data digits --split val \
  --n 10 --out "$RUN/reconstruct"
aecli sample "$RUN/cnn_ae/best.safetensors" --fit digits --n 36 --out "$RUN/cnn_ae_fitted_samples.png"
for model in lstm_ae cnn_ae; do  # "the whole dataset through the trained AE", coloured by digit
  aecli tsne "$RUN/$model/best.safetensors" --data digits --split all --out "$RUN/tsne_$model.png" \
    --json-out "$RUN/tsne_$model.json"
done

# VAEs: digits (10 classes) instead of the QuickDraw folder, so the conditional VAE gets --num-classes 10.
aecli train --config "$EX/seed004_quickdraw_gru_vae.toml" "${COMMON[@]}" --out "$RUN/gru_vae"
aecli train --config "$EX/seed004_quickdraw_cnn_vae.toml" "${COMMON[@]}" --out "$RUN/cnn_vae"
aecli train --config "$EX/seed004_quickdraw_cvae.toml" "${COMMON[@]}" --num-classes 10 --out "$RUN/cvae"
aecli evaluate "$RUN/gru_vae/best.safetensors" "$RUN/cnn_vae/best.safetensors" "$RUN/cvae/best.safetensors" \
  --metrics mse,psnr,kl --split val --csv-out "$RUN/vaes.csv"
aecli sample "$RUN/cnn_vae/best.safetensors" --n 36 --out "$RUN/cnn_vae_samples.png"
aecli sample "$RUN/cvae/best.safetensors" --per-class 8 --out "$RUN/cvae_per_class.png"
aecli tsne "$RUN/cnn_vae/best.safetensors" --data digits --split all --out "$RUN/tsne_cnn_vae.png"
echo "t-SNE: $RUN/tsne_*.png (k-NN accuracy and silhouette in tsne_*.json); VAE samples: $RUN/*samples*.png"
