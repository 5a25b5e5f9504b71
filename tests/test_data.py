"""aecli.data: sources, decoding edge cases, splits, the cache and the batch loader."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aecli.data import BatchLoader, ImageSet, open_source, to_model_input
from aecli.errors import DataError

RNG = np.random.default_rng(1234)


def _rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- embedded sets -----------------------------------------------------------------------------------

def test_digits_native_size_matches_sklearn_and_splits_cover_everything():
    from sklearn.datasets import load_digits

    ref = load_digits()
    full = open_source("digits", image_size=8, channels=1, split="all")
    assert full.images.shape == (1797, 1, 8, 8) and full.images.dtype == torch.uint8
    expected = np.rint(ref.images * 255.0 / 16.0).astype(np.uint8)
    assert np.array_equal(full.images[:, 0].numpy(), expected)  # independent: sklearn's own array
    assert full.labels.dtype == torch.int64 and np.array_equal(full.labels.numpy(), ref.target)
    assert full.class_names == [str(d) for d in range(10)] and full.names[3] == "digits:3"
    train = open_source("digits", image_size=28, channels=1)
    val = open_source("digits", image_size=28, channels=1, split="val")
    assert len(val) == round(0.1 * 1797) and len(train) + len(val) == 1797  # default val_fraction=0.1
    assert set(train.names).isdisjoint(val.names)
    assert train.images.shape[1:] == (1, 28, 28) and int(train.images.min()) == 0
    assert int(train.images.max()) == 255
    rgb = open_source("digits", image_size=16, channels=3, limit=5)
    assert rgb.images.shape == (5, 3, 16, 16)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])
    assert train.source_id != val.source_id != rgb.source_id


def test_shapes_are_deterministic_labelled_and_sized():
    from aecli.data.builtin import SHAPE_CLASSES, draw_shape

    a = open_source("shapes:24", image_size=20, channels=3, split="all")
    b = open_source("shapes:24", image_size=20, channels=3, split="all", workers=1)
    assert a.images.shape == (24, 3, 20, 20) and torch.equal(a.images, b.images)
    assert a.class_names == SHAPE_CLASSES
    assert a.labels.tolist() == [i % len(SHAPE_CLASSES) for i in range(24)]
    assert np.array_equal(draw_shape(7, 20)[0], a.images[7].numpy())  # a pure function of the index
    assert not torch.equal(a.images[0], a.images[6])  # same class, different picture
    for img in a.images:  # the shape is visible: two clearly different colours in every image
        assert img.float().std() > 5
    gray = open_source("shapes:6", image_size=40, channels=1, split="all")
    ref = np.array(Image.fromarray(draw_shape(2, 40)[0].transpose(1, 2, 0)).convert("L"))
    assert gray.images.shape == (6, 1, 40, 40) and np.array_equal(gray.images[2, 0].numpy(), ref)
    assert len(open_source("shapes", image_size=8, channels=3, split="all")) == 2048


# --- folders ---------------------------------------------------------------------------------------

def _write_tree(root: Path) -> dict[str, np.ndarray]:
    """Two classes with every awkward kind of file; returns expected pixels for some of them."""
    cat, dog = root / "cat", root / "dog"
    (cat / "sub" / "deeper").mkdir(parents=True)
    dog.mkdir()
    expected: dict[str, np.ndarray] = {}
    a = _rgb(16, 16)
    Image.fromarray(a).save(cat / "a.png")
    expected["cat/a.png"] = a
    Image.fromarray(_rgb(16, 16)).save(cat / "sub" / "deeper" / "nested.jpg", quality=95)
    Image.fromarray(_rgb(16, 16)).save(cat / "with space ü é.png")
    Image.fromarray(_rgb(16, 16)).save(cat / "upper.WEBP")
    Image.new("CMYK", (16, 16), (0, 255, 0, 0)).save(dog / "cmyk.jpg", quality=100)
    g16 = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257 + 100).astype(np.uint16)
    Image.fromarray(g16).save(dog / "gray16.png")
    expected["dog/gray16.png"] = ((g16.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:, :8] = (10, 20, 30, 255)  # left half opaque, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(dog / "rgba.png")
    pal = Image.fromarray(np.repeat(np.arange(16, dtype=np.uint8)[None], 16, 0), "L").convert("P")
    pal.save(dog / "palette.png")
    expected["dog/palette.png"] = np.array(pal.convert("RGB"))
    Image.fromarray(np.full((16, 16), 77, np.uint8), "L").save(dog / "gray.bmp")
    good = Image.fromarray(_rgb(64, 64))
    good.save(dog / "truncated.jpg")
    data = (dog / "truncated.jpg").read_bytes()
    (dog / "truncated.jpg").write_bytes(data[: len(data) // 3])  # corrupt JPEG
    (dog / "empty.png").write_bytes(b"")  # zero-byte file
    (dog / "text.png").write_text("not an image at all")  # text with an image name
    (dog / "notes.txt").write_text("ignored: not an image extension")
    (dog / ".hidden.png").write_bytes(b"")  # hidden files are not listed
    os.symlink(root, dog / "loop")  # a symlink loop must not hang or duplicate
    return expected


def test_folder_with_classes_edge_cases_and_skips(tmp_path):
    root = tmp_path / "data"
    expected = _write_tree(root)
    with pytest.warns(UserWarning, match=r"skipped 3 of 12 .*--strict-data") as rec:  # strict=False: train's
        ds = open_source(str(root), image_size=16, channels=3, split="all", workers=1, strict=False)
    message = str(rec[0].message)
    for bad in ("dog/truncated.jpg", "dog/empty.png", "dog/text.png"):
        assert bad in message
    assert sorted(ds.skipped) == ["dog/empty.png", "dog/text.png", "dog/truncated.jpg"]
    assert ds.class_names == ["cat", "dog"]
    assert ds.names == sorted(ds.names) and len(ds) == 9
    assert "cat/with space ü é.png" in ds.names and "cat/sub/deeper/nested.jpg" in ds.names
    assert "cat/upper.WEBP" in ds.names and not any("loop" in n for n in ds.names)
    labels = dict(zip(ds.names, ds.labels.tolist()))
    assert labels["cat/sub/deeper/nested.jpg"] == 0 and labels["dog/gray.bmp"] == 1
    img = {n: ds.images[i].numpy() for i, n in enumerate(ds.names)}
    assert np.array_equal(img["cat/a.png"], expected["cat/a.png"].transpose(2, 0, 1))
    assert np.array_equal(img["dog/gray16.png"][0], expected["dog/gray16.png"])  # scaled, not clipped
    assert np.array_equal(img["dog/gray16.png"][0], img["dog/gray16.png"][2])
    assert np.array_equal(img["dog/palette.png"], expected["dog/palette.png"].transpose(2, 0, 1))
    assert (img["dog/rgba.png"][:, :, :8] == np.array([10, 20, 30])[:, None, None]).all()
    assert (img["dog/rgba.png"][:, :, 8:] == 255).all()  # transparent → white
    assert np.abs(img["dog/cmyk.jpg"].reshape(3, -1).mean(1) - [255, 0, 255]).max() < 4
    assert (img["dog/gray.bmp"] == 77).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gray = open_source(str(root), image_size=16, channels=1, split="all", workers=1)
    luma = np.array(Image.fromarray(expected["cat/a.png"]).convert("L"))
    assert np.array_equal(gray.images[gray.names.index("cat/a.png"), 0].numpy(), luma)
    with pytest.raises(DataError, match=r"3 unreadable .*truncated\.jpg"):
        open_source(str(root), image_size=16, channels=3, split="all", strict=True, workers=1)


def test_resize_and_crop_match_torchvision(tmp_path):
    from torchvision import transforms

    for i, (h, w) in enumerate([(30, 41), (50, 23)]):
        Image.fromarray(_rgb(h, w)).save(tmp_path / f"{i}.png")
    ds = open_source([str(tmp_path / "0.png"), str(tmp_path / "1.png")], image_size=17, channels=3)
    ref = transforms.Compose([transforms.Resize(17), transforms.CenterCrop(17)])
    for i in range(2):
        expected = np.array(ref(Image.open(tmp_path / f"{i}.png").convert("RGB"))).transpose(2, 0, 1)
        assert np.array_equal(ds.images[i].numpy(), expected)
    assert ds.names == [str(tmp_path / "0.png"), str(tmp_path / "1.png")] and ds.class_names == []
    assert ds.labels.tolist() == [-1, -1]
    single = open_source(str(tmp_path / "1.png"), image_size=17, channels=3, split="val")  # files: no split
    assert len(single) == 1 and torch.equal(single.images[0], ds.images[1])


def test_unlabelled_folder_splits_and_limit(tmp_path):
    for i in reversed(range(12)):
        Image.fromarray(_rgb(8, 8)).save(tmp_path / f"img{i:02d}.png")
    kw = dict(image_size=8, channels=3, workers=1)
    val = open_source(str(tmp_path), split="val", val_count=3, **kw)
    train = open_source(str(tmp_path), split="train", val_count=3, **kw)
    assert val.names == ["img00.png", "img01.png", "img02.png"]  # the first N in sorted order
    assert train.names == [f"img{i:02d}.png" for i in range(3, 12)] and val.class_names == []
    assert (val.labels == -1).all()
    fv = open_source(str(tmp_path), split="val", val_fraction=0.25, **kw)
    ft = open_source(str(tmp_path), split="train", val_fraction=0.25, **kw)
    assert len(fv) == 3 and set(fv.names).isdisjoint(ft.names) and len(fv) + len(ft) == 12
    assert fv.names == open_source(str(tmp_path), split="val", val_fraction=0.25, **kw).names
    everything = open_source(str(tmp_path), split="all", **kw)
    assert sorted(fv.names + ft.names) == everything.names
    assert open_source(str(tmp_path), split="all", limit=4, **kw).names == everything.names[:4]
    with pytest.raises(DataError, match="empty"):
        open_source(str(tmp_path), split="val", val_count=0, **kw)


def test_parallel_decode_equals_serial(tmp_path, monkeypatch):
    import aecli.data.folders as folders

    monkeypatch.setattr(folders, "_POOL_MIN_FILES", 8)  # use the process pool even for a few files
    for i in range(40):
        Image.fromarray(_rgb(12, 10)).save(tmp_path / f"{i:03d}.jpg")
    serial = open_source(str(tmp_path), image_size=8, channels=3, split="all", workers=1)
    parallel = open_source(str(tmp_path), image_size=8, channels=3, split="all", workers=2)
    assert torch.equal(serial.images, parallel.images) and serial.names == parallel.names


def test_bad_paths_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_source(str(tmp_path / "nope"), image_size=8, channels=1)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images found in .*empty.*\.jpg, \.jpeg, \.png, \.webp, \.bmp"):
        open_source(str(tmp_path / "empty"), image_size=8, channels=1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="could be read"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        open_source(str(tmp_path / "bad"), image_size=8, channels=1, split="all")


# --- QuickDraw and torchvision -----------------------------------------------------------------------

def test_quickdraw_folder(tmp_path):
    cat = RNG.integers(0, 256, (5, 784), dtype=np.uint8)
    dog = RNG.integers(0, 256, (3, 784), dtype=np.uint8)
    np.save(tmp_path / "full_numpy_bitmap_cat.npy", cat)
    np.save(tmp_path / "dog.npy", dog)
    ds = open_source(str(tmp_path), image_size=28, channels=1, split="all")
    assert ds.class_names == ["dog", "cat"]  # sorted by file name: dog.npy < full_numpy_bitmap_cat.npy
    assert ds.labels.tolist() == [0] * 3 + [1] * 5
    assert np.array_equal(ds.images[:, 0].numpy(), np.concatenate([dog, cat]).reshape(8, 28, 28))
    assert ds.names[0] == "dog.npy:0" and ds.names[3] == "full_numpy_bitmap_cat.npy:0"
    val = open_source(str(tmp_path), image_size=28, channels=1, split="val", val_count=2)
    assert val.names == ["dog.npy:0", "dog.npy:1"]
    np.save(tmp_path / "zz.npy", np.zeros((2, 10), np.float32))
    with pytest.raises(DataError, match="N×784 uint8"):
        open_source(str(tmp_path), image_size=28, channels=1)


def test_torchvision_absent_is_a_clear_error_without_network(tmp_path, monkeypatch):
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for name, folder in [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("cifar10", "cifar-10")]:
        with pytest.raises(DataError) as err:
            open_source(name, image_size=28, channels=1, data_root=str(tmp_path))
        assert str(tmp_path / folder) in str(err.value) and "--download" in str(err.value)
    assert attempts == []


def test_torchvision_mnist_from_local_files(tmp_path):
    """MNIST in torchvision's on-disk format (idx files) → official test split as val."""
    import struct

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    sets = {"train": (RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.arange(6) % 10),
            "t10k": (RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8), np.arange(4) + 3)}
    for prefix, (imgs, labels) in sets.items():
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, len(imgs), 28, 28)
                                                         + imgs.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, len(labels))
                                                         + labels.astype(np.uint8).tobytes())
    train = open_source("mnist", image_size=28, channels=1, data_root=str(tmp_path))
    val = open_source("mnist", image_size=28, channels=1, data_root=str(tmp_path), split="val")
    assert np.array_equal(train.images[:, 0].numpy(), sets["train"][0])
    assert np.array_equal(val.images[:, 0].numpy(), sets["t10k"][0])
    assert val.labels.tolist() == [3, 4, 5, 6] and len(train.class_names) == 10
    both = open_source("mnist", image_size=14, channels=3, data_root=str(tmp_path), split="all")
    assert both.images.shape == (10, 3, 14, 14)


