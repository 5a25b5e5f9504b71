"""The flow matrix (issue 14): every command that reads images × every kind of source × {the
checkpoint's own source, another source, no --data} × {one checkpoint, two of different sizes}, through
the real CLI, the way users run it.

Each cell asserts the exit code, the output files and the one data line the command prints (source,
whose data it is, split rule, N), or the exact one-line error where the combination cannot work.
Checkpoints are trained once per module with `aecli train` (tiny widths, one epoch); N and the split
sizes below are worked out from the sources' sizes and the split rules, not read back from aecli.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aecli.cli import app

TINY = ["-m", "widths=4,8", "-m", "latent_dim=8", "--epochs", "1", "--device", "cpu"]
KINDS = ("digits", "shapes", "classes", "flat", "quickdraw")
COMMANDS = ("reconstruct", "interpolate", "tsne", "arithmetic", "evaluate", "sample-fit")
DEFAULT_RULE = "a fixed pseudo-random 10% (split seed 0)"


@dataclass
class Source:
    """A kind of data and what its splits hold (computed here, independently of aecli)."""

    spelling: str  # as given to `train --data`
    shown: str  # as a command shows it when it defaults to it (paths: resolved)
    alias: str  # another spelling of the same data
    total: int  # images in the source
    val: int  # images training held out
    rule: str  # the held-out split's rule as the data line states it


def _cli(*args: object, cwd: Path | None = None) -> tuple[int, str, str]:
    here = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(here)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout, result.stderr


def _png(path: Path, size: int, rgb: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3) if rgb else (size, size), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("flows")
    for i in range(12):  # two classes of six
        _png(root / "classes" / ("a" if i < 6 else "b") / f"{i:02d}.png", 20, True, i)
    for i in range(10):
        _png(root / "flat" / f"f{i:02d}.png", 18, False, 100 + i)
    (root / "qd").mkdir()
    rng = np.random.default_rng(7)
    for name in ("cat", "dog"):
        np.save(root / "qd" / f"{name}.npy", rng.integers(0, 256, (10, 784), dtype=np.uint8))
    for i in range(2):
        _png(root / "files" / f"x{i}.png", 24, True, 200 + i)
    (root / "empty_root").mkdir()
    os.symlink(root / "classes", root / "classes_link")
    work = root / "elsewhere"  # commands run from another folder than training
    work.mkdir()

    sources = {
        "digits": Source("digits", "digits", "DIGITS", 1797, 180, DEFAULT_RULE),
        "shapes": Source("shapes:48", "shapes:48", "shapes:48", 48, 5, DEFAULT_RULE),  # round(0.1·48) = 5
        "classes": Source(str(root / "classes"), str(root / "classes"), str(root / "classes_link"), 12, 3,
                          "the first 3 images in sorted order (--val-count 3)"),
        # trained with a relative spelling from `root`: commands elsewhere still find it
        "flat": Source("flat", str(root / "flat"), str(root / "flat") + "/", 10, 2,
                       "a fixed pseudo-random 20% (--val-fraction 0.2, split seed 0)"),
        "quickdraw": Source(str(root / "qd"), str(root / "qd"), str(root / "qd" / ".." / "qd"), 20, 2, DEFAULT_RULE),
    }
    extra = {"digits": ["--batch-size", "64"], "shapes": ["--batch-size", "8"], "quickdraw": ["--batch-size", "8"],
             "classes": ["--val-count", "3", "--batch-size", "4"], "flat": ["--val-fraction", "0.2", "--batch-size", "4"]}
    ckpts = {}
    for kind, src in sources.items():
        size = [] if kind == "digits" else ["--image-size", "16"]  # digits: the command, 32 px
        code, out, err = _cli("train", "conv-vae", "--data", src.spelling, *size, *extra.get(kind, []), *TINY,
                              "--out", root / "runs" / kind, cwd=root)
        assert code == 0, out + err
        ckpts[kind] = root / "runs" / kind / "best.safetensors"
    # The same data as "classes" spelled with a trailing slash, at another size: two checkpoints.
    code, out, err = _cli("train", "conv-vae", "--data", str(root / "classes") + "/", "--image-size", "32",
                          "--val-count", "3", "--batch-size", "4", *TINY, "--out", root / "runs" / "classes32", cwd=root)
    assert code == 0, out + err
    ckpts["classes32"] = root / "runs" / "classes32" / "best.safetensors"
    return {"root": root, "work": work, "sources": sources, "ckpts": ckpts}


def _line(source: str, whose: str, split: str, rule: str, n: int, size: int) -> str:
    of = f" of {size}" if n != size else ""
    return f"data: {source} ({whose}) · split {split}: {rule} · N = {n}{of}"


# Per command: (arguments after the checkpoint, the data option, how many images it asks for).
def _args(command: str, out: Path, world: dict) -> tuple[list[object], str, int | None]:
    root = world["root"]
    if command == "reconstruct":
        return ["--n", 4, "--out", out / "rec"], "--data", 4
    if command == "interpolate":
        return ["--from-index", 0, "--to-index", 1, "--steps", 3, "--out", out / "walk.png"], "--data", 2
    if command == "tsne":
        return ["--method", "pca", "--n", 5, "--out", out / "t.png", "--json-out", out / "t.json"], "--data", 5
    if command == "arithmetic":
        return ["--plus", root / "files", "--minus", root / "flat", "--n", 3, "--out", out / "a.png"], "--apply", 3
    if command == "evaluate":
        return ["--metrics", "psnr,l1", "--n", 4, "--json-out", out / "e.json"], "--data", 4
    return ["--n", 4, "--fit-n", 6, "--fit-split", "val", "--out", out / "s.png"], "--fit", 6


def _command(command: str) -> str:
    return "sample" if command == "sample-fit" else command


def _check_outputs(command: str, out: Path, n: int, data: dict) -> None:
    if command == "reconstruct":
        assert len(list((out / "rec").glob("**/*.png"))) == n + 1  # one per input + comparison.png
    elif command in ("interpolate", "arithmetic", "sample-fit"):
        assert next(out.glob("*.png")).stat().st_size > 0
    elif command == "tsne":
        summary = json.loads((out / "t.json").read_text())
        assert summary["provenance"] == data and summary["images"] == n
        assert len((out / "t.csv").read_text().splitlines()) == n + 1
    elif command == "evaluate":
        [row] = json.loads((out / "e.json").read_text())["rows"]
        assert row["data"] == data and row["n"] == n and row["values"]["psnr"] > 0


def _data_line(err: str, command: str) -> str:
    """The data line of a command's stderr (arithmetic prints one per input: --apply's)."""
    lines = [ln for ln in err.splitlines() if "data: " in ln]
    if command == "arithmetic":
        lines = [ln.removeprefix("--apply: ") for ln in lines if ln.startswith("--apply: ")]
    if command == "evaluate":
        lines = [ln.split(" · ", 1)[1] for ln in lines]  # "<checkpoint>: <family> · data: …"
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("mode", ["none", "own", "other"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", COMMANDS)
def test_one_checkpoint(command: str, kind: str, mode: str, world: dict, tmp_path: Path) -> None:
    src, ckpt = world["sources"][kind], world["ckpts"][kind]
    args, option, asked = _args(command, tmp_path, world)
    if mode == "none" and command == "sample-fit":
        pytest.skip("--fit takes a value: sample has no default data")  # documented: `sample --fit DATA`
    other_kind = KINDS[(KINDS.index(kind) + 1) % len(KINDS)]
    other = world["sources"][other_kind]
    data = {"none": [], "own": [option, src.alias], "other": [option, other.shown]}[mode]
    code, out, err = _cli(_command(command), ckpt, *args, *data, cwd=world["work"])
    if mode == "other":  # other data: all of it, or the default rule where a split is asked for
        split = "val" if command == "sample-fit" else "all"
        size = min(max(round(0.1 * other.total), 1), other.total - 1) if split == "val" else other.total
        rule, origin = (DEFAULT_RULE, "the default rule") if split == "val" else ("every image", "")
        whose, shown = f"not the checkpoint's training data, {src.spelling}", other.shown
    else:  # the training data, however spelled: what training held out
        split, size, rule, origin = "val", src.val, src.rule, "as training held out"
        whose = "no --data: the checkpoint's training data" if mode == "none" else "the checkpoint's training data"
        shown = src.shown if mode == "none" else src.alias
    n = min(asked, size)
    if command == "sample-fit" and n < 2:  # the default 10 % of 12 images is one: no Gaussian to fit
        assert (code, err) == (2, "Error: fitting a Gaussian needs at least 2 images, got 1; give more --fit data\n")
        return
    assert code == 0, out + err
    assert _data_line(err, command) == _line(shown, whose, split, f"{rule}, {origin}" if origin else rule, n, size)
    provenance = {"source": shown, "training_source": src.spelling, "same_as_training": mode != "other",
                  "defaulted": mode == "none", "split": split, "split_rule": rule, "split_size": size, "n": n}
    _check_outputs(command, tmp_path, n, provenance)


def test_reconstruct_right_after_train_on_its_own_source(world: dict, tmp_path: Path) -> None:
    """Issue 14 point 1: `train conv-vae --epochs 1 --out run && reconstruct run/best.safetensors --data
    digits --n 8 --out rec` ended in KeyError (32, 1)."""
    code, out, err = _cli("reconstruct", world["ckpts"]["digits"], "--data", "digits", "--n", 8, "--out",
                          tmp_path / "rec")
    assert code == 0, out + err
    assert len(list((tmp_path / "rec").glob("digits_*.png"))) == 8 and (tmp_path / "rec" / "comparison.png").exists()
    assert err.splitlines()[0] == _line("digits", "the checkpoint's training data", "val",
                                        f"{DEFAULT_RULE}, as training held out", 8, 180)


@pytest.mark.parametrize("mode", ["none", "own", "other"])
@pytest.mark.parametrize("command", ["reconstruct", "evaluate"])
def test_two_checkpoints_of_different_sizes(command: str, mode: str, world: dict, tmp_path: Path) -> None:
    """16 px and 32 px checkpoints of the same folder (spelled with and without a trailing slash): one
    set of inputs, the held-out images of the training data; or all of other data."""
    src, flat = world["sources"]["classes"], world["sources"]["flat"]
    a, b = world["ckpts"]["classes"], world["ckpts"]["classes32"]
    data = {"none": [], "own": ["--data", src.alias], "other": ["--data", flat.shown]}[mode]
    args = (["--out", tmp_path / "rec"] if command == "reconstruct"
            else ["--metrics", "psnr,l1", "--json-out", tmp_path / "e.json"])
    code, out, err = _cli(command, a, b, *args, *data, cwd=world["work"])
    assert code == 0, out + err
    if mode == "other":
        line = _line(flat.shown, f"not the checkpoint's training data, {src.spelling}", "all", "every image", 10, 10)
        n = 10
    else:
        whose = "no --data: the checkpoint's training data" if mode == "none" else "the checkpoint's training data"
        line = _line(src.shown if mode == "none" else src.alias, whose, "val", f"{src.rule}, as training held out",
                     3, 3)
        n = 3
    if command == "reconstruct":
        assert err.splitlines() == [line]
        for label in ("classes-best", "classes32-best"):
            assert len(list((tmp_path / "rec" / label).glob("**/*.png"))) == n
        with Image.open(tmp_path / "rec" / "comparison.png") as grid:
            assert grid.height > 3 * 32  # inputs + two rows, at the larger size
    else:
        rows = json.loads((tmp_path / "e.json").read_text())["rows"]
        assert [r["n"] for r in rows] == [n, n]
        # the 32 px run recorded "classes/" and is still the same data
        assert [r["data"]["same_as_training"] for r in rows] == [mode != "other"] * 2
        assert [ln.split(" · ", 1)[1] for ln in err.splitlines() if "data: " in ln][0].startswith(line.split(" (")[0])


def test_two_checkpoints_of_different_data_without_data(world: dict, tmp_path: Path) -> None:
    digits, shapes = world["ckpts"]["digits"], world["ckpts"]["shapes"]
    code, out, err = _cli("reconstruct", digits, shapes, "--out", tmp_path / "rec")
    assert (code, err) == (2, "Error: the checkpoints were trained on different data (digits, shapes:48); pass "
                              "--data SRC to reconstruct the same images with each\n")
    assert not (tmp_path / "rec").exists()
    # evaluate scores each checkpoint on its own held-out images: one row each, each says which
    code, out, err = _cli("evaluate", digits, shapes, "--metrics", "psnr", "--n", 4, "--json-out", tmp_path / "e.json")
    assert code == 0, out + err
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert [(r["data"]["source"], r["data"]["split_size"], r["n"]) for r in rows] == [("digits", 180, 4),
                                                                                    ("shapes:48", 5, 4)]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_list_of_image_files(command: str, world: dict, tmp_path: Path) -> None:
    """Named image files are used whole, in order, never split."""
    files = sorted((world["root"] / "files").glob("*.png"))
    ckpt = world["ckpts"]["classes"]
    args, option, _ = _args(command, tmp_path, world)
    data = [option, files[0]] + ([option, files[1]] if command == "reconstruct" else [])
    n = 2 if command == "reconstruct" else 1
    code, out, err = _cli(_command(command), ckpt, *args, *data)
    shown = ", ".join(str(f) for f in files[:n]) if command == "reconstruct" else str(files[0])
    if command == "interpolate":  # two end points from one file
        assert (code, err) == (2, f"Error: index 1 is out of range: {shown} has 1 image\n")
        return
    line = f"data: {shown} · the given files, whole (no split) · N = {n}"
    if command == "sample-fit":
        assert (code, err) == (2, "Error: fitting a Gaussian needs at least 2 images, got 1; give more --fit data\n")
        return
    if command == "tsne":  # a map of one point: said after the data line
        assert (code, err) == (2, f"{line}\nError: PCA needs at least 2 images, got 1\n")
        return
    assert code == 0, out + err
    assert _data_line(err, command) == line


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_torchvision_set(command: str, world: dict, tmp_path: Path) -> None:
    root = world["root"] / "empty_root"
    args, option, _ = _args(command, tmp_path, world)
    code, out, err = _cli(_command(command), world["ckpts"]["digits"], *args, option, "mnist", "--data-root", root)
    assert (code, err) == (2, f"Error: mnist is not in {root}/MNIST/raw (expected train-images-idx3-ubyte etc.); run "
                              f"once with --download on a machine with internet access (--data-root {root}), or "
                              "copy the files there\n")
    code, out, err = _cli("train", "conv-vae", "--data", "mnist", "--data-root", root, *TINY, "--out", tmp_path / "r")
    assert code == 2 and err.startswith(f"Error: mnist is not in {root}/MNIST/raw") and len(err.splitlines()) == 1


def _with_recorded_source(ckpt: Path, dest: Path, source: str) -> Path:
    """A copy of ``ckpt`` whose metadata records ``source`` as its training data (as a hostile or stale
    file could)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(ckpt), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    data = json.loads(meta["data"])
    data.update(source=source, source_path="")
    meta["data"] = json.dumps(data)
    save_file(tensors, str(dest), metadata=meta)
    return dest


