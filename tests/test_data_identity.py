"""aecli.data.identity: sources are the same data by resolved identity, not by spelling (issue 14
point 3), and the validation split follows the data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aecli.data import open_for, open_source
from aecli.data.identity import check_recorded_source, resolved_path, same_source, source_key
from aecli.data.spec import DataSpec
from aecli.errors import DataError, UsageError


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "ffhq"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


def test_spellings_of_one_folder_are_one_source(folder: Path, tmp_path: Path, monkeypatch) -> None:
    os.symlink(folder, tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    spellings = [str(folder), str(folder) + "/", "ffhq", "./ffhq/", "link", str(tmp_path / "link") + "/",
                 str(folder / ".." / "ffhq")]
    assert {source_key(s) for s in spellings} == {"path:" + os.path.realpath(folder)}
    assert resolved_path("ffhq/") == os.path.realpath(folder)
    (tmp_path / "copy").mkdir()
    assert not same_source("ffhq", "copy") and not same_source(None, None)


def test_spellings_of_named_sets() -> None:
    assert source_key("shapes") == source_key("shapes:2048") == "shapes:2048"
    assert source_key("CIFAR-10") == source_key("cifar10") == "cifar10"
    assert source_key(" Digits ") == "digits" and source_key(["a.png", "b.png"]) is None
    assert not same_source("shapes:64", "shapes:65")


def test_the_val_split_follows_the_data_not_its_spelling(folder: Path, tmp_path: Path, monkeypatch) -> None:
    """A run trained with `--data /abs/ffhq --val-count 8` is scored on exactly its first 8 images by
    `/abs/ffhq/`, a relative spelling and a symlink, never on a pseudo-random 10 % (which held 2 images,
    one of them a training image)."""
    spec = DataSpec(8, 1, source=str(folder), source_path=resolved_path(str(folder)), val_count=8)
    os.symlink(folder, tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    first8 = [f"{i:02d}.png" for i in range(8)]
    for spelling in (str(folder) + "/", "ffhq", "link/", None):
        data = open_for(spec, spelling, split="val")
        assert data.names == first8, spelling
        assert data.provenance.same_as_training and data.provenance.rule.startswith("the first 8 images")
    # The split a spelling-compared run would have used instead: 2 pseudo-random images, not these 8.
    assert len(open_source(str(folder) + "/", image_size=8, channels=1, split="val")) == 2


def test_a_run_trained_with_a_relative_path_is_found_from_elsewhere(folder: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = DataSpec(8, 1, source="ffhq", source_path=resolved_path("ffhq"), val_count=4)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # "ffhq" is not here
    data = open_for(spec, None, split="val")
    assert len(data) == 4 and data.provenance.source == str(folder.resolve())
    # An old checkpoint without source_path: the relative spelling is resolved here, and not found.
    with pytest.raises(DataError, match="no --data: this is the training data recorded in"):
        open_for(DataSpec(8, 1, source="ffhq"), None, checkpoint="old.safetensors")


@pytest.mark.parametrize("source, error", [
    ("", UsageError), (7, UsageError), ("/", DataError), ("/sys/kernel", DataError), ("/dev/zero", DataError),
    ("x" * 5000, DataError), ("a\nb", DataError), ("shapes:0", DataError), ("shapes:2000000", DataError),
])
def test_recorded_sources_are_checked(source, error) -> None:
    with pytest.raises(error):
        check_recorded_source(source, "c.safetensors")


def test_plausible_recorded_sources_pass(tmp_path: Path) -> None:
    for source in ("digits", "shapes:1000000", "mnist", str(tmp_path), "relative/folder"):
        assert check_recorded_source(source, "c.safetensors") == source
