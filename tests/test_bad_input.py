"""Bad input through the command line: every option of every command given a wrong value, hostile
image folders through `train`/`evaluate`, and output names that try to leave the output folder.

The option matrix is built by introspecting the Typer app, so a new option is tested (or must be
classified below) as soon as it is added.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import struct
import typing
import zlib
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
import typer.main
import typer.testing
from conftest import tiny_model
from PIL import Image
from typer.testing import CliRunner

from aecli.checkpoint import load_model, save_model
from aecli.cli import app
from aecli.data.spec import DataSpec

runner = CliRunner()
_COMMAND = typer.main.get_command(app)
HAS_CUDA = torch.cuda.is_available()


def cli(*args: object) -> tuple[int, str]:
    """Run `aecli ARGS` in-process (the click command is built once: the matrix runs it ~200 times)."""
    with mock.patch.object(typer.testing, "_get_command", lambda _app: _COMMAND):
        result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output.strip()


# -- fixtures: one small checkpoint, a few images ------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("badinput")


@pytest.fixture(scope="module")
def ckpt(work: Path) -> Path:
    torch.manual_seed(0)
    model = tiny_model("conv-vae", 32, 1)
    return save_model(work / "vae.safetensors", model, DataSpec(32, 1, model.value_range, [], "test"))


@pytest.fixture(scope="module")
def kl(work: Path) -> Path:
    """A tiny ldm-kl checkpoint (export's input)."""
    torch.manual_seed(0)
    model = tiny_model("ldm-kl", 32, 3)
    return save_model(work / "kl.safetensors", model, DataSpec(32, 3, model.value_range, [], "test"))


@pytest.fixture(scope="module")
def hf(work: Path, kl: Path) -> Path:
    """The same as a diffusers AutoencoderKL folder (import's input)."""
    from aecli.interop.ldm_kl import export_diffusers

    return export_diffusers(kl, work / "kl-diffusers")


@pytest.fixture(scope="module")
def lat(work: Path) -> Path:
    """Latents the tiny conv-vae decodes (flat, 8 dimensions), as a plain .npy."""
    np.save(work / "lat.npy", np.zeros((2, 8), dtype=np.float32))
    return work / "lat.npy"


@pytest.fixture(scope="module")
def imgs(work: Path) -> Path:
    folder = work / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


# -- every option, a wrong value ----------------------------------------------------------------------
# A valid, cheap invocation per command; the option under test is appended (the last value wins). If a
# wrong value is not refused, the command runs on tiny inputs and the test fails on its exit code 0.
BASE: dict[str, list[str]] = {
    "info": ["info", "{ckpt}"],
    "train": ["train", "conv-ae", "--data", "shapes:16", "--epochs", "1", "--batch-size", "4", "--image-size",
              "32", "--channels", "1", "-m", "widths=4,8", "-m", "latent_dim=4", "--device", "cpu", "--workers",
              "1", "--out", "{out}"],
    "reconstruct": ["reconstruct", "{ckpt}", "--data", "{imgs}", "--out", "{out}", "--device", "cpu"],
    "encode": ["encode", "{ckpt}", "--data", "{imgs}", "--out", "{out}.safetensors", "--device", "cpu"],
    "decode": ["decode", "{ckpt}", "{lat}", "--out", "{out}", "--device", "cpu"],
    "export": ["export", "{kl}", "--diffusers", "{out}"],
    "import": ["import", "{hf}", "--out", "{out}.safetensors"],
    "sample": ["sample", "{ckpt}", "--out", "{out}.png", "--n", "4", "--device", "cpu"],
    "interpolate": ["interpolate", "{ckpt}", "--out", "{out}.png", "--steps", "3", "--device", "cpu"],
    "arithmetic": ["arithmetic", "{ckpt}", "--out", "{out}.png", "--plus", "{imgs}", "--minus", "{imgs}",
                   "--apply", "{imgs}", "--device", "cpu"],
    "tsne": ["tsne", "{ckpt}", "--data", "{imgs}", "--split", "all", "--method", "pca", "--out", "{out}.png",
             "--device", "cpu"],
    "evaluate": ["evaluate", "{ckpt}", "--metrics", "l1,psnr", "--data", "{imgs}", "--split", "all", "--device",
                 "cpu"],
    "report": ["report", "{run}", "--out", "{out}.md"],
    "weights check": ["weights", "check", "--metrics", "lpips"],
    "weights download": ["weights", "download", "--metrics", "lpips"],
}
# Options that only matter together with another one get that one too.
CONTEXT: dict[tuple[str, str], list[str]] = {
    ("train", "step_size"): ["--scheduler", "step"], ("train", "gamma"): ["--scheduler", "step"],
    ("train", "patience"): ["--scheduler", "plateau"], ("train", "kl_cycle_ratio"): ["--kl-cycles", "2"],
    ("train", "lpips_net"): ["--lpips", "0.1"], ("train", "lpips_weights"): ["--lpips", "0.1"],
    ("train", "adv_start"): ["--adv", "0.1"], ("train", "lr_d"): ["--adv", "0.1"],
    ("train", "warmup_steps"): ["--scheduler", "cosine"],
    ("sample", "fit_n"): ["--fit", "{imgs}"], ("sample", "fit_kind"): ["--fit", "{imgs}"],
    ("sample", "fit_split"): ["--fit", "{imgs}"],
    ("interpolate", "from_index"): ["--data", "{imgs}", "--to-index", "1"],
    ("interpolate", "to_index"): ["--data", "{imgs}", "--from-index", "0"],
    ("interpolate", "split"): ["--data", "{imgs}", "--from-index", "0", "--to-index", "1"],
    ("interpolate", "frame_ms"): ["--gif", "{out}.gif"],
    ("evaluate", "lpips_net"): ["--metrics", "lpips"], ("evaluate", "inception_weights"): ["--metrics", "fid"],
    ("evaluate", "lpips_weights"): ["--metrics", "lpips"], ("evaluate", "samples"): ["--metrics", "fid"],
    ("evaluate", "class_samples"): ["--metrics", "class-acc"],
    ("interpolate", "data"): ["--from-index", "0", "--to-index", "1"],
    ("weights check", "inception_weights"): ["--metrics", "fid"],
}
# Numbers where a negative value is meaningful: a seed is any integer. (NaN is never meaningful.)
NEGATIVE_OK = {"seed"}
# Wrong values for string/path options, by option name.
WRONG_TEXT: dict[str, list[str]] = {
    "device": ["tpu", "cuda:7"] + ([] if HAS_CUDA else ["cuda"]),
    "split": ["test"], "method": ["bogus"], "recon": ["huber"], "reduction": ["median"], "lpips_net": ["resnet"],
    "optimizer": ["sgd"], "scheduler": ["linear"], "precision": ["fp8"], "fit_kind": ["bogus"],
    "fit_split": ["bogus"], "metrics": ["psnr,bogus"], "betas": ["0.5", "a,b"], "scale": ["x"],
    "class_name": ["zzz"], "model_opt": ["bogus=1", "widths=a,b"], "data": ["/no/such/dir"], "fit": ["/no/such/dir"],
    "plus": ["/no/such/dir"], "minus": ["/no/such/dir"], "apply": ["/no/such/dir"], "from_image": ["/no/such.png"],
    "to_image": ["/no/such.png"], "resume": ["/no/such/run"], "config": ["/no/such.toml"],
    "lpips_weights": ["/no/such.pth"], "inception_weights": ["/no/such.pth"], "expr": ["{ckpt} +* -"],
    "pred": ["/no/such/dir"], "ref": ["/no/such/dir"], "eval_file": ["/no/such.json"], "sort_by": ["bogus_figure"],
    "max_time": ["soon", "0", "-5m", "1x"], "tracker": ["comet"], "fid_backend": ["pytorch-fid"],
    "clean_fid_mode": ["legacy_pytorch"], "key": ["no_such_tensor"], "objective": ["bogus"],
    "baseline": ["bogus", "pca:0"], "augment": ["rot45"],
}
# Free-form options: any text is a valid name (an output path, a title, a cache folder). Output paths
# that cannot be written are tested in test_reliability.py.
FREE_TEXT = {"out", "data_root", "cache", "title", "json_out", "json_path", "csv_path", "gif", "save_vector",
             "cache_dir", "weights_dir", "save_latents", "family", "codebook_plots", "diffusers"}
# Extra wrong numbers beyond "abc", "-3", "nan": sizes the model cannot take, channel counts.
EXTRA_NUMBERS: dict[tuple[str, str], list[str]] = {
    ("train", "image_size"): ["30", "100000"], ("train", "channels"): ["2"], ("train", "num_classes"): ["100001"],
    ("reconstruct", "image_size"): ["30"], ("train", "val_fraction"): ["1.5"], ("train", "kl_cycle_ratio"): ["1.5"],
    ("train", "ema"): ["1.5"], ("train", "betas"): ["1.5,0.9"],
    ("train", "grad_accum_steps"): ["0"], ("train", "epochs"): ["0"],
}


def _kind(param: Any) -> str:
    ann = param.type_descriptor.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if args and typing.get_origin(ann) is not list:
        ann = args[0]
    if typing.get_origin(ann) is list:
        ann = typing.get_args(ann)[0]
    return getattr(ann, "__name__", str(ann))


def _commands() -> dict[str, Any]:
    out = {}
    for name, cmd in _COMMAND.commands.items():
        for sub, sub_cmd in getattr(cmd, "commands", {}).items():
            out[f"{name} {sub}"] = sub_cmd
        if not hasattr(cmd, "commands"):
            out[name] = cmd
    return out


def _cases() -> list[tuple[str, str, str, str]]:
    """(command, option flag, option name, wrong value) for every option of every command."""
    cases = []
    for command, cmd in _commands().items():
        for p in cmd.params:
            if getattr(p, "is_flag", False) or p.param_type_name != "option":
                continue
            kind, flag = _kind(p), p.opts[0]
            values: list[str] = []
            if kind in ("int", "float"):
                values = ["abc"] + ([] if p.name in NEGATIVE_OK else ["-3"]) + (["nan"] if kind == "float" else [])
            elif p.name in WRONG_TEXT:
                values = list(WRONG_TEXT[p.name])
            else:
                assert p.name in FREE_TEXT, f"classify `{command} {flag}` ({kind}) in WRONG_TEXT or FREE_TEXT"
            values += EXTRA_NUMBERS.get((command, p.name), [])
            cases += [(command, flag, p.name, v) for v in values]
    return cases


def test_every_command_has_a_cheap_valid_invocation() -> None:
    assert set(_commands()) - {"models"} == set(BASE), "add the new command to BASE"


@pytest.fixture(scope="module")
def run_dir(work: Path) -> Path:
    """A real run folder (for `report`), trained for one tiny epoch."""
    code, out = cli(*[a.replace("{out}", str(work / "run")) for a in BASE["train"]])
    assert code == 0, out
    return work / "run"


@pytest.mark.parametrize("command, flag, name, value", _cases(),
                         ids=[f"{c}-{f}={v}" for c, f, _, v in _cases()])
def test_wrong_option_value_is_a_one_line_error(command: str, flag: str, name: str, value: str, ckpt: Path,
                                                imgs: Path, run_dir: Path, lat: Path, kl: Path, hf: Path,
                                                tmp_path: Path) -> None:
    fill = {"{ckpt}": str(ckpt), "{imgs}": str(imgs), "{out}": str(tmp_path / "o"), "{run}": str(run_dir),
            "{lat}": str(lat), "{kl}": str(kl), "{hf}": str(hf)}

    def expand(text: str) -> str:
        for k, v in fill.items():
            text = text.replace(k, v)
        return text

    args = [expand(a) for a in BASE[command] + CONTEXT.get((command, name), []) + [flag, value]]
    code, out = cli(*args)
    assert code == 2, f"exit {code} for {flag} {value!r}: {out[-300:]}"
    if out.startswith("Usage:"):
        # Typer's own type check ("abc" for a number): usage lines and one error naming the option.
        assert f"'{flag}'" in out or flag in out, out
    elif command == "weights check":  # its table of files comes first, then the one-line error
        assert out.splitlines()[-1].startswith("Error: "), out
    else:
        assert out.startswith("Error: ") and "\n" not in out, out
    assert not list(tmp_path.rglob("*.safetensors")), "a checkpoint was written before the error"


# A negative seed: torch's and numpy's draws take any integer (modulo 2**64), scikit-learn's t-SNE/PCA
# only 0 … 2**32 - 1. One right answer per command.
NEGATIVE_SEED = {"reconstruct": 0, "sample": 0, "interpolate": 0, "evaluate": 0,
                 "tsne": "Error: --seed must be between 0 and 2**32 - 1, got -3"}


def test_negative_seed_has_one_answer_per_command(ckpt: Path, imgs: Path, tmp_path: Path) -> None:
    for command, expected in NEGATIVE_SEED.items():
        base = [a.replace("{ckpt}", str(ckpt)).replace("{imgs}", str(imgs)).replace("{out}", str(tmp_path / command))
                for a in BASE[command]]
        code, out = cli(*base, "--seed", "-3")
        if expected == 0:
            assert code == 0, f"{command} --seed -3: exit {code}: {out[-300:]}"
        else:
            assert (code, out.splitlines()[-1]) == (2, expected), out


# -- hostile image folders, through the CLI ------------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width × height pixels but holds (almost) no data: a decompression bomb's
    header costs nothing to make, and PIL must refuse it before allocating."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _make_hostile_folder(root: Path) -> tuple[int, list[str]]:
    """Two class folders with every kind of image mode and every kind of broken file. Returns the
    number of readable images and the names of the files that must be skipped."""
    rng = np.random.default_rng(1)
    rgb = lambda: rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)  # noqa: E731
    a, b = root / "class a ü", root / "クラス b"  # spaces and unicode in class names
    a.mkdir(parents=True)
    b.mkdir()
    good = 0

    def save(img: Image.Image, path: Path, **kw: Any) -> None:
        nonlocal good
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, **kw)
        good += 1

    for i in range(4):  # plain RGB, in both classes, names with spaces/unicode
        save(Image.fromarray(rgb()), a / f"rgb {i} é.png")
        save(Image.fromarray(rgb()), b / f"画像 {i}.jpg", quality=90)
    save(Image.fromarray(rgb()).convert("L"), a / "gray.png")
    save(Image.fromarray(rgb()).convert("RGBA"), a / "rgba.png")
    save(Image.fromarray(rgb()).convert("P", palette=Image.Palette.ADAPTIVE), b / "palette.png")
    save(Image.fromarray(rgb()).convert("CMYK"), b / "cmyk.jpg")
    save(Image.fromarray((rng.integers(0, 65535, (20, 20))).astype(np.uint16)), a / "sixteen-bit.png")
    save(Image.fromarray(rgb()).convert("1"), b / "bilevel.bmp")
    save(Image.fromarray(rgb()), b / "webp image.webp")
    save(Image.new("L", (8000, 8000), 128), a / "huge 8000x8000.png")  # 64 Mpx < PIL's 89 Mpx limit
    deep = a.joinpath(*[f"level{i}" for i in range(40)])  # deeply nested: still class a
    save(Image.fromarray(rgb()), deep / "deep.png")
    # Broken files: each must be skipped and counted.
    broken = []
    jpg = io.BytesIO()
    Image.fromarray(rgb()).save(jpg, format="JPEG")
    (b / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 3])
    (a / "zero bytes.png").write_bytes(b"")
    (b / "text.jpg").write_text("this is not an image")
    _png_header_only(a / "bomb.png", 20_000, 20_000)  # 400 Mpx > 2 × MAX_IMAGE_PIXELS: refused
    os.symlink(root / "nowhere.png", b / "dangling.png")
    broken += ["truncated.jpg", "zero bytes.png", "text.jpg", "bomb.png", "dangling.png"]
    # Ignored, not counted: non-image names, hidden files, and a symlink loop (each real folder once).
    (a / "notes.txt").write_text("not an image name")
    (a / ".hidden.png").write_bytes(b"")
    os.symlink(root, b / "loop")
    os.symlink(a, a / "self")
    return good, broken


