#!/usr/bin/env bash
# Seed 003 in miniature: the conv AE, the VAE and the planar-flow VAE (KL warm-up + free bits, and the
# cyclical variant) and the fully connected GAN from examples/seed003_*.toml, on the embedded `shapes`
# images at 32 px instead of CIFAR-10. Then one table for AE / VAE / flow VAE, reconstructions side by
# side, samples of every generative model and the t-SNE of both VAE latent spaces.
# Offline; a few minutes on a laptop CPU.
# Usage: bash examples/seed003_generative.sh        (OUT=dir EPOCHS=n to change)
set -euo pipefail
OUT=${OUT:-runs/examples}
EX=$(dirname "$0")
RUN=$OUT/seed003_generative
EPOCHS=${EPOCHS:-4}
DATA=shapes:480
COMMON=(--data "$DATA" --epochs "$EPOCHS" --log-every 100 --resume auto)

aecli train --config "$EX/seed003_conv_ae.toml" "${COMMON[@]}" --batch-size 32 --out "$RUN/ae"
# The seed warms the KL weight up over 10,000 steps; this run has ~50, so the warm-up is scaled to 40.
aecli train --config "$EX/seed003_vae.toml" "${COMMON[@]}" --batch-size 32 --kl-warmup-steps 40 --out "$RUN/vae"
aecli train --config "$EX/seed003_flow_vae.toml" "${COMMON[@]}" --batch-size 32 --kl-warmup-steps 40 \
  --out "$RUN/flow_vae"
aecli train --config "$EX/seed003_flow_vae_cyclical.toml" "${COMMON[@]}" --batch-size 32 \
  --out "$RUN/flow_vae_cyclical"
# The GAN's layer widths ÷4 (its image → 1024 → … discriminator is most of a CPU minute otherwise).
aecli train --config "$EX/seed003_gan.toml" "${COMMON[@]}" -m g_hidden=64,128,256 -m d_hidden=256,128,64 \
  --out "$RUN/gan"

aecli evaluate "$RUN/ae/best.safetensors" "$RUN/vae/best.safetensors" "$RUN/flow_vae/best.safetensors" \
  "$RUN/flow_vae_cyclical/best.safetensors" --metrics mse,psnr,ssim,kl --split val --csv-out "$RUN/ae_vae_flows.csv"
aecli reconstruct "$RUN/ae/best.safetensors" "$RUN/vae/best.safetensors" "$RUN/flow_vae/best.safetensors" \
  --data "$DATA" --split val --n 8 --out "$RUN/reconstruct"
for model in vae flow_vae flow_vae_cyclical gan; do
  aecli sample "$RUN/$model/last.safetensors" --n 16 --seed 0 --out "$RUN/samples_$model.png"
done
aecli interpolate "$RUN/gan/last.safetensors" --steps 8 --method slerp --out "$RUN/gan_walk.png"
for model in vae flow_vae; do
  aecli tsne "$RUN/$model/best.safetensors" --data "$DATA" --split all --out "$RUN/tsne_$model.png" \
    --json-out "$RUN/tsne_$model.json"
done
echo "tables and pictures under $RUN"
