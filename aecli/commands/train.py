"""`aecli train FAMILY`: thin CLI over aecli.training.train."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from aecli import completion
from aecli.commands._common import (
    PANEL_DATA,
    PANEL_LOSS,
    PANEL_MODEL,
    PANEL_OUTPUT,
    PANEL_RUNTIME,
    PANEL_TRAIN,
    aliased,
    handle_errors,
    parse_floats,
)
from aecli.errors import UsageError


def parse_model_options(family: str, pairs: list[str]) -> dict[str, Any]:
    """`-m widths=32,64 -m norm=group` → typed kwargs, typed by the family config's defaults."""
    from aecli.models import get_family

    fields = {f.name: f for f in dataclasses.fields(get_family(family).Config)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise UsageError(f"--model-opt expects KEY=VALUE, got {pair!r}")
        if key not in fields:
            raise UsageError(f"{family} has no option {key!r}; its options are: {', '.join(sorted(fields))}")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                out[key] = text.lower() in ("true", "1", "yes")
            elif isinstance(default, tuple):
                kind = type(default[0]) if default else int
                out[key] = tuple(kind(v) for v in text.split(",") if v.strip())
            elif isinstance(default, int):
                out[key] = int(text)
            elif isinstance(default, float):
                out[key] = float(text)
            else:
                out[key] = text
        except ValueError:
            raise UsageError(f"--model-opt {key}: cannot read {text!r} as {type(default).__name__}") from None
    return out


def load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    from aecli.untrusted import regular_file

    problem = regular_file(path)
    if problem is not None and problem.startswith("a "):  # a FIFO would block open() forever
        raise UsageError(f"--config {path} is {problem}, not a regular file; give a TOML file")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path} is not UTF-8 text; save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path} is not valid TOML: {exc}") from None


def build_config(family: str, cli: dict[str, Any], given: set[str], toml: dict[str, Any],
                 where: str = "the config file") -> Any:
    """Merge: TrainConfig defaults < TOML file < options given on the command line. Every TOML value is
    checked against the option's declared type, and [model] keys against the family's config."""
    from aecli.training import TrainConfig
    from aecli.training.config import check_model_options, check_options

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = check_options({k: v for k, v in toml.items() if k != "family"}, where)
    model = check_model_options(family, values.pop("model", {}), where)
    try:  # the file's values in range, named as the file's (the command line is checked later)
        TrainConfig(family=family, model=model, **values).validate()
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    for k, v in cli.items():
        if k in given or k not in values:
            values[k] = v
    model.update(values.pop("model", {}) or {})
    return TrainConfig(family=family, model=model, **{k: v for k, v in values.items() if k in names})


def reproduce_command(ctx: typer.Context, family: str) -> str:
    """The command line that reproduces this run: every option the user set (CLI or env), in order."""
    import shlex

    parts = ["aecli", "train", family]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name == "family" or source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        value = ctx.params[param.name]
        opt = param.opts[0]
        if getattr(param, "is_flag", False):
            if value:
                parts.append(opt)
        elif isinstance(value, (list, tuple)):
            for item in value:
                parts += [opt, str(item)]
        else:
            parts += [opt, str(value)]
    return shlex.join(parts)