@pytest.fixture(scope="module")
def hostile(work: Path) -> tuple[Path, int, list[str]]:
    root = work / "hostile data"
    good, broken = _make_hostile_folder(root)
    return root, good, broken


def test_hostile_folder_trains_skips_and_counts(hostile: tuple[Path, int, list[str]], tmp_path: Path) -> None:
    root, good, broken = hostile
    out = tmp_path / "run"
    with pytest.warns(UserWarning) as caught:
        code, text = cli("train", "conv-ae", "--data", root, "--image-size", "32", "--channels", "3", "--epochs",
                         "1", "--batch-size", "4", "--val-count", "4", "-m", "widths=4,8", "-m", "latent_dim=4",
                         "--device", "cpu", "--workers", "1", "--out", out)
    assert code == 0, text
    # Every readable image is used (train + validation); every broken one is skipped, named and counted
    # (one warning per split: the validation split is the first 4 listed files).
    n_train, n_val = map(int, re.search(r"on (\d+) images .*val (\d+);", text).groups())
    assert n_train + n_val == good, text
    counts = [re.search(r"skipped (\d+) of", str(w.message)) for w in caught]
    assert sum(int(m.group(1)) for m in counts if m) == len(broken), [str(w.message) for w in caught]
    named = " ".join(str(w.message) for w in caught)
    assert all(name in named for name in broken), named
    ckpt = load_model(out / "last.safetensors")
    assert ckpt.data.class_names == ["class a ü", "クラス b"]
    # --strict-data: the same folder is refused, naming a broken file.
    code, text = cli("train", "conv-ae", "--data", root, "--image-size", "32", "--epochs", "1", "--strict-data",
                     "--device", "cpu", "--out", tmp_path / "strict")
    assert code == 2 and any(name in text for name in broken) and "\n" not in text, text


