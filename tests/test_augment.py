"""--augment: each image gets exactly one of the allowed symmetries, drawn reproducibly per (seed, step, rank)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aecli.data.augment import augment_batch


def _symmetries(img: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of a square C×H×W image, by numpy (independent of aecli's torch code)."""
    out = []
    for flipped in (img, img[:, :, ::-1]):
        out += [np.rot90(flipped, k, axes=(1, 2)) for k in range(4)]
    return out


def _which(img: np.ndarray, candidates: list[np.ndarray]) -> int:
    hits = [i for i, c in enumerate(candidates) if np.array_equal(img, c)]
    assert len(hits) == 1, "every output is exactly one symmetry of its input"
    return hits[0]


def test_none_is_the_identity() -> None:
    x = torch.rand(4, 3, 8, 8)
    assert augment_batch(x, "none", 0, 5) is x


@pytest.mark.parametrize("kind, allowed", [("hflip", {0, 4}), ("dihedral", set(range(8)))])
def test_each_image_gets_one_allowed_symmetry_and_all_of_them_occur(kind: str, allowed: set[int]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 2, 6, 6, generator=g)  # generic values: the 8 symmetries are all different
    out = augment_batch(x, kind, seed=1, step=7)
    used = [_which(o.numpy(), _symmetries(i.numpy())) for i, o in zip(x, out)]
    assert set(used) == allowed
    assert max(used.count(u) for u in allowed) < 256 * 2 / len(allowed)  # roughly uniform, not constant
    assert torch.equal(x, torch.rand(256, 2, 6, 6, generator=torch.Generator().manual_seed(0)))  # input untouched


def test_draws_repeat_for_the_same_seed_step_and_rank_only() -> None:
    x = torch.rand(64, 1, 5, 5)
    same = augment_batch(x, "dihedral", 3, 10)
    assert torch.equal(same, augment_batch(x, "dihedral", 3, 10))
    for other in (augment_batch(x, "dihedral", 4, 10), augment_batch(x, "dihedral", 3, 11),
                  augment_batch(x, "dihedral", 3, 10, rank=1)):
        assert not torch.equal(same, other)


def test_bad_value_is_a_usage_error() -> None:
    from aecli.errors import UsageError
    from aecli.training import TrainConfig

    with pytest.raises(UsageError, match=r"--augment must be one of none, hflip, dihedral"):
        TrainConfig("conv-ae", augment="rot45").validate()
