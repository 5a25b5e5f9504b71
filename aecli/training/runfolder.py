"""The run folder: which folder a command trains into, whether it may, and what a resume may change.

Rules (issues 20 and 21): a fresh run never writes into a folder that holds something else; a resumed
run continues with its own recorded settings, and only options that cannot change its result may be
given differently; a run that fails before training leaves no half-made folder behind.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from aecli.atomic import write_text
from aecli.errors import UsageError
from aecli.locking import LOCK_FILE
from aecli.training.config import TrainConfig, cli_flag, resumable
from aecli.training.rundir import RunDir

# Options a resumed run may take with new values (declared on each option: OptionInfo.resumable).
RESUMABLE = resumable()


def default_run_dir(family: str) -> Path:
    """runs/<family>-<time>, plus the Slurm job (and array task) id so array tasks that start in the
    same second never share a folder."""
    name = f"{family}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        name += f"-job{job}" + (f"_{task}" if task else "")
    return Path("runs") / name


def _shown(value: Any) -> str:
    """A value as it is written on the command line (widths 4,8, not (4, 8))."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def resume_dir(resume: str | None, out: str | None) -> Path | None:
    """The run folder to continue, or None for a fresh run. ``resume``: a folder, "auto" or None."""
    if resume == "auto":
        if not out:
            raise UsageError("--resume auto needs --out RUN_DIR (the folder to continue or create)")
        return Path(out) if RunDir(Path(out)).state.exists() else None
    if resume:
        run_dir = Path(resume)
        if not RunDir(run_dir).state.exists():
            raise UsageError(f"--resume {run_dir}: no {RunDir.STATE} there; it is not a run folder to continue")
        return run_dir
    return None


def read_run_config(run_dir: Path) -> TrainConfig:
    """The run's recorded config, every value checked (it is a file anyone could have edited)."""
    path = RunDir(run_dir).config
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot resume {run_dir}: {RunDir.CONFIG} is missing or unreadable ({exc})") from None
    try:
        cfg = TrainConfig.from_dict(raw, where=str(path))
        from aecli.models import get_family
        from aecli.training.config import check_model_options

        get_family(cfg.family)
        cfg.model = {**_legacy_options(run_dir, cfg.family), **cfg.model}
        cfg.model = check_model_options(cfg.family, cfg.model, str(path))
        cfg.validate()
    except UsageError as exc:
        raise UsageError(f"cannot resume {run_dir}: {exc}") from None
    return cfg


def _legacy_options(run_dir: Path, family: str) -> dict[str, Any]:
    """Options a run made by an older aecli used without naming them: its checkpoint's config lacks a key
    that a newer default changed (conv's ``arch``), so the run continues with the old value, not today's."""
    from aecli.checkpoint import read_header
    from aecli.models import get_family

    legacy = get_family(family).Config.LEGACY
    ckpt = RunDir(run_dir).last
    if not legacy or not ckpt.is_file():
        return {}
    header = read_header(ckpt)
    return {k: v for k, v in legacy.items() if k not in header.config} if header.family == family else {}


def _model_value(family: str, model: dict[str, Any], key: str) -> Any:
    if key in model:
        return model[key]
    from aecli.models import get_family

    field = {f.name: f for f in dataclasses.fields(get_family(family).Config)}.get(key)
    return None if field is None or field.default is dataclasses.MISSING else field.default