def test_hostile_folder_evaluates(hostile: tuple[Path, int, list[str]], ckpt: Path, tmp_path: Path) -> None:
    root, good, broken = hostile
    report = tmp_path / "eval.json"
    code, text = cli("evaluate", ckpt, "--data", root, "--split", "all", "--metrics", "l1,psnr", "--device", "cpu",
                     "--json-out", report)
    assert code == 0, text
    rows = json.loads(report.read_text())
    n_values = {v for v in _find_key(rows, "n") if isinstance(v, int)}
    assert good in n_values, (good, rows)


def _find_key(obj: Any, key: str) -> list[Any]:
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k == key] + [x for v in obj.values() for x in _find_key(v, key)]
    if isinstance(obj, list):
        return [x for v in obj for x in _find_key(v, key)]
    return []


# -- output names cannot leave the output folder ------------------------------------------------------
def test_reconstruct_output_names_stay_inside_out(ckpt: Path, imgs: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs named with '..' parts, absolute paths, and a symlinked sub-folder pointing outside."""
    src = tmp_path / "a" / "b"
    src.mkdir(parents=True)
    Image.open(imgs / "im0.png").save(src / "x.png")
    Image.open(imgs / "im1.png").save(tmp_path / "outside.png")
    monkeypatch.chdir(src)
    out = tmp_path / "out"
    code, text = cli("reconstruct", ckpt, "--data", "../../outside.png", "--data", str(src / "x.png"),
                     "--data", "./../b/x.png", "--out", out, "--device", "cpu")
    assert code == 0, text
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    produced = [w for w in written if w.startswith("out/")]
    assert len(produced) == 4 and "out/comparison.png" in produced, written  # 3 inputs + the grid
    assert all(Path(tmp_path / w).resolve().is_relative_to(out.resolve()) for w in produced)
    assert sorted(set(written) - set(produced)) == ["a/b/x.png", "outside.png"]  # inputs untouched
    # A folder whose sub-folder is a symlink to outside --out's tree: outputs still land inside.
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "cls").symlink_to(src, target_is_directory=True)
    out2 = tmp_path / "out2"
    code, text = cli("reconstruct", ckpt, "--data", folder, "--out", out2, "--device", "cpu")
    assert code == 0, text
    assert sorted(p.relative_to(out2).as_posix() for p in out2.rglob("*.png")) == ["cls/x.png", "comparison.png"]


def test_tsne_csv_keeps_hostile_names_as_data(ckpt: Path, tmp_path: Path) -> None:
    """File names with commas, quotes, newlines and spreadsheet formulas are CSV fields, not rows or
    paths: the CSV lands beside --out and reads back with one row per image, names intact."""
    folder = tmp_path / "names"
    folder.mkdir()
    names = ['a,b.png', 'quote".png', "new\nline.png", "=cmd()|x.png", "dots..in..name.png"]
    rng = np.random.default_rng(2)
    for n in names:
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(folder / n)
    out = tmp_path / "map" / "tsne.png"
    code, text = cli("tsne", ckpt, "--data", folder, "--split", "all", "--method", "pca", "--out", out, "--device",
                     "cpu")
    assert code == 0, text
    csv_files = sorted(p.name for p in out.parent.iterdir() if p.suffix == ".csv")
    assert csv_files == ["tsne.csv"], csv_files
    with open(out.parent / "tsne.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(names)
    assert sorted(Path(r["name"]).name for r in rows) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map", "names"]  # nothing written elsewhere


# -- hostile training configs and run folders (issue 20: 1, 2, 10, 15, 16; issue 21.8) --------------------
TOML_CASES: dict[str, str] = {
    'epochs = "ten"': "epochs must be a whole number, got 'ten'",
    "epochs = true": "epochs must be a whole number, got True",
    "model = 5": "model must be a table of model options, got 5",
    'betas = "abc"': "betas must be a list of numbers, got 'abc'",
    "betas = [0.5]": "betas must be a list of numbers, got [0.5]",
    "image_size = 32.5": "image_size must be a whole number, got 32.5",
    "data = 42": "data must be a string, got 42",
    "device = 1": "device must be a string, got 1",
    "bogus = 1": "unknown option 'bogus'",
    "family = 5": "family must be a string",
    '[model]\nbogus = 1': "conv-ae has no model option 'bogus'",
    '[model]\nwidths = "a"': "model option widths must be a list, got 'a'",
    "[model]\nlatent_dim = 2.5": "model option latent_dim must be a whole number, got 2.5",
    'max_time = "soon"': "--max-time must be a duration such as 600 (seconds), 90m, 1h30m",
    "grad_accum_steps = 0": "--grad-accum-steps must be at least 1, got 0",
}


@pytest.mark.parametrize("body", list(TOML_CASES))
def test_config_file_values_of_the_wrong_type_are_one_line_errors(body: str, tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(body + "\n" if body.startswith("family") else f'family = "conv-ae"\n{body}\n')
    args = [a.replace("{out}", str(tmp_path / "o")) for a in BASE["train"][2:]]
    code, out = cli("train", "--config", toml, *args)
    assert code == 2 and out.startswith("Error: ") and "\n" not in out, out
    assert TOML_CASES[body] in out and (str(toml) in out or "family" in body), out
    assert not (tmp_path / "o").exists()


def test_config_files_that_are_not_utf8_text_or_not_regular_files(tmp_path: Path) -> None:
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b'family = "conv-ae"\ndata = "caf\xe9"\n')
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path, needle in ((binary, "is not UTF-8 text"), (fifo, "is a FIFO (named pipe), not a regular file"),
                         (tmp_path, "not a regular file")):
        code, out = cli("train", "--config", path, "--out", tmp_path / "o")
        assert code == 2 and out.startswith(f"Error: --config {path} ") and needle in out, out
        assert "\n" not in out and not (tmp_path / "o").exists()


def _saved_config(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "config.json").read_text())


CONFIG_JSON_CASES: dict[str, tuple[Any, str]] = {
    "a list": ([1, 2], "must hold a JSON object of options, not list"),
    "no family": ({"family": None}, "names no model family"),
    "unknown family": ({"family": "no-such"}, "unknown model family 'no-such'"),
    "lr text": ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    "batch size 0": ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    "epochs true": ({"epochs": True}, "epochs must be a whole number, got True"),
    "model a list": ({"model": [1]}, "model must be a table of model options, got [1]"),
    "bad model option": ({"model": {"widths": "x"}}, "model option widths must be a list, got 'x'"),
    "unknown key": ({"bogus": 1}, "unknown option 'bogus'"),
    "not JSON": ("{", "config.json is missing or unreadable"),
}


@pytest.mark.parametrize("case", list(CONFIG_JSON_CASES))
def test_resume_validates_the_run_config(case: str, run_dir: Path, tmp_path: Path) -> None:
    import shutil

    change, needle = CONFIG_JSON_CASES[case]
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    if isinstance(change, dict):
        text = json.dumps({**_saved_config(run_dir), **change})
    else:
        text = change if isinstance(change, str) else json.dumps(change)
    (run / "config.json").write_text(text)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, out = cli("train", "--resume", run, "--device", "cpu")
    assert code == 2 and out.startswith(f"Error: cannot resume {run}: ") and "\n" not in out, out
    assert needle in out, out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


RUN_FOLDER_CASES = ["--out holds a user's files", "--resume as another family", "--resume with another --lr",
                    "--resume with another -m", "folder locked by a live process"]


@pytest.mark.parametrize("case", RUN_FOLDER_CASES)
def test_run_folder_misuse_is_refused_and_loses_nothing(case: str, run_dir: Path, tmp_path: Path) -> None:
    import shutil

    from aecli.locking import FolderLock

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    base = [a.replace("{out}", str(run)) for a in BASE["train"]]
    if case == "--out holds a user's files":
        for name in ("state.safetensors", "config.json", "command.txt"):
            (run / name).unlink()
        args, needle = base, "is not empty (best.safetensors, grids, last.safetensors"
    elif case == "--resume as another family":
        args, needle = ["train", "conv-vae", "--resume", str(run)], "is a conv-ae run; it cannot continue as conv-vae"
    elif case == "--resume with another --lr":
        args, needle = ["train", "--resume", str(run), "--lr", "0.5"], "cannot change --lr 0.5 (the run has 0.001)"
    elif case == "--resume with another -m":
        args, needle = ["train", "--resume", str(run), "-m", "widths=8,8"], "cannot change -m widths=8,8 (the run has 4,8)"
    else:
        args, needle = base[:-2] + ["--resume", "auto", "--out", str(run)], "is in use by"
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with FolderLock(run, "test") if case.startswith("folder locked") else contextlib.nullcontext():
        code, out = cli(*args)
    assert code == 2 and out.startswith("Error: ") and "\n" not in out, out
    assert needle in out, out
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