@handle_errors
def train(
    ctx: typer.Context,
    family: Annotated[Optional[str], typer.Argument(help="Model family (see `aecli models`); may come from --config.", autocompletion=completion.families)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with any of these options; the command line overrides it.")] = None,
    model_opt: Annotated[Optional[list[str]], typer.Option("--model-opt", "-m", help="Family option KEY=VALUE (repeatable), e.g. -m widths=32,64 -m norm=group.", rich_help_panel=PANEL_MODEL)] = None,
    num_classes: Annotated[int, typer.Option(help="Conditional model with this many classes (labelled data).", rich_help_panel=PANEL_MODEL)] = 0,
    data: Annotated[str, typer.Option(help="Image folder, QuickDraw .npy folder, mnist|fashion-mnist|cifar10|celeba, or embedded digits|shapes[:N].", rich_help_panel=PANEL_DATA)] = "digits",
    data_root: Annotated[Optional[str], typer.Option(envvar="AECLI_DATA_ROOT", help="Where torchvision datasets live.", rich_help_panel=PANEL_DATA)] = None,
    download: Annotated[bool, typer.Option(help="Download a torchvision dataset (needs internet).", rich_help_panel=PANEL_DATA)] = False,
    image_size: Annotated[Optional[int], typer.Option(help="Square image size (default: the data's, fitted to the family).", rich_help_panel=PANEL_DATA)] = None,
    channels: Annotated[Optional[int], typer.Option(help="1 or 3 (default: the data's).", rich_help_panel=PANEL_DATA)] = None,
    val_count: Annotated[Optional[int], typer.Option(help="First N images are validation (the FFHQ ablation, seed 000: 1000).", rich_help_panel=PANEL_DATA)] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="A fixed random fraction is validation (default 0.1).", rich_help_panel=PANEL_DATA)] = None,
    strict_data: Annotated[bool, typer.Option(help="Unreadable images are an error instead of skipped.", rich_help_panel=PANEL_DATA)] = False,
    cache: Annotated[Optional[str], typer.Option(envvar="AECLI_CACHE", help="Folder for the decoded uint8 image cache (reused across runs).", rich_help_panel=PANEL_DATA)] = None,
    recon: Annotated[str, typer.Option(help="Reconstruction loss: l1|mse|bce.", rich_help_panel=PANEL_LOSS)] = "mse",
    reduction: Annotated[str, typer.Option(help="mean: per element (the FFHQ ablation and the AE-vs-VAE comparison, seeds 000/001); sum: per image (the glasses VAE and the QuickDraw VAEs, seeds 002/004).", rich_help_panel=PANEL_LOSS)] = "mean",
    beta: Annotated[float, typer.Option(help="KL weight.", rich_help_panel=PANEL_LOSS)] = 1.0,
    kl_warmup_steps: Annotated[int, typer.Option(help="Linear KL warm-up steps (the CIFAR-10 VAE report, seed 003: 10000).", rich_help_panel=PANEL_LOSS)] = 0,
    kl_cycles: Annotated[int, typer.Option(help="Cyclical KL annealing: number of cycles.", rich_help_panel=PANEL_LOSS)] = 0,
    kl_cycle_ratio: Annotated[float, typer.Option(help="Fraction of each cycle spent increasing.", rich_help_panel=PANEL_LOSS)] = 0.5,
    free_bits: Annotated[float, typer.Option(help="Minimum KL per latent dimension, nats (the CIFAR-10 VAE report, seed 003: 0.5).", rich_help_panel=PANEL_LOSS)] = 0.0,
    lpips: Annotated[float, typer.Option(help="LPIPS loss weight (the FFHQ ablation's sweep, seed 000: 0.05-0.1).", rich_help_panel=PANEL_LOSS)] = 0.0,
    lpips_net: Annotated[str, typer.Option(help="alex|vgg|squeeze.", rich_help_panel=PANEL_LOSS)] = "alex",
    lpips_weights: Annotated[Optional[str], typer.Option(help="Backbone weights file for LPIPS instead of the hub cache.", rich_help_panel=PANEL_LOSS)] = None,
    weights_dir: Annotated[Optional[str], typer.Option(envvar="AECLI_WEIGHTS_DIR", help="Pretrained weights folder (default $TORCH_HOME/hub/checkpoints).", rich_help_panel=PANEL_LOSS)] = None,
    adv: Annotated[float, typer.Option(help="Adversarial PatchGAN loss weight.", rich_help_panel=PANEL_LOSS)] = 0.0,
    adv_start: Annotated[int, typer.Option(help="Step at which the adversarial term starts.", rich_help_panel=PANEL_LOSS)] = 0,
    objective: Annotated[str, typer.Option(help="default, or ldm: the LDM/taming objective (recon/exp(logvar)+logvar with a learned logvar, --beta KL, --lpips, adaptive --adv weight).", rich_help_panel=PANEL_LOSS)] = "default",
    epochs: Annotated[Optional[int], typer.Option(help="Epochs to train (default 10; with --max-steps, as many as it needs; on resume: the new total).", rich_help_panel=PANEL_TRAIN)] = None,
    max_steps: Annotated[int, typer.Option(help="Stop after exactly this many optimizer steps, resumable (0: no limit); with --epochs, whichever comes first.", rich_help_panel=PANEL_TRAIN)] = 0,
    max_time: Annotated[Optional[str], typer.Option(help="Stop at the first step after this wall time (600, 90m, 1h30m, DD:HH:MM:SS), save and exit 0; set it a little under a Slurm time limit.", rich_help_panel=PANEL_TRAIN)] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size per process (per micro-batch with --grad-accum-steps).", rich_help_panel=PANEL_TRAIN)] = 64,
    grad_accum_steps: Annotated[int, typer.Option(help="Accumulate gradients of K micro-batches per optimizer step: effective batch = batch size × K (× processes).", rich_help_panel=PANEL_TRAIN)] = 1,
    lr: Annotated[float, typer.Option(help="Learning rate (gan: the generator's).", rich_help_panel=PANEL_TRAIN)] = 1e-3,
    lr_d: Annotated[Optional[float], typer.Option(help="Discriminator learning rate (gan default 4×lr).", rich_help_panel=PANEL_TRAIN)] = None,
    optimizer: Annotated[str, typer.Option(help="adam|adamw.", rich_help_panel=PANEL_TRAIN)] = "adam",
    betas: Annotated[str, typer.Option(help="Adam betas (the AE-vs-VAE comparison, seed 001: 0.5,0.999).", rich_help_panel=PANEL_TRAIN)] = "0.9,0.999",
    weight_decay: Annotated[float, typer.Option(help="Weight decay (L2 for adam, decoupled for adamw).", rich_help_panel=PANEL_TRAIN)] = 0.0,
    scheduler: Annotated[str, typer.Option(help="none|step|cosine|plateau (cosine: decays to 0 at the last step).", rich_help_panel=PANEL_TRAIN)] = "cosine",
    warmup_steps: Annotated[int, typer.Option(help="Linear LR warm-up steps (0: none).", rich_help_panel=PANEL_TRAIN)] = 50,
    step_size: Annotated[int, typer.Option(help="step scheduler: epochs between decays.", rich_help_panel=PANEL_TRAIN)] = 10,
    gamma: Annotated[float, typer.Option(help="step/plateau decay factor.", rich_help_panel=PANEL_TRAIN)] = 0.5,
    patience: Annotated[int, typer.Option(help="plateau patience in epochs.", rich_help_panel=PANEL_TRAIN)] = 10,
    grad_clip: Annotated[float, typer.Option(help="Clip gradient norm (0: off).", rich_help_panel=PANEL_TRAIN)] = 0.0,
    ema: Annotated[float, typer.Option("--ema-decay", help="Keep EMA weights with this decay, e.g. 0.999 (0: off); the other commands' --ema uses them.", rich_help_panel=PANEL_TRAIN)] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed.", rich_help_panel=PANEL_TRAIN)] = 0,
    device: Annotated[str, typer.Option(envvar="AECLI_DEVICE", help="auto|cpu|cuda|cuda:N.", rich_help_panel=PANEL_RUNTIME)] = "auto",
    precision: Annotated[str, typer.Option(help="fp32|bf16|fp16 (autocast).", rich_help_panel=PANEL_RUNTIME)] = "fp32",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.", rich_help_panel=PANEL_RUNTIME)] = False,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="SyncBatchNorm across processes (CUDA).", rich_help_panel=PANEL_RUNTIME)] = False,
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (default: all cores).", rich_help_panel=PANEL_RUNTIME)] = None,
    out: Annotated[Optional[str], typer.Option(envvar="AECLI_OUT", help="Run folder (default runs/<family>-<time>).", rich_help_panel=PANEL_OUTPUT)] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a run folder, or 'auto' (continue --out if it holds a run).", rich_help_panel=PANEL_OUTPUT, autocompletion=completion.resume_targets)] = None,
    log_every: Annotated[int, typer.Option(help="Log a line every N steps.", rich_help_panel=PANEL_OUTPUT)] = 50,
    save_every_steps: Annotated[int, typer.Option(help="Also checkpoint every N steps (long epochs).", rich_help_panel=PANEL_OUTPUT)] = 0,
    keep: Annotated[int, typer.Option(help="Keep only the last N periodic checkpoints (0: all).", rich_help_panel=PANEL_OUTPUT)] = 0,
    grid_size: Annotated[int, typer.Option("--grid-columns", help="Images per row of the per-epoch grids (recon: this many validation images; samples: this many per row).", rich_help_panel=PANEL_OUTPUT)] = 8,
    tracker: Annotated[Optional[list[str]], typer.Option("--tracker", help="Experiment tracker (repeatable): tensorboard, wandb (offline), mlflow (local file store), csv.", rich_help_panel=PANEL_OUTPUT, autocompletion=completion.trackers)] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Same as --tracker tensorboard.", rich_help_panel=PANEL_OUTPUT)] = False,
    requeue: Annotated[bool, typer.Option("--requeue", help="On SIGTERM/SIGUSR1, `scontrol requeue` the Slurm job.", rich_help_panel=PANEL_OUTPUT)] = False,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved config as TOML (the keys --config reads) and exit.", rich_help_panel=PANEL_OUTPUT)] = False,
) -> None:
    """Train a model family. Writes last/best checkpoints, metrics, plots and grids to the run folder."""
    from aecli.training import train as run_training

    from aecli.training.runfolder import read_run_config, resume_dir

    toml = load_toml(config) if config else {}
    where = f"--config {config}"
    if "family" in toml and not isinstance(toml["family"], str):
        raise UsageError(f"{where}: family must be a string such as \"conv-ae\", got {toml['family']!r}")
    family = family or toml.get("family")
    if print_config and resume:
        raise UsageError("--print-config prints a new run's config; a run's own is in RUN/config.json")
    run = resume_dir(resume, out or toml.get("out")) if resume and not print_config else None
    if not family and run is not None:
        family = read_run_config(run).family  # a resume needs no family: the run knows its own
    if not family:
        raise UsageError("give a model family (e.g. `aecli train conv-ae`) or a --config file with family = \"…\"")
    params = dict(ctx.params)
    for name in ("family", "config", "resume", "print_config"):
        params.pop(name, None)
    given = {k for k in params if ctx.get_parameter_source(k).name in ("COMMANDLINE", "ENVIRONMENT")}
    model_kwargs = parse_model_options(family, params.pop("model_opt") or [])
    if num_classes:
        model_kwargs["num_classes"] = num_classes
    params.pop("num_classes")
    params["betas"] = tuple(parse_floats(betas, "--betas", 2))
    params["trackers"] = list(params.pop("tracker") or [])
    if "tracker" in given:
        given.add("trackers")
    params["model"] = model_kwargs
    given.add("model")
    cfg = build_config(family, params, given, toml, where)
    if print_config:
        from aecli.training.config import resolve_format, to_toml

        cfg.validate()
        typer.echo(to_toml(resolve_format(cfg)), nl=False)
        return
    cfg.command_line = reproduce_command(ctx, family)
    given |= {k.replace("-", "_") for k in toml if k != "family"}
    result = run_training(cfg, resume=resume, given=given)
    if not result.is_main:  # one summary line per job, not per process
        return
    if result.stopped:
        more = " (with a larger --max-steps)" if result.stopped.startswith("--max-steps") else ""
        typer.echo(f"stopped at {result.stopped}: {result.steps} steps; state saved in {result.run_dir}. "
                   f"Continue with{more}: {result.resume_hint}")
    else:
        typer.echo(f"done: {result.steps} steps, {result.epochs} epochs; checkpoints in {result.run_dir}")


def register(app: typer.Typer) -> None:
    app.command("train", cls=aliased(grid_size="--grid-columns", ema="--ema-decay"))(train)
