"""Figures that read on their own: labelled grids with readable tiles, loss curves of losses only with
a log axis where a component spans decades, PCA axes that say what they carry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aecli.images import PAD, grid_layout, grid_shape, save_grid, tile_size_for
from aecli.training.logs import MetricsLog, loss_components, plot_loss_curves, use_log_scale
from aecli.training.rundir import RunDir


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).astype(int)


@pytest.mark.parametrize("n", range(1, 101))
def test_grid_shape_fills_every_cell_and_is_the_squarest(n: int) -> None:
    rows, cols = grid_shape(n)
    assert rows * cols == n and rows <= cols
    # No exact layout is squarer: every divisor between rows and sqrt(n) would have been chosen.
    assert not [r for r in range(rows + 1, int(n**0.5) + 1) if n % r == 0]


def test_grid_shape_with_asked_columns_may_leave_the_last_row_short() -> None:
    assert grid_shape(10, 4) == (3, 4) and grid_shape(8, 8) == (1, 8) and grid_shape(6) == (2, 3)
    assert grid_shape(7) == (1, 7) and grid_shape(64) == (8, 8) and grid_shape(12) == (3, 4)


def test_small_tiles_are_enlarged_by_a_whole_factor() -> None:
    assert [tile_size_for(s) for s in (8, 28, 32, 64, 65, 256)] == [96, 112, 96, 128, 65, 256]
    assert tile_size_for(32, 40) == 40


def test_labelled_grid_pixels(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 8, 8, generator=g)
    rows = ["ground truth", "run-a/best.safetensors"]
    save_grid(images, tmp_path / "g.png", 3, row_labels=rows, column_labels=["x", "y\nt=1", "z"], title="T")
    grid = _png(tmp_path / "g.png")
    lay = grid_layout(6, 8, 3, row_labels=rows, column_labels=["x", "y\nt=1", "z"], title="T")
    assert grid.shape == (lay.height, lay.width) and lay.tile == 96 and lay.left > 0
    assert lay.top == 3 * lay.line + PAD  # the title, then the two-line column label
    expected = (images * 255).round().to(torch.uint8).numpy()
    for i in range(6):
        x, y = lay.tile_xy(*divmod(i, 3))
        tile = grid[y : y + 96, x : x + 96]
        # Nearest-neighbour enlargement: every 12×12 block is one original pixel.
        assert np.array_equal(tile, np.kron(expected[i, 0], np.ones((12, 12), dtype=int)))
    # The labels are drawn: dark pixels in the left margin beside each row, and above the tiles.
    for r in range(2):
        y = lay.tile_xy(r, 0)[1]
        assert grid[y : y + 96, : lay.left - PAD].min() < 100
    assert grid[: lay.top - PAD, lay.left :].min() < 100
    # Without labels there is no margin at all; --tile-size scales (here down to 5 px, nearest).
    save_grid(images, tmp_path / "plain.png", tile_size=5)
    assert _png(tmp_path / "plain.png").shape == (2 * 7 + PAD, 3 * 7 + PAD)


def test_grid_of_colour_images_is_rgb_and_large_images_keep_their_size(tmp_path: Path) -> None:
    save_grid(torch.rand(2, 3, 80, 80), tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as img:
        assert img.mode == "RGB" and img.size == (2 * 82 + PAD, 82 + PAD)


def _rows(kl: list[float]) -> list[dict]:
    rows = []
    for e, k in enumerate(kl, start=1):
        for split, recon in (("train", 0.5 / e), ("val", 0.6 / e)):
            rows.append({"kind": "epoch", "epoch": e, "step": 25 * e, "lr": 1e-3, "images": 1600, "elapsed_s": 1.0,
                         "split": split, "recon": recon, "kl": k, "kl_weight": 1.0, "loss": recon + k})
    rows.append({"kind": "step", "split": "train", "epoch": 1, "step": 10, "loss": 9.0, "images_per_s": 100.0})
    return rows


def test_loss_curves_show_losses_only_with_log_axes_where_values_span_decades() -> None:
    rows = _rows([100.0, 1.0, 0.1])
    assert loss_components(rows) == ["loss", "recon", "kl"]
    fig = plot_loss_curves(rows, title="loss curves: run")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in axes]
    assert titles == ["loss (total)", "recon", "kl"]  # no "images", "lr", "kl_weight" panels
    scales = {ax.get_title(): ax.get_yscale() for ax in axes}
    assert scales == {"loss (total)": "log", "recon": "linear", "kl": "log"}  # kl spans 1000×, recon 3×
    assert all(ax.get_xlabel() == "epoch" for ax in axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["train", "validation"]
    kl = next(ax for ax in axes if ax.get_title() == "kl")
    assert [list(line.get_ydata()) for line in kl.get_lines()] == [[100.0, 1.0, 0.1]] * 2
    assert "25 steps per epoch" in fig._suptitle.get_text()


def test_log_scale_rule() -> None:
    assert use_log_scale([1.0, 0.03]) and not use_log_scale([1.0, 0.05])
    assert not use_log_scale([10.0, -1.0, 0.001])  # a value ≤ 0 cannot go on a log axis (flow log-det)


def test_metrics_log_writes_the_figure(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    for row in _rows([3.0, 2.0]):
        log.add(row)
    log.plot(force=True)
    with Image.open(RunDir(tmp_path).loss_curves) as img:
        assert img.format == "PNG" and img.size[0] > 900


def test_pca_view_names_its_axes_with_the_explained_variance() -> None:
    from aecli.analysis.project import project

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)) * np.array([5.0, 2.0, 1.0, 0.5, 0.5, 0.1])
    proj = project(x, "pca")
    centred = x - x.mean(0)
    var = np.linalg.svd(centred, compute_uv=False) ** 2  # independent of scikit-learn's PCA
    share = var / var.sum()
    np.testing.assert_allclose(proj.explained, share[:2], rtol=1e-5)
    xlabel, ylabel = proj.axis_labels()
    assert xlabel == f"PC1 ({100 * share[0]:.1f} % of latent variance)" and ylabel.startswith("PC2 (")
    assert project(x[:, :1], "pca").axis_labels()[1] == "PC2 (0.0 % of latent variance)"  # a 1-D latent
