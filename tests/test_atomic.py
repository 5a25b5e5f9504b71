"""aecli.atomic's one stale-temp cleanup and aecli.images' one uint8 quantisation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from aecli.atomic import atomic_path, remove_stale_temps, temp_target
from aecli.images import to_uint8


def _left_behind(folder: Path, target: str) -> Path:
    """The temp file a write of ``folder/target`` killed before its os.replace leaves: made the way
    atomic_path makes it (mkstemp beside the target)."""
    fd, name = tempfile.mkstemp(prefix=f".{target}.", suffix=".tmp", dir=folder)
    os.close(fd)
    Path(name).write_bytes(b"half a file")
    return Path(name)


def test_temp_target_reads_the_names_atomic_path_writes(tmp_path: Path) -> None:
    seen = []
    with atomic_path(tmp_path / "best.safetensors") as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"x")
    assert temp_target(seen[0]) == "best.safetensors"
    assert temp_target(_left_behind(tmp_path, "sample_000001.png").name) == "sample_000001.png"
    for other in ("best.safetensors", ".cache.tmp", "x.abcdefgh.tmp", ".x.a-b.tmp"):
        assert temp_target(other) is None, other


def test_remove_stale_temps_deletes_only_owned_temp_files(tmp_path: Path) -> None:
    sub = tmp_path / "cat"
    sub.mkdir()
    ours = [_left_behind(tmp_path, "sample_000000.png"), _left_behind(sub, "sample_0003.png")]
    kept = [_left_behind(tmp_path, "notes.txt"), tmp_path / ".editor.tmp", tmp_path / "sample_000001.png"]
    for p in kept[1:]:
        p.write_bytes(b"keep")
    remove_stale_temps(tmp_path, lambda target: target.startswith("sample_"), recursive=True)
    assert not any(p.exists() for p in ours) and all(p.exists() for p in kept)
    nested = _left_behind(sub, "x.png")
    remove_stale_temps(tmp_path)  # not recursive: the sub-folder is left alone
    assert nested.exists() and not kept[0].exists() and kept[1].exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_to_uint8_clamps_and_rounds_to_nearest(dtype: torch.dtype) -> None:
    x = torch.tensor([[-0.5, 0.0, 1.4 / 255], [0.5, 1.0, 7.0]], dtype=torch.float64)
    got = to_uint8(x.to(dtype))  # 127.5 rounds half to even: 128
    assert got.dtype == torch.uint8 and got.tolist() == [[0, 0, 1], [128, 255, 255]]