# --- cache ---------------------------------------------------------------------------------------

def test_cache_round_trip_reads_instead_of_decoding(tmp_path, monkeypatch):
    import aecli.data.folders as folders

    src, cache = tmp_path / "imgs", tmp_path / "cache"
    src.mkdir()
    for i in range(10):
        Image.fromarray(_rgb(10, 14)).save(src / f"{i}.png")
    (src / "broken.png").write_bytes(b"\x89PNG junk")
    kw = dict(image_size=8, channels=3, workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = open_source(str(src), split="all", **kw)
        plain_train = open_source(str(src), val_fraction=0.3, **kw)
        first = open_source(str(src), split="all", cache_dir=str(cache), **kw)
    npy = list(cache.glob("*.npy"))
    assert len(npy) == 1 and len(list(cache.glob("*.json"))) == 1
    stamp = (npy[0].stat().st_ino, npy[0].stat().st_mtime_ns)

    def no_decode(task):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(folders, "decode_task", no_decode)
    with pytest.warns(UserWarning, match="broken.png"):
        again = open_source(str(src), split="all", cache_dir=str(cache), **kw)
    assert isinstance(again.images, np.memmap)
    assert (npy[0].stat().st_ino, npy[0].stat().st_mtime_ns) == stamp  # read, not rewritten
    for d in (first, again):
        assert torch.equal(torch.as_tensor(np.asarray(d.images)), plain.images) and d.names == plain.names
    assert again.skipped == ["broken.png"] and again.source_id == plain.source_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = open_source(str(src), val_fraction=0.3, cache_dir=str(cache), **kw)
    assert torch.equal(train.take(torch.arange(len(train))), plain_train.images)
    assert train.names == plain_train.names
    assert torch.equal(train[2][0], plain_train.images[2])
    # a changed file is a new source: a new entry, never a stale one
    Image.fromarray(_rgb(10, 14)).save(src / "0.png")
    os.utime(src / "0.png", ns=(1, 1))
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        changed = open_source(str(src), split="all", cache_dir=str(cache), **kw)
    assert len(list(cache.glob("*.npy"))) == 2 and changed.source_id != plain.source_id


# --- ImageSet, loader, model input ---------------------------------------------------------------------

def _indexed_set(n: int) -> ImageSet:
    """Image i is filled with i % 256 and labelled i: every batch says which items it holds."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageSet(images, torch.arange(n), [f"x{i}" for i in range(n)])


def _epoch(loader: BatchLoader, start: int = 0) -> list[int]:
    out = []
    for x, y in loader.iter_from(start):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape[0] == y.shape[0]
        assert torch.equal(x[:, 0, 0, 0], (y % 256).to(torch.uint8))  # images travel with labels
        out += y.tolist()
    return out


def test_batch_loader_orders_resume_and_ranks():
    data = _indexed_set(37)
    loader = BatchLoader(data, 5, shuffle=True, seed=3)
    assert len(loader) == 8
    loader.set_epoch(0)
    e0 = _epoch(loader)
    assert sorted(e0) == list(range(37)) and e0 != list(range(37))
    loader.set_epoch(1)
    e1 = _epoch(loader)
    assert sorted(e1) == list(range(37)) and e1 != e0
    again = BatchLoader(data, 5, shuffle=True, seed=3)
    again.set_epoch(1)
    assert _epoch(again) == e1  # order = f(seed, epoch)
    assert _epoch(again, 3) == e1[15:]  # resume mid-epoch
    other = BatchLoader(data, 5, shuffle=True, seed=4)
    assert _epoch(other) != e0
    assert _epoch(BatchLoader(data, 5, shuffle=False)) == list(range(37))
    dropped = BatchLoader(data, 5, shuffle=True, seed=3, drop_last=True)
    assert len(dropped) == 7 and _epoch(dropped) == e0[:35]
    ranks = [BatchLoader(data, 4, shuffle=True, seed=9, rank=r, world_size=2) for r in range(2)]
    parts = [_epoch(r) for r in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 5 and len(parts[0]) == len(parts[1]) == 19
    assert set(parts[0]) | set(parts[1]) == set(range(37))  # covering...
    assert len(set(parts[0]) & set(parts[1])) <= 1  # ...and disjoint but for the one wrap-around pad
    strict = [BatchLoader(data, 4, shuffle=True, seed=9, rank=r, world_size=2, drop_last=True) for r in range(2)]
    sp = [_epoch(r) for r in strict]
    assert set(sp[0]).isdisjoint(sp[1]) and len(sp[0]) == len(sp[1]) == 16


def test_imageset_subset_getitem_and_model_input():
    data = _indexed_set(10)
    sub = data.subset([7, 2, 5])
    assert sub.names == ["x7", "x2", "x5"] and sub.labels.tolist() == [7, 2, 5]
    x, y = sub[1]
    assert y == 2 and x.shape == (1, 2, 2) and int(x[0, 0, 0]) == 2
    assert torch.equal(sub.subset([2, 0]).images[:, 0, 0, 0], torch.tensor([5, 7], dtype=torch.uint8))
    with pytest.raises(IndexError):
        sub[3]
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    for lo, hi in [(-1.0, 1.0), (0.0, 1.0)]:
        out = to_model_input(x, (lo, hi))
        assert out.dtype == torch.float32
        assert torch.allclose(out, torch.tensor([lo, lo + 0.2 * (hi - lo), hi]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batch_loader_on_gpu_matches_cpu():
    data = _indexed_set(50)
    cpu = BatchLoader(data, 8, shuffle=True, seed=1)
    gpu = BatchLoader(data, 8, shuffle=True, seed=1, device="cuda")
    assert gpu.resident
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())


def test_open_splits_lists_the_source_once_and_matches_open_source(monkeypatch) -> None:
    import aecli.data.sources as sources

    calls = []
    real = sources._resolve
    monkeypatch.setattr(sources, "_resolve", lambda *a, **k: calls.append(a) or real(*a, **k))
    train, val = sources.open_splits("shapes:40", ("train", "val"), image_size=16, channels=1, val_count=5)
    assert len(calls) == 1
    for split, got in (("train", train), ("val", val)):
        alone = sources.open_source("shapes:40", image_size=16, channels=1, split=split, val_count=5)
        assert got.names == alone.names and got.source_id == alone.source_id
        assert torch.equal(got.tensor(), alone.tensor())
