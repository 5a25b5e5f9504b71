"""Issue 20, "nothing lost, nothing hung": special files, absurd sizes, damaged side files, terminal
escapes, closed standard output. One right answer per case: the exit code and the one-line message.

Cases that could hang if they regressed (FIFOs, signals, pipes) run `aecli` in a child process with a
timeout, so a regression fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import tiny_model
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from aecli.checkpoint import save_model
from aecli.cli import app
from aecli.data import open_source
from aecli.data.decode import MAX_ASPECT_RATIO, decode_task
from aecli.data.identity import check_recorded_source, source_key
from aecli.data.spec import DataSpec
from aecli.errors import DataError
from aecli.inference.sample import _plan

runner = CliRunner()


def cli(*args: object) -> tuple[int, str]:
    """`aecli ARGS` in-process: (exit code, output); never a traceback."""
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output.strip()


TIMEOUT = 300  # seconds before a child counts as hung; generous, a busy 2-core machine is slow
TRAIN = ["train", "conv-ae", "--image-size", "16", "--channels", "1", "-m", "widths=4,8", "-m", "latent_dim=4",
         "--batch-size", "4", "--device", "cpu", "--workers", "1"]


def aecli(*args: object, shell_suffix: str = "", timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m aecli ARGS` in a child (through bash when ``shell_suffix`` redirects or pipes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "aecli", *map(str, args)]
    if shell_suffix:
        quoted = " ".join(f"'{c}'" for c in command)
        return subprocess.run(["bash", "-c", f"{quoted} {shell_suffix}"], capture_output=True, text=True,
                              timeout=timeout, env=env)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def one_error_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if not line.startswith("Warning: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in text, text
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def ckpt(work: Path) -> Path:
    torch.manual_seed(0)
    model = tiny_model("conv-vae", 16, 1)
    return save_model(work / "vae.safetensors", model, DataSpec(16, 1, model.value_range, [], "shapes:64"))


def _pngs(folder: Path, count: int, size: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


# -- 3, 6, 13: sample file naming ------------------------------------------------------------------------
def test_sample_per_class_folders_never_collide(work: Path, tmp_path: Path) -> None:
    """Classes "a:b" and "a_b" clean up to the same folder name: each still gets its own folder."""
    torch.manual_seed(0)
    model = tiny_model("conv-vae", 16, 1, num_classes=3)
    cond = save_model(work / "cond.safetensors", model, DataSpec(16, 1, model.value_range, ["a:b", "a_b", "A_B"], "x"))
    code, text = cli("sample", cond, "--per-class", 2, "--out", tmp_path / "s", "--device", "cpu")
    assert code == 0 and text.endswith("6 samples in " + str(tmp_path / "s") + ": 6 written"), text
    files = sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s").rglob("*.png"))
    assert files == ["A_B-2/sample_0000.png", "A_B-2/sample_0001.png", "a_b-1/sample_0000.png",
                     "a_b-1/sample_0001.png", "a_b/sample_0000.png", "a_b/sample_0001.png"]  # unique ignoring case
    # Folder c holds class c's samples: sample 0 of each class is the same draw decoded with its label.
    first = [np.asarray(Image.open(tmp_path / "s" / d / "sample_0000.png")) for d in ("a_b", "a_b-1", "A_B-2")]
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])


def test_sample_file_names_do_not_depend_on_n() -> None:
    """A folder grown past 10⁶ keeps its names: sample i is always sample_{i:06d}.png."""
    model = SimpleNamespace(config=SimpleNamespace(num_classes=0), is_conditional=False, family="conv-vae")
    small, huge = _plan(model, 10, None, None, [], None), _plan(model, 10**9, None, None, [], None)
    assert [small.name(i) for i in (0, 9)] == [huge.name(i) for i in (0, 9)] == ["sample_000000.png",
                                                                                   "sample_000009.png"]
    assert huge.name(999_999) == "sample_999999.png" and huge.name(10**6) == "sample_1000000.png"
    assert huge.name(10**9 - 1) == "sample_999999999.png" and huge.label(10**9 - 1) is None
    per_class = _plan(SimpleNamespace(config=SimpleNamespace(num_classes=2), is_conditional=True, family="x"),
                      None, None, 20_000, ["x", "y"], None)
    assert per_class.name(0) == "x/sample_0000.png" and per_class.name(20_000 + 12_345) == "y/sample_12345.png"
    assert per_class.label(19_999) == 0 and per_class.label(20_000) == 1


# -- 7: derived output names ------------------------------------------------------------------------------
def test_tsne_refuses_to_overwrite_a_file_it_did_not_write(ckpt: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    code, text = cli("tsne", ckpt, "--data", "shapes:32", "--out", run / "metrics.png", "--method", "pca",
                     "--device", "cpu")
    assert code == 2 and one_error_line(text) == (
        f"Error: --out {run / 'metrics.png'} would overwrite {run / 'metrics.csv'} (the table goes beside the "
        "figure), which `aecli tsne` did not write; choose another --out"), text
    assert (run / "metrics.csv").read_text() == "epoch,loss\n1,0.5\n" and not (run / "metrics.png").exists()
    # Its own table is replaced on a rerun.
    for _ in range(2):
        code, text = cli("tsne", ckpt, "--data", "shapes:32", "--out", run / "map.png", "--method", "pca",
                         "--device", "cpu")
        assert code == 0, text


# -- 11, 24: special files --------------------------------------------------------------------------------
class FifoWatch:
    """Makes a regression that opens ``fifo`` fail instead of hang: after ``grace`` seconds a writer
    keeps opening it (which releases a reader blocked in open()) and records that it had to."""

    def __init__(self, fifo: Path, grace: float = 60.0) -> None:
        self.fifo, self.grace, self.unblocked = fifo, grace, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        if self._stop.wait(self.grace):
            return
        while not self._stop.wait(0.2):
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while nobody reads
                self.unblocked = True
            except OSError:
                pass

    def __enter__(self) -> "FifoWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_fifo_in_a_data_folder_is_skipped_not_waited_for(tmp_path: Path) -> None:
    data = _pngs(tmp_path / "data", 4)
    os.mkfifo(data / "pipe.png")
    with FifoWatch(data / "pipe.png") as watch, pytest.warns(UserWarning) as caught:
        got = open_source(str(data), image_size=16, channels=1, split="all")
    assert not watch.unblocked and len(got) == 4
    assert [str(w.message) for w in caught] == [f"skipped 1 of 5 image file(s) in folder {data} that could not be "
                                                "read: 'pipe.png' (a FIFO (named pipe), not a regular file)"]


@pytest.mark.parametrize("case", ["info FIFO", "train --config FIFO", "reconstruct --data FIFO.png"])
def test_fifo_as_checkpoint_config_or_image_is_refused(case: str, ckpt: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with FifoWatch(fifo) as watch:
        if case == "info FIFO":
            code, text = cli("info", fifo)
            expected = f"Error: checkpoint {fifo} is a FIFO (named pipe), not a regular file; give an aecli .safetensors file"
        elif case == "train --config FIFO":
            code, text = cli(*TRAIN, "--data", "shapes:16", "--config", fifo, "--out", tmp_path / "run")
            expected = f"Error: --config {fifo} is a FIFO (named pipe), not a regular file; give a TOML file"
        else:
            with pytest.warns(UserWarning, match="a FIFO"):
                code, text = cli("reconstruct", ckpt, "--data", fifo, "--out", tmp_path / "rec", "--device", "cpu")
            expected = (f"Error: none of the 1 image file(s) of file {fifo} could be read (first: '{fifo}'); "
                        "check that they are valid images")
    assert not watch.unblocked and code == 2 and one_error_line(text) == expected, text


def test_device_file_as_checkpoint_is_refused() -> None:
    code, text = cli("info", "/dev/zero")
    assert code == 2 and text == ("Error: checkpoint /dev/zero is a character device, not a regular file; give an "
                                  "aecli .safetensors file"), text


_BLOCKED_CHILD = textwrap.dedent("""
    import sys
    import aecli.data.sources as sources
    fifo, ready = sys.argv[1:3]
    def blocked(*args, **kwargs):  # a stalled mount: open() never returns
        open(ready, "w").close()
        open(fifo, "rb")
    sources.open_splits = blocked
    sys.argv = ["aecli", *sys.argv[3:]]
    from aecli.cli import main
    main()
