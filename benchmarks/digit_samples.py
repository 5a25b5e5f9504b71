"""Are a digits VAE's prior samples recognisable? A classifier trained on real digits scores them.

    python benchmarks/digit_samples.py RUN/best.safetensors [--n 1000] [--seed 0]

A multinomial logistic regression (scikit-learn, independent of aecli's own classifier) is fitted on the
checkpoint's training split of its data (the embedded digits, at the checkpoint's size) and scores three
sets: the held-out validation digits; N prior samples of the checkpoint; N draws from the Gaussian that
PCA-k fits to the training digits (k = the code size: the linear model's samples, the reference a VAE
should beat). Per set: the share classified with probability >= 0.9, the mean top probability, and the
share of the most frequent class (a sampler that draws one shape only is not recognisable either).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def scores(clf, x: np.ndarray) -> tuple[float, float, float]:  # noqa: ANN001 - scikit-learn estimator
    prob = clf.predict_proba(x.reshape(len(x), -1))
    top = prob.max(1)
    counts = np.bincount(prob.argmax(1), minlength=prob.shape[1])
    return float((top >= 0.9).mean()), float(top.mean()), float(counts.max() / len(x))


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from aecli.checkpoint import load_model
    from aecli.data import open_for
    from aecli.metrics.baseline import PCA

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--n", type=int, default=1000, help="samples per sampler")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    loaded = load_model(args.checkpoint)
    model, spec = loaded.model.eval(), loaded.data
    train, val = (open_for(spec, None, checkpoint=args.checkpoint, split=s) for s in ("train", "val"))
    unit = lambda u8: u8.float().numpy() / 255  # noqa: E731 - [0, 1] pixels, what the classifier sees
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(unit(train.tensor()).reshape(len(train), -1),
                                                       train.labels.numpy())

    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        vae = spec.to_unit_range(model.sample(args.n, generator=gen)).clamp(0, 1).numpy()
    k = int(np.prod(model.latent_shape))
    flat = torch.from_numpy(unit(train.tensor())).flatten(1)
    pca = PCA.fit(flat, k, device=torch.device("cpu"))
    codes = pca.encode(flat)
    draws = torch.randn(args.n, k, generator=gen) * codes.std(0) + codes.mean(0)
    linear = pca.decode(draws).clamp(0, 1).numpy()

    print(f"# {args.checkpoint}: {model.family}, code size {k}; classifier fitted on {len(train)} training "
          f"images (validation accuracy {clf.score(unit(val.tensor()).reshape(len(val), -1), val.labels.numpy()):.3f})")
    print("| images | N | share with p ≥ 0.9 | mean top probability | most frequent class share |")
    print("|---|---|---|---|---|")
    for name, x in (("validation digits", unit(val.tensor())), (f"{model.family} prior samples", vae),
                    (f"PCA-{k} Gaussian samples", linear)):
        sure, top, mode = scores(clf, x)
        print(f"| {name} | {len(x)} | {sure:.3f} | {top:.3f} | {mode:.3f} |")


if __name__ == "__main__":
    main()
