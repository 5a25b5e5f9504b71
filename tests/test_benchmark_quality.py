"""benchmarks/quality.py runs end to end on a tiny budget (the figures themselves are in BENCHMARKS.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "quality.py"


def test_photo_crops_split_by_region() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import quality
    finally:
        sys.path.pop(0)
    train, test = quality.photo_crops(size=16, n_train=40, n_test=19)
    assert train.shape == (40, 16, 16, 3) and test.shape == (19, 16, 16, 3) and train.dtype == np.uint8
    # No test pixel is a training pixel: in every photo the test crops start right of where training crops end.
    shapes = [img.shape[:2] for img in quality.photos().values()]
    boxes = quality.crop_boxes(shapes, 16, 40, 19)
    for i, (h, w) in enumerate(shapes):
        cut = int(w * (1 - quality.TEST_FRACTION))
        tr = [x for p, y, x in boxes[0] if p == i]
        te = [x for p, y, x in boxes[1] if p == i]
        assert te and max(x + 16 for x in tr or [0]) <= cut <= min(te) and max(te) + 16 <= w
    assert all(0 <= y <= shapes[p][0] - 16 for p, y, _ in boxes[0] + boxes[1])


@pytest.mark.slow
def test_quality_benchmark_runs_on_a_tiny_budget(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--budget", "1", "--train", "40", "--test", "8", "--size", "16",
                          "--latent-dim", "4", "--families", "conv-ae", "-t", "batch_size=8", "--keep", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {m.group(1): m for m in re.finditer(r"^\| (pca-4|conv-ae) \| 4 \| ([\d,]+) \|.*\| ([\d.]+) dB \| ([\d.]+) \| "
                                                r"([\d.]+) dB \| ([\d.]+) dB \| ([+-][\d.]+) \|$", res.stdout, re.M)}
    assert set(rows) == {"pca-4", "conv-ae"}, res.stdout
    pca, ae = rows["pca-4"], rows["conv-ae"]
    assert pca.group(6) == ae.group(6) == pca.group(3)  # every row quotes the same PCA-k reference
    assert float(ae.group(7)) == pytest.approx(float(ae.group(3)) - float(ae.group(6)), abs=0.011)
    for row in (pca, ae):  # Jensen: the mean of per-image PSNRs is at least the PSNR of the mean MSE
        assert float(row.group(3)) >= float(row.group(5)) - 0.005
    # --max-time 1 stops inside the first epoch: the weights at the deadline are the checkpoint scored.
    assert (tmp_path / "runs" / "conv-ae" / "last.safetensors").exists()
    assert re.search(r"^\| conv-ae \| 4 \| [\d,]+ \| [1-9]\d* \|", res.stdout, re.M), res.stdout  # steps taken


@pytest.mark.slow
def test_digit_samples_script_scores_real_digits_above_noise(tmp_path: Path, one_thread: None) -> None:
    from aecli.training import TrainConfig, train

    train(TrainConfig(family="conv-vae", data="digits", max_steps=1, batch_size=16, out=str(tmp_path / "run"),
                      model={"latent_dim": 4}, workers=1))
    script = SCRIPT.parent / "digit_samples.py"
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "run" / "last.safetensors"), "--n", "40"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    acc = float(re.search(r"validation accuracy ([\d.]+)", res.stdout).group(1))
    assert acc > 0.9  # the classifier knows real digits
    rows = {m.group(1): [float(v) for v in m.groups()[2:]] for m in re.finditer(
        r"^\| (validation digits|conv-vae prior samples|PCA-4 Gaussian samples) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| "
        r"([\d.]+) \|$", res.stdout, re.M)}
    assert set(rows) == {"validation digits", "conv-vae prior samples", "PCA-4 Gaussian samples"}, res.stdout
    assert rows["validation digits"][1] > 0.8 and all(0.1 <= r[1] <= 1 and 0 <= r[0] <= 1 for r in rows.values())