def merge_resume(saved: TrainConfig, cfg: TrainConfig, given: set[str] | None, run_dir: Path) -> TrainConfig:
    """The run's own config with the resumable options that were given. ``given``: the options set on
    the command line or in a --config file (None: all of ``cfg``, for library callers)."""
    if cfg.family != saved.family:
        raise UsageError(f"{run_dir} is a {saved.family} run; it cannot continue as {cfg.family} (drop the family "
                         f"to continue it, or start a new run with another --out)")
    fields = {*TrainConfig.option_names(), "command_line"}
    keys = fields - {"family", "command_line", "out"} if given is None else set(given) & fields
    changed = []
    for key in sorted(keys - set(RESUMABLE) - {"out", "command_line", "family"}):
        if key == "model":
            for opt, value in cfg.model.items():
                old = _model_value(saved.family, saved.model, opt)
                if value != old and not (isinstance(old, tuple) and tuple(value) == old):
                    changed.append(f"-m {opt}={_shown(value)} (the run has {_shown(old)})")
        elif getattr(cfg, key) != getattr(saved, key):
            changed.append(f"{cli_flag(key)} {_shown(getattr(cfg, key))} (the run has {_shown(getattr(saved, key))})")
    if cfg.out and given is not None and "out" in given and Path(cfg.out).resolve() != run_dir.resolve():
        changed.append(f"--out {cfg.out} (the run is {run_dir})")
    if changed:
        raise UsageError(f"cannot change {'; '.join(changed)} when resuming {run_dir}; a resume may change only "
                         f"{', '.join(cli_flag(k) for k in RESUMABLE)} (start a new run with another --out to "
                         "change the rest)")
    for key in RESUMABLE:
        if key in keys:
            setattr(saved, key, getattr(cfg, key))
    if cfg.command_line and not saved.command_line.endswith(cfg.command_line):
        saved.command_line = f"{saved.command_line} && {cfg.command_line}" if saved.command_line else cfg.command_line
    return saved


def _same_run(run_dir: Path, cfg: TrainConfig) -> bool:
    """Does the folder's config.json describe ``cfg`` (an earlier start of this run that saved no state)?"""
    try:
        other = TrainConfig.from_dict(json.loads(RunDir(run_dir).config.read_text(encoding="utf-8")))
    except (OSError, ValueError, UsageError):
        return False
    ignore = set(RESUMABLE) | {"command_line", "out"}
    a, b = (json.loads(json.dumps(c.to_dict())) for c in (other, cfg))  # tuples and lists alike
    return all(a[k] == b[k] for k in a if k not in ignore)


def make_run_dir(run_dir: Path) -> list[Path]:
    """Create the run folder (before any data is read, so an unusable --out fails at once). Returns the
    folders it created, innermost first: removed again if the run fails before it starts."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file; give a folder path for the run")
    created = []
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists():
            break
        created.append(parent)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create run folder {run_dir}: {exc.strerror}; choose a writable --out") from None
    if not os.access(run_dir, os.W_OK):
        remove_folders(created)
        raise UsageError(f"run folder {run_dir} is not writable; choose a writable --out")
    return created


def check_fresh_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """A fresh run starts only in an empty folder, or one holding an earlier start of this very run
    that saved no state (a kill before the first checkpoint): never over another run or a user's files."""
    if RunDir(run_dir).state.exists():
        raise UsageError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                         "(or --resume auto), or choose another --out")
    try:
        entries = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE and not RunDir.is_temp_file(p.name))
    except OSError as exc:
        raise UsageError(f"cannot read run folder {run_dir}: {exc.strerror}; choose another --out") from None
    ours = all(RunDir.is_run_file(n) or n in RunDir.FOLDERS for n in entries)
    if entries and not (ours and RunDir.CONFIG in entries and _same_run(run_dir, cfg)):
        shown = ", ".join(entries[:4]) + (", …" if len(entries) > 4 else "")
        raise UsageError(f"--out {run_dir} is not empty ({shown}) and holds no run state to continue; "
                         "choose a new --out, or empty the folder")


def remove_folders(created: list[Path]) -> None:
    for folder in created:  # innermost first
        try:
            folder.rmdir()
        except OSError:
            break  # not empty: something else is there now, keep it


def remove_unstarted(run_dir: Path, created: list[Path]) -> None:
    """A fresh run that failed before its first step: remove what it wrote, and the folders it made."""
    run = RunDir(run_dir)
    for path in (run.config, run.command):
        path.unlink(missing_ok=True)
    shutil.rmtree(run.tensorboard, ignore_errors=True)
    run.remove_stale_temp_files()
    remove_folders(created)


def write_run_config(run_dir: Path, cfg: TrainConfig) -> None:
    """config.json: the run's settings (a resume rewrites it with the new plan); command.txt: the command
    lines that made the run, one per line (a resume adds its own)."""
    write_text(RunDir(run_dir).config, json.dumps(cfg.to_dict(), indent=2))
    write_text(RunDir(run_dir).command, "\n".join(cfg.command_line.split(" && ")) + "\n")
