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
    train, test = quality.photo_crops(size=16, n_train=40, n_test=16)
    assert train.shape == (40, 16, 16, 3) and test.shape == (16, 16, 16, 3) and train.dtype == np.uint8
    # No test crop is also a training crop (they come from disjoint column ranges of every photo).
    assert not {t.tobytes() for t in test} & {t.tobytes() for t in train}


@pytest.mark.slow
def test_quality_benchmark_runs_on_a_tiny_budget(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--budget", "1", "--train", "40", "--test", "8", "--size", "16",
                          "--latent-dim", "4", "--families", "conv-ae", "-t", "batch_size=8", "--keep", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {m.group(1): m for m in re.finditer(r"^\| (pca-4|conv-ae) \| 4 \| ([\d,]+) \|.*\| ([\d.]+) dB \| ([\d.]+) \| "
                                                r"([\d.]+) dB \| ([+-][\d.]+) \|$", res.stdout, re.M)}
    assert set(rows) == {"pca-4", "conv-ae"}, res.stdout
    pca, ae = rows["pca-4"], rows["conv-ae"]
    assert pca.group(5) == ae.group(5) == pca.group(3)  # every row quotes the same PCA-k reference
    assert float(ae.group(6)) == pytest.approx(float(ae.group(3)) - float(ae.group(5)), abs=0.011)
    # --max-time 1 stops inside the first epoch: the weights at the deadline are the checkpoint scored.
    assert (tmp_path / "runs" / "conv-ae" / "last.safetensors").exists()
    assert re.search(r"^\| conv-ae \| 4 \| [\d,]+ \| [1-9]\d* \|", res.stdout, re.M), res.stdout  # steps taken
