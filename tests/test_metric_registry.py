"""The metric registry: one declaration per metric drives validation, the CLI help, the pretrained-file
check and the one data pass; a new metric is one registered class."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aecli.errors import UsageError
from aecli.metrics import METRICS, registry
from aecli.metrics.evaluate import EvalConfig, columns, evaluate_folders
from aecli.metrics.per_image import PerImageMetric


def test_every_metric_declares_kind_files_help_and_columns() -> None:
    for name in METRICS:
        cls = registry.get_metric(name)
        assert cls.kind in registry.KINDS and cls.help and cls.definition and cls.value_columns()
        assert f"{name} ({cls.help})" in registry.metrics_help()
    assert registry.pretrained_needs(["psnr", "ssim"]) == []
    assert registry.pretrained_needs(["kid", "lpips", "rfid"]) == ["lpips", "inception"]
    inception = [n for n in METRICS if "inception" in registry.get_metric(n).weights]
    assert set(inception) == {"rfid", "fid", "is", "kid"}
    assert ", ".join(inception) in registry.weights_metrics_help()
    with pytest.raises(UsageError, match="unknown metric 'psnrr'"):
        registry.parse_metrics(["psnr", "psnrr"])
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_metric(registry.get_metric("psnr"))


def _write(folder, name, arr):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(folder / name)


def test_a_new_per_image_metric_is_one_registered_class(tmp_path) -> None:
    @registry.register_metric
    class MaxError(PerImageMetric):
        name = "max-err"
        help = "largest absolute error"
        definition = "max |pred - ref| per image on [0,1] images, then mean ± std over images"

        def score(self, pred, ref):
            return (pred - ref).abs().flatten(1).amax(1)

    try:
        rng = np.random.default_rng(0)
        refs = [rng.integers(0, 256, (12, 12), dtype=np.uint8) for _ in range(3)]
        preds = [np.clip(r.astype(int) + rng.integers(-30, 31, r.shape), 0, 255).astype(np.uint8) for r in refs]
        for i, (p, r) in enumerate(zip(preds, refs)):
            _write(tmp_path / "pred", f"{i}.png", p)
            _write(tmp_path / "ref", f"{i}.png", r)
        assert "max-err (largest absolute error)" in registry.metrics_help()
        report = evaluate_folders(str(tmp_path / "pred"), str(tmp_path / "ref"),
                                  EvalConfig(metrics=["max-err", "psnr", "kl"], device="cpu"))
        expected = [np.abs(p.astype(float) - r.astype(float)).max() / 255 for p, r in zip(preds, refs)]
        row = report.rows[0]
        assert row.values["max-err"] == pytest.approx(np.mean(expected), abs=1e-6)
        assert row.values["max-err_std"] == pytest.approx(np.std(expected, ddof=1), abs=1e-6)
        assert columns(report) == ["max-err", "max-err_std", "psnr", "psnr_std", "kl_per_image", "kl_per_image_std"]
        assert report.info["definitions"]["max-err"] == MaxError.definition
        assert row.values["kl_per_image"] is None and row.notes["kl_per_image"] == "n/a: needs a checkpoint"
    finally:
        registry._REGISTRY.pop("max-err")


def test_pretrained_weights_sit_below_metrics_and_losses() -> None:
    """aecli.weights and aecli.pretrained import no metric, loss or command module; metrics import no command."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "aecli"

    def imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    for name in ("weights.py", "pretrained.py"):
        upward = [m for m in imports(root / name) if m.startswith(("aecli.metrics", "aecli.losses", "aecli.commands"))]
        assert upward == [], f"aecli/{name} imports {upward}"
    for path in (root / "metrics").glob("*.py"):
        assert not [m for m in imports(path) if m.startswith("aecli.commands")], path