@pytest.mark.parametrize("recorded, message", [
    ("/", "records '/' as its training data, a system folder aecli will not read by default; pass --data SRC"),
    ("/proc/self", "records '/proc/self' as its training data, a system folder aecli will not read by default; "
                   "pass --data SRC"),
    ("shapes:1000000000", "records 'shapes:1000000000' as its training data: shapes:1000000000 is more than the "
                          "1,000,000 shapes aecli draws; give shapes:N with N <= 1000000; or pass --data SRC"),
    ("digits\x1b]0;pwned\x07", "records an implausible training data source (16 characters, with control "
                               "characters); pass --data SRC"),
])
@pytest.mark.parametrize("command", ["evaluate", "tsne", "reconstruct"])
def test_a_recorded_source_is_untrusted(command: str, recorded: str, message: str, world: dict,
                                        tmp_path: Path) -> None:
    """Issue 20 point 12: "/" made evaluate walk the whole filesystem, "shapes:1000000000" made tsne
    allocate 7.45 GiB. A recorded source passes the same checks as --data before it is opened."""
    ckpt = _with_recorded_source(world["ckpts"]["shapes"], tmp_path / "c.safetensors", recorded)
    args, _, _ = _args(command, tmp_path, world)
    code, out, err = _cli(command, ckpt, *args)
    assert (code, err) == (2, f"Error: {ckpt} {message}\n")
    # --data SRC is the way out the message names
    code, out, err = _cli(command, ckpt, *args, "--data", "shapes:16")
    assert code == 0, out + err