""")


def test_stop_signal_ends_a_process_blocked_before_training(tmp_path: Path) -> None:
    """SIGTERM while set-up is stuck in a system call ends the process (exit 75: the same command
    starts it again), instead of setting a flag that a blocked open() never reads."""
    fifo, ready = tmp_path / "never", tmp_path / "ready"
    os.mkfifo(fifo)
    child = subprocess.Popen([sys.executable, "-c", _BLOCKED_CHILD, str(fifo), str(ready), *TRAIN, "--data",
                              "shapes:16", "--out", str(tmp_path / "run")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for _ in range(TIMEOUT * 10):
            if ready.exists() or child.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), child.communicate()
        time.sleep(0.5)  # into the blocking open()
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 75 and one_error_line(err) == (
        "Error: stopped by SIGTERM before training started; nothing was trained — run the same command again"), err


# -- 13: absurd sizes are refused before anything is allocated --------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["train", "conv-ae", "--data", "shapes:1000000000", "--image-size", "16", "--out", "{tmp}/run"],
     "Error: shapes:1000000000 is more than the 1,000,000 shapes aecli draws; give shapes:N with N <= 1000000"),
    (["tsne", "{ckpt}", "--data", "shapes:1000000000", "--out", "{tmp}/t.png"],
     "Error: shapes:1000000000 is more than the 1,000,000 shapes aecli draws; give shapes:N with N <= 1000000"),
    (["sample", "{ckpt}", "--n", "1000000000", "--out", "{tmp}/s.png", "--device", "cpu"],
     "Error: --n 1000000000 gives a grid of 1000000000 images of 16 px, more than one PNG holds (at most 4096 at "
     "this size); give a folder as --out"),
    (["interpolate", "{ckpt}", "--steps", "100000", "--out", "{tmp}/i.png", "--device", "cpu"],
     "Error: --steps 100000 gives a grid of 100000 images of 1 px, more than one PNG holds (at most 4096 at this "
     "size); use fewer steps"),
    (["interpolate", "{ckpt}", "--steps", "1000000", "--gif", "{tmp}/i.gif", "--out", "{tmp}/i.png"],
     "Error: --steps 1000000 gives a grid of 1000000 images of 1 px, more than one PNG holds (at most 4096 at this "
     "size); use fewer steps"),
], ids=["train shapes:1e9", "tsne shapes:1e9", "sample --n 1e9 grid", "interpolate --steps 1e5",
        "interpolate --steps 1e6 --gif"])
def test_absurd_sizes_are_refused_before_allocating(args: list[str], message: str, ckpt: Path,
                                                     tmp_path: Path) -> None:
    code, text = cli(*[a.format(tmp=tmp_path, ckpt=ckpt) for a in args])
    assert code == 2 and text == message, text
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.gif"))


def test_interpolate_grid_is_bounded_by_pixels_too(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_model("conv-vae", 256, 1)
    big = save_model(tmp_path / "big.safetensors", model, DataSpec(256, 1, model.value_range, [], "x"))
    code, text = cli("interpolate", big, "--steps", 3000, "--out", tmp_path / "i.png", "--device", "cpu")
    assert code == 2 and text == ("Error: --steps 3000 gives a grid of 3000 images of 256 px, more than one PNG "
                                  "holds (at most 2048 at this size); use fewer steps"), text


def test_decoded_set_larger_than_memory_is_refused(tmp_path: Path) -> None:
    with mock.patch("aecli.data.sources.available_memory", return_value=2**30):
        with pytest.raises(DataError) as err:
            open_source("shapes:100000", image_size=64, channels=3, split="all")
        assert str(err.value) == ("shapes (100000 images): 100,000 images of 3×64×64 need 1.1 GiB decoded, more "
                                  "than the 1.0 GiB of memory available; use fewer images, a smaller --image-size "
                                  "or --cache DIR (memory-mapped)")
        code, text = cli(*TRAIN, "--data", "shapes:100000", "--image-size", "128", "--out", tmp_path / "run")
        assert code == 2 and text.startswith("Error: shapes (100000 images): 90,000 images of 1×128×128 need "), text
        # The memory-mapped cache is not bound by memory.
        data = open_source("shapes:40", image_size=16, channels=1, split="all", cache_dir=str(tmp_path / "c"))
        assert len(data) == 40


# -- 14: bounded decoding -------------------------------------------------------------------------------
def test_elongated_and_oversized_images_are_skipped_before_decoding(tmp_path: Path) -> None:
    data = _pngs(tmp_path / "data", 4)
    Image.new("L", (1, 200_000), 128).save(data / "strip.png")  # ~600 bytes of PNG
    assert (data / "strip.png").stat().st_size < 2000
    Image.new("L", (20 * MAX_ASPECT_RATIO, 20), 128).save(data / "wide-ok.png")  # exactly at the bound: kept
    with pytest.warns(UserWarning) as caught:
        got = open_source(str(data), image_size=64, channels=1, split="all")
    assert sorted(got.names) == ["im0.png", "im1.png", "im2.png", "im3.png", "wide-ok.png"]
    assert [str(w.message) for w in caught] == [
        f"skipped 1 of 6 image file(s) in folder {data} that could not be read: 'strip.png' (1×200000 is more "
        f"elongated than {MAX_ASPECT_RATIO}:1)"]
    with mock.patch("aecli.data.decode.MAX_PIXELS", 399):
        assert decode_task((str(data / "im0.png"), 16, 1)) == (None, "20×20 is 0 Mpx, over the 0 Mpx aecli decodes")


# -- 17: report with damaged run files -----------------------------------------------------------------
def test_report_leaves_out_damaged_runs_with_a_warning(tmp_path: Path) -> None:
    good = tmp_path / "good"
    code, text = cli(*TRAIN, "--data", "shapes:16", "--epochs", "1", "--out", good)
    assert code == 0, text
    (good / "evaluation.json").write_text("[]")
    damaged = {"malformed": "{not json", "list": "[1, 2]", "nofamily": '{"epochs": 1}'}
    for name, config in damaged.items():  # each with a good checkpoint: only the config is damaged
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(config)
        shutil.copy(good / "best.safetensors", tmp_path / name / "best.safetensors")  # a run, damaged config
    with pytest.warns(UserWarning) as caught:
        code, text = cli("report", good, *(tmp_path / n for n in damaged), "--out", tmp_path / "r.md")
    assert code == 0 and text == f"wrote {tmp_path / 'r.md'} (1 runs)", text
    assert sorted(str(w.message) for w in caught) == sorted([
        f"{good / 'evaluation.json'} is not readable JSON from `aecli evaluate --json-out` (an object with \"rows\"); "
        "its figures are left out",
        f"{tmp_path / 'malformed' / 'config.json'} is not readable JSON (JSONDecodeError); that run is left out of "
        "the report",
        f"{tmp_path / 'list' / 'config.json'} is not a JSON object; that run is left out of the report",
        f"{tmp_path / 'nofamily' / 'config.json'} names no model family (\"family\"); that run is left out of the "
        "report"])
    assert "## good: `conv-ae`" in (tmp_path / "r.md").read_text()
    with pytest.warns(UserWarning):
        code, text = cli("report", tmp_path / "list", "--out", tmp_path / "r2.md")
    assert code == 2 and text == ("Error: none of the 1 run folder(s) could be read (see the warnings above); fix "
                                  "or leave out the damaged files"), text


# -- 18: file names that are not UTF-8 -----------------------------------------------------------------
def test_tsne_writes_non_utf8_file_names_escaped(ckpt: Path, tmp_path: Path) -> None:
    data = _pngs(tmp_path / "data", 6)
    os.rename(data / "im0.png", os.path.join(os.fsencode(data), b"caf\xe9.png"))
    code, text = cli("tsne", ckpt, "--data", data, "--split", "all", "--method", "pca", "--out", tmp_path / "t.png",
                     "--device", "cpu")
    assert code == 0, text
    rows = (tmp_path / "t.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "index,name,label,class_name,x,y" and len(rows) == 7
    assert sorted(r.split(",")[1] for r in rows[1:]) == ["caf\\xe9.png", "im1.png", "im2.png", "im3.png", "im4.png",
                                                         "im5.png"]


# -- 19: damaged cache ----------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, why", [
    ("[]", "sidecar is not a JSON object"),
    ({"rows": [0, 1, 99]}, "inconsistent rows/count/skipped_rows"),
    ({"rows": "0,1"}, "inconsistent rows/count/skipped_rows"),
    ({"skipped_rows": [0]}, "inconsistent rows/count/skipped_rows"),
    ({"count": "6"}, "inconsistent rows/count/skipped_rows"),
    ("{cut", "unreadable sidecar (JSONDecodeError)"),
], ids=["list", "row out of range", "rows not a list", "good file marked skipped", "count not a number", "cut"])
def test_damaged_cache_sidecar_is_rebuilt(damage: object, why: str, tmp_path: Path) -> None:
    data = _pngs(tmp_path / "data", 6)
    fresh = open_source(str(data), image_size=16, channels=1, split="all")
    cache = tmp_path / "cache"
    open_source(str(data), image_size=16, channels=1, split="all", cache_dir=str(cache))
    [sidecar] = cache.glob("*.json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(damage if isinstance(damage, str) else json.dumps({**meta, **damage}))
    with pytest.warns(UserWarning) as caught:
        again = open_source(str(data), image_size=16, channels=1, split="all", cache_dir=str(cache))
    assert [str(w.message) for w in caught] == [f"cache entry {sidecar} is damaged ({why}); rebuilding it"]
    assert torch.equal(again.take(list(range(6))), fresh.take(list(range(6)))) and again.skipped == []
    assert json.loads(sidecar.read_text()) == meta  # rebuilt as it was


# -- 20: terminal escapes and strict JSON in `aecli info` ------------------------------------------------
def test_info_escapes_control_characters_and_writes_strict_json(ckpt: Path, tmp_path: Path) -> None:
    tensors = load_file(str(ckpt))
    with safe_open(str(ckpt), "pt") as fh:
        meta = fh.metadata()
    training = json.loads(meta.get("training", "{}"))
    meta["created"] = "\x1b[2J\x1b[H2026"  # clear the screen
    meta["training"] = json.dumps({**training, "note": "\x1b]0;pwned\x07[bold]x[/bold]", "best_val": float("nan"),
                                   "last": float("inf")})
    crafted = tmp_path / "crafted.safetensors"
    save_file(tensors, str(crafted), metadata=meta)
    code, text = cli("info", crafted)
    assert code == 0, text
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text), repr(text)
    assert "\\x1b[2J\\x1b[H2026" in text and "\\x1b]0;pwned\\x07[bold]x[/bold]" in text
    code, text = cli("info", crafted, "--json")
    assert code == 0, text
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert summary["training"]["best_val"] is None and summary["training"]["last"] is None
    assert summary["created"] == "\x1b[2J\x1b[H2026" and "\x1b" not in text  # escaped as \u001b in JSON


# -- 21: which kind of folder ---------------------------------------------------------------------------
def test_source_kind_is_decided_by_majority_and_said(tmp_path: Path) -> None:
    pngs = _pngs(tmp_path / "pngs", 6)
    (pngs / "latents.npy").write_bytes(b"")  # empty: not even a valid array
    with pytest.warns(UserWarning) as caught:
        got = open_source(str(pngs), image_size=16, channels=1, split="all")
    assert len(got) == 6 and [str(w.message) for w in caught] == [
        f"{pngs} holds 6 image file(s) and 1 .npy file(s) (e.g. 'latents.npy'): read as an image folder, the .npy "
        f"files are ignored (write quickdraw:{pngs} to read them as QuickDraw data instead)"]
    draw = tmp_path / "draw"
    draw.mkdir()
    for name in ("cat", "dog"):
        np.save(draw / f"{name}.npy", np.zeros((3, 784), dtype=np.uint8))
    Image.new("L", (8, 8)).save(draw / "preview.png")
    with pytest.warns(UserWarning, match=r"holds 2 \.npy file\(s\) and 1 image file\(s\): read as QuickDraw"):
        got = open_source(str(draw), image_size=28, channels=1, split="all")
    assert len(got) == 6 and got.class_names == ["cat", "dog"]
    assert len(open_source(f"images:{draw}", image_size=8, channels=1, split="all")) == 1  # explicit kind
    # The prefix names the same folder (same split identity) and passes the checks of recorded sources.
    assert source_key(f"images:{draw}") == source_key(str(draw)) == f"path:{os.path.realpath(draw)}"
    with pytest.raises(DataError) as err:
        check_recorded_source("quickdraw:/proc", "c.safetensors")
    assert str(err.value) == ("c.safetensors records 'quickdraw:/proc' as its training data, a system folder aecli "
                              "will not read by default; pass --data SRC")
    # An empty .npy read as QuickDraw (explicitly, or alone in its folder): exit 2 naming it, not "Aborted."
    only_npy = tmp_path / "only"
    only_npy.mkdir()
    (only_npy / "x.npy").write_bytes(b"")
    expected = f"Error: cannot read QuickDraw file {only_npy / 'x.npy'}: No data left in file; expected a NumPy .npy array"
    for source in (only_npy, f"quickdraw:{only_npy}"):
        code, text = cli(*TRAIN, "--data", source, "--image-size", "28", "--out", tmp_path / "run")
        assert code == 2 and text == expected, text
    code, text = cli(*TRAIN, "--data", f"images:{tmp_path / 'missing'}", "--out", tmp_path / "run")
    assert code == 2 and text == (f"Error: images:{tmp_path / 'missing'}: {tmp_path / 'missing'} is not a folder; "
                                  "give images:DIR with an existing folder"), text


# -- 22: warnings as one line, naming only options the command has ---------------------------------------
def test_warnings_are_one_line_and_suggest_strict_data_only_where_it_exists(ckpt: Path, tmp_path: Path) -> None:
    data = _pngs(tmp_path / "data", 6, size=16)
    (data / "broken.png").write_bytes(b"not a png")
    done = aecli("reconstruct", ckpt, "--data", data, "--split", "all", "--out", tmp_path / "rec", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "broken.png" in line]
    assert warned == [f"Warning: skipped 1 of 7 image file(s) in folder {data} that could not be read: 'broken.png' "
                      "(cannot identify image file)"], done.stderr
    assert "DataWarning" not in done.stderr and ".py:" not in done.stderr
    code, text = cli("evaluate", ckpt, "--data", data, "--split", "all", "--metrics", "psnr", "--device", "cpu")
    assert code == 0 and text.splitlines()[-1] == (f"warning: skipped 1 of 7 image file(s) in folder {data} that "
                                                   "could not be read: 'broken.png' (cannot identify image file)"), text
    # train (the command with --strict-data) passes strict=False, which adds the hint; the others pass nothing.
    for strict, hint in ((False, " (use --strict-data to make this an error)"), (None, "")):
        with pytest.warns(UserWarning) as caught:
            open_source(str(data), image_size=16, channels=1, split="all", strict=strict)
        assert [str(w.message) for w in caught] == [f"skipped 1 of 7 image file(s) in folder {data} that could not "
                                                    f"be read: 'broken.png' (cannot identify image file){hint}"]


# -- 23: closed standard output ---------------------------------------------------------------------------
def test_closed_stdout_is_refused_by_commands_that_only_print() -> None:
    done = aecli("models", shell_suffix=">&-")
    assert done.returncode == 2 and one_error_line(done.stderr) == (
        "Error: standard output is closed, so the result of `aecli models` would be lost; redirect it to a file "
        "(> FILE) or to /dev/null"), done.stderr


def test_training_continues_when_its_output_pipe_closes(tmp_path: Path) -> None:
    """`aecli train | head -1`: printing stops at the first line, training runs to the end (exit 0)."""
    run = tmp_path / "run"
    done = aecli(*TRAIN, "--data", "shapes:24", "--epochs", "2", "--log-every", "1", "--out", run,
                 shell_suffix="| head -1; echo \"exit=${PIPESTATUS[0]}\" >&2")
    assert done.stdout.count("\n") == 1 and "exit=0" in done.stderr and "Error" not in done.stderr, done.stderr
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(row.get("epoch", 0) for row in epochs) == 2 and (run / "best.safetensors").exists()


# -- 24: non-finite options, device files, full disk --------------------------------------------------------
def test_non_finite_scale_is_refused(ckpt: Path, tmp_path: Path) -> None:
    imgs = _pngs(tmp_path / "imgs", 2)
    for scale in ("nan,1", "0,inf", "-inf"):
        code, text = cli("arithmetic", ckpt, "--plus", imgs, "--minus", imgs, "--apply", imgs, "--scale", scale,
                         "--out", tmp_path / "a.png", "--device", "cpu")
        shown = ",".join(f"{float(v):g}" for v in scale.split(","))
        assert code == 2 and text == f"Error: --scale values must be finite numbers, got {shown}", text
    assert not (tmp_path / "a.png").exists()


def test_full_disk_while_sampling_names_the_file(ckpt: Path, tmp_path: Path) -> None:
    def full(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"partial")
        raise OSError(28, "No space left on device")  # as a write to an open file reports it: no file name

    with mock.patch.object(Image.Image, "save", full):
        code, text = cli("sample", ckpt, "--n", 3, "--out", tmp_path / "s", "--device", "cpu")
    assert code == 1 and text == (f"Error: No space left on device ({tmp_path / 's' / 'sample_000000.png'}); check "
                                  "free space and permissions"), text
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["aecli-sample.json"]  # no partial or temp file
