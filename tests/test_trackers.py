"""`aecli train --tracker …`: every tracker records the same scalars (names, steps, values) and grids
as the run's own log, offline, and a missing package is a one-line error before anything starts."""

from __future__ import annotations

import csv
import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest
from conftest import tiny_kwargs
from typer.testing import CliRunner

from aecli.cli import app
from aecli.errors import UsageError
from aecli.training import TrainConfig, train

OPTIONAL = [t for t in ("wandb", "mlflow") if importlib.util.find_spec(t) is not None]


def _cfg(out: Path, trackers: list[str]) -> TrainConfig:
    model = tiny_kwargs("conv-vae", 32, 1)
    model.pop("image_size", None)
    model.pop("channels", None)
    return TrainConfig(family="conv-vae", model=model, data="shapes:48", image_size=32, channels=1, epochs=2,
                       batch_size=16, out=str(out), log_every=1, trackers=trackers, workers=1, beta=0.1)


@pytest.fixture(scope="module")
def run(tmp_path_factory, monkeypatch_module) -> Path:
    for var in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch_module.delenv(var, raising=False)  # the offline defaults are under test
    monkeypatch_module.setenv("WANDB_SILENT", "true")
    out = tmp_path_factory.mktemp("trk") / "run"
    train(_cfg(out, ["csv", "tensorboard", *OPTIONAL]))
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _csv_scalars(run: Path) -> dict[tuple[str, int], float]:
    with open(run / "csv" / "scalars.csv", newline="") as fh:
        return {(r["tag"], int(r["step"])): float(r["value"]) for r in csv.DictReader(fh)}


def test_csv_holds_the_run_log_under_tensorboard_names(run: Path) -> None:
    scalars = _csv_scalars(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("kind") == "epoch" and r["split"] == "val"]
    assert [(s, v) for (t, s), v in scalars.items() if t == "recon/val"] == [(r["step"], r["recon"]) for r in val]
    steps = [r for r in rows if r.get("kind") == "step"]
    assert [s for (t, s) in scalars if t == "recon/train_step"] == [r["step"] for r in steps]
    with open(run / "csv" / "images.csv", newline="") as fh:
        images = [(r["tag"], int(r["step"])) for r in csv.DictReader(fh)]
    assert images == [(tag, r["step"]) for r in val for tag in ("recon", "samples")]
    assert json.loads((run / "csv" / "hparams.json").read_text())["family"] == "conv-vae"


def test_tensorboard_has_the_same_scalars(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tb = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    final = {tag[len("hparam/"):]: tb.pop((tag, step)) for tag, step in list(tb) if tag.startswith("hparam/")}
    assert final == pytest.approx(json.loads((run / "csv" / "final.json").read_text()), rel=1e-6)
    scalars = _csv_scalars(run)
    assert tb.keys() == scalars.keys()
    for key, value in scalars.items():
        assert tb[key] == pytest.approx(value, rel=1e-6)  # event files store float32


def _wandb_records(path: Path):
    """A .wandb file read without wandb's reader: a 7-byte ident, then LevelDB-log records (4-byte CRC,
    2-byte length, 1-byte type: full/first/middle/last) in 32 KiB blocks, each a protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4) and buf:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_wandb_offline_run_has_the_same_scalars_and_grids(run: Path) -> None:
    if "wandb" not in OPTIONAL:
        pytest.skip("wandb is not installed (pip install 'aecli[wandb]')")
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1  # offline by default: nothing was sent
    logged: dict[tuple[str, int], object] = {}
    config: dict[str, object] = {}
    for rec in _wandb_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            step = items["_step"]
            logged.update({(k, step): v for k, v in items.items() if not k.startswith("_")})
        elif kind in ("config", "run"):  # the config arrives with the run record, updates on their own
            update = rec.config.update if kind == "config" else rec.run.config.update
            config.update({i.key: json.loads(i.value_json) for i in update})
    scalars = _csv_scalars(run)
    assert {k: v for k, v in logged.items() if not k[0].startswith("grids/")} == scalars
    epochs = sorted({step for (tag, step) in scalars if tag == "recon/val"})
    assert {k for k in logged if k[0].endswith("/_type")} == {
        (f"grids/{tag}/_type", step) for step in epochs for tag in ("recon", "samples")}
    assert config["family"] == "conv-vae"


def test_mlflow_local_store_has_the_same_scalars_and_grids(run: Path) -> None:
    if "mlflow" not in OPTIONAL:
        pytest.skip("mlflow is not installed (pip install 'aecli[mlflow]')")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    [mlrun] = client.search_runs([client.get_experiment_by_name("aecli").experiment_id])
    assert mlrun.data.params["family"] == "conv-vae" and mlrun.info.status == "FINISHED"
    scalars = _csv_scalars(run)
    logged = {(tag, m.step): m.value for tag in {t for t, _ in scalars}
              for m in client.get_metric_history(mlrun.info.run_id, tag)}
    assert logged == pytest.approx(scalars)
    grids = {f.path for f in client.list_artifacts(mlrun.info.run_id, "grids/recon")}
    assert grids == {"grids/recon/recon_e001.png", "grids/recon/recon_e002.png"}


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_package_is_one_line_before_training(tmp_path: Path, monkeypatch, name: str) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    with pytest.raises(UsageError, match=rf"pip install 'aecli\[{name}\]'"):
        train(_cfg(tmp_path / "run", ["csv", name]))
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "csv").exists()


def test_unknown_tracker_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "conv-ae", "--tracker", "comet", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--tracker must be one of" in result.output
    assert len(result.output.strip().splitlines()) == 1
