"""The data-source registry: one declaration per source gives its spelling, its identity, the size and
channels training defaults to, and its images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aecli.data import natural_format, open_source, registry
from aecli.data.catalog import Catalog, array_fill
from aecli.data.identity import source_key
from aecli.data.registry import DataSource, register_source
from aecli.data.sources import native_size
from aecli.errors import UsageError

README = Path(__file__).resolve().parents[1] / "README.md"


def checker_catalogs(key: str, data_root: str | None, download: bool) -> tuple[Catalog, None]:
    """A toy source: N checkerboards of period 1, 2, 3, … px, labelled by parity of the period."""
    import torch

    n = int(key.partition(":")[2])

    def rows(idx: np.ndarray) -> torch.Tensor:
        yy, xx = np.mgrid[:6, :6]
        boards = [(((yy // (i + 1)) + (xx // (i + 1))) % 2 * 255).astype(np.uint8) for i in idx]
        return torch.from_numpy(np.stack(boards)[:, None])

    return Catalog(f"checkers ({n})", f"checker:{n}", [f"checker:{i}" for i in range(n)],
                   np.arange(n, dtype=np.int64) % 2, ["even", "odd"], array_fill(rows), "checker"), None


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))


def test_a_new_source_is_one_registration(scratch_registry: None) -> None:
    register_source(DataSource("checker", 6, 1, f"{__name__}:checker_catalogs", native=6, counted=(10, 50)))
    assert source_key("Checker") == "checker:10" and source_key("checker:7") == "checker:7"
    assert natural_format("checker:7") == (6, 1) and native_size("checker") == 6
    data = open_source("checker:7", image_size=6, channels=1, split="all")
    assert len(data) == 7 and data.labels.tolist() == [0, 1, 0, 1, 0, 1, 0]
    period2 = data.images[1, 0].numpy()  # rows 0-1 start dark, rows 2-3 light, …
    assert period2[0].tolist() == [0, 0, 255, 255, 0, 0] and period2[2].tolist() == [255, 255, 0, 0, 255, 255]
    with pytest.raises(UsageError, match="checker:51 is more than the 50 checker"):
        source_key("checker:51")
    with pytest.raises(ValueError, match="registered twice"):
        register_source(DataSource("checker", 6, 1, f"{__name__}:checker_catalogs"))
    with pytest.raises(ValueError, match="registered twice"):
        register_source(DataSource("other", 6, 1, f"{__name__}:checker_catalogs", aliases=("cifar-10",)))


@pytest.mark.parametrize("spelling, expected", [
    ("digits", (32, 1)), (" DIGITS ", (32, 1)), ("shapes:240", (32, 3)), ("mnist", (28, 1)),
    ("Fashion_MNIST", (28, 1)), ("CIFAR-10", (32, 3)), ("celeba", (64, 3)), ("no/such/folder", (64, 3)),
])
def test_natural_format_of_named_sets(spelling: str, expected: tuple[int, int]) -> None:
    assert natural_format(spelling) == expected


def _png(path: Path) -> None:
    Image.new("RGB", (5, 5), (10, 20, 30)).save(path)


def test_natural_format_of_folders_follows_how_they_are_read(tmp_path: Path) -> None:
    """A folder is trained at the size of the kind it is read as: the same majority rule as opening it,
    and the ``quickdraw:``/``images:`` prefixes (the old sniffing gave 64 px RGB to ``quickdraw:DIR``
    and 28 px gray to a folder of PNGs with one stray .npy file)."""
    qd, mixed = tmp_path / "qd", tmp_path / "mixed"
    qd.mkdir(), mixed.mkdir()
    np.save(qd / "cat.npy", np.zeros((3, 784), np.uint8))
    for i in range(3):
        _png(mixed / f"{i}.png")
    np.save(mixed / "latents.npy", np.zeros((3, 784), np.uint8))
    assert natural_format(str(qd)) == natural_format(f"quickdraw:{qd}") == (28, 1)
    assert native_size(str(qd)) == 28
    assert natural_format(str(mixed)) == natural_format(f"images:{qd}") == (64, 3)
    assert native_size(str(mixed)) is None
    with pytest.warns(UserWarning, match="read as an image folder"):
        assert len(open_source(str(mixed), image_size=5, channels=3, split="all")) == 3


def test_the_readme_data_table_names_every_source() -> None:
    section = README.read_text(encoding="utf-8").split("\n## Data\n", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    for source in registry.sources():
        assert f"`{source.name}" in table, source.name