def test_the_cli_bounds_shapes_the_same_way(tmp_path: Path) -> None:
    code, out, err = _cli("train", "conv-vae", "--data", "shapes:1000000000", *TINY, "--out", tmp_path / "r")
    assert (code, err) == (2, "Error: shapes:1000000000 is more than the 1,000,000 shapes aecli draws; give "
                              "shapes:N with N <= 1000000\n")


def test_log_and_evaluate_share_no_name_with_two_definitions(world: dict, tmp_path: Path) -> None:
    """Issue 14 point 7: the log's kl follows --reduction (per latent element under mean), evaluate's is
    per image: evaluate reports it as kl_per_image, and the two agree once the unit is accounted for."""
    import csv

    run = world["ckpts"]["digits"].parent
    code, out, err = _cli("evaluate", world["ckpts"]["digits"], "--metrics", "l1,mse,psnr,kl", "--json-out",
                          tmp_path / "e.json")
    assert code == 0, out + err
    [row] = json.loads((tmp_path / "e.json").read_text())["rows"]
    with open(run / "metrics.csv") as fh:
        log = [r for r in csv.DictReader(fh) if r["kind"] == "epoch" and r["split"] == "val"]
    assert not set(row["values"]) & set(log[-1]), "a name with two definitions"
    assert row["n"] == 180  # the same held-out images the log's val row is computed on
    # The log's kl is per image under --reduction sum (conv-vae's default) and per latent element under mean.
    reduction = json.loads((run / "config.json").read_text())["reduction"]
    per_log_unit = {"sum": 1, "mean": 8}[reduction]  # -m latent_dim=8, a flat latent
    assert row["values"]["kl_per_image"] == pytest.approx(float(log[-1]["kl"]) * per_log_unit, rel=0.02)
