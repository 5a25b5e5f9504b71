"""`aecli train FAMILY`: thin CLI over aecli.training.train."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from aecli import completion
from aecli.commands._common import (
    PANEL_MODEL,
    PANEL_OUTPUT,
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
    from aecli.training.config import check_model_options, check_options, family_defaults

    names = set(TrainConfig.option_names()) - {"family"}
    values = check_options({k: v for k, v in toml.items() if k != "family"}, where)
    model = check_model_options(family, values.pop("model", {}), where)
    try:  # the file's values in range, named as the file's (the command line is checked later)
        TrainConfig(family=family, model=model, **values).validate()
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    # An option neither given nor in the file takes the family's training default (TrainConfig applies
    # it), not the command line's declared one.
    family_set = set(family_defaults(family))
    for k, v in cli.items():
        if k in given or (k not in values and k not in family_set):
            values[k] = v
    model.update(values.pop("model", {}) or {})
    return TrainConfig(family=family, model=model, **{k: v for k, v in values.items() if k in names})


def reproduce_command(ctx: typer.Context, family: str, values: dict[str, Any]) -> str:
    """The command line that reproduces this run: every option the user set (CLI or env), in order.
    ``values``: the command's parameters by name."""
    import shlex

    parts = ["aecli", "train", family]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name == "family" or source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        value = values[param.name]
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


# -- the options, generated from the config's declarations ------------------------------------------------
def _option_parameter(kind: type, f: Any) -> inspect.Parameter:
    """The Typer parameter of one TrainConfig option: name, default, help, panel, environment variable and
    completion all come from the field's declaration (aecli.options.option)."""
    from aecli.options import option_info

    info = option_info(f)
    hint = typing.get_type_hints(kind)[f.name]
    default = f.default if f.default is not dataclasses.MISSING else None
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:  # --betas 0.9,0.999
        hint, default = str, ",".join(map(str, default))
    elif typing.get_origin(hint) is list:  # repeatable: --tracker csv --tracker wandb
        hint = Optional[hint]
    elif type(None) in typing.get_args(hint):
        hint = Optional[inner[0]]
    decls = [info.flag] if info.flag else ["--" + f.name.replace("_", "-")] if info.flag_only else []
    opt = typer.Option(*decls, help=info.help, rich_help_panel=kind.PANEL, envvar=info.envvar,
                       autocompletion=getattr(completion, info.complete) if info.complete else None)
    return inspect.Parameter(info.param or f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[hint, opt])


def _with_config_options(fn: Any) -> Any:
    """Give ``fn`` (which takes the config options as ``**options``) a signature with one Typer option per
    TrainConfig field, in the config's order; --resume sits after --out and --print-config last, where
    the help has always shown them."""
    from aecli.training.config import TrainConfig

    own = inspect.signature(fn, eval_str=True).parameters
    params = [p for name, p in own.items() if name not in ("resume", "print_config", "options")]
    for kind, f in TrainConfig.options():
        params.append(_option_parameter(kind, f))
        if f.name == "out":
            params.append(own["resume"].replace(kind=inspect.Parameter.KEYWORD_ONLY))
    params.append(own["print_config"].replace(kind=inspect.Parameter.KEYWORD_ONLY))
    fn.__signature__ = inspect.Signature(params, return_annotation=None)
    return fn


def config_values(options: dict[str, Any]) -> dict[str, Any]:
    """The command's option values as TrainConfig values, by field name (--betas text → numbers,
    --tracker → trackers)."""
    from aecli.options import option_info
    from aecli.training.config import cli_flag, option_fields

    values = {}
    for name, f in option_fields().items():
        value = options[option_info(f).param or name]
        if isinstance(f.default, tuple):
            value = tuple(parse_floats(value, cli_flag(name), len(f.default)))
        elif f.default is dataclasses.MISSING:  # a list option (default_factory)
            value = list(value or [])
        values[name] = value
    return values


def _given(ctx: typer.Context, names: list[str]) -> set[str]:
    """Options set on the command line or through their environment variable, by field name."""
    from aecli.options import option_info
    from aecli.training.config import option_fields

    params = {option_info(f).param or name: name for name, f in option_fields().items()}
    return {params.get(k, k) for k in names
            if (src := ctx.get_parameter_source(k)) is not None and src.name in ("COMMANDLINE", "ENVIRONMENT")}


def _family(family: str | None, toml: dict[str, Any], where: str, resume: str | None, out: str | None,
            print_config: bool) -> str:
    """The family to train: the argument, the --config file's, or (on resume) the run's own."""
    from aecli.training.runfolder import read_run_config, resume_dir

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
    return family


@handle_errors
@_with_config_options
def train(
    ctx: typer.Context,
    family: Annotated[Optional[str], typer.Argument(help="Model family (see `aecli models`); may come from --config.", autocompletion=completion.families)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with any of these options; the command line overrides it.")] = None,
    model_opt: Annotated[Optional[list[str]], typer.Option("--model-opt", "-m", help="Family option KEY=VALUE (repeatable), e.g. -m widths=32,64 -m norm=group.", rich_help_panel=PANEL_MODEL)] = None,
    num_classes: Annotated[int, typer.Option(help="Conditional model with this many classes (labelled data).", rich_help_panel=PANEL_MODEL)] = 0,
    resume: Annotated[Optional[str], typer.Option(help="Continue a run folder, or 'auto' (continue --out if it holds a run).", rich_help_panel=PANEL_OUTPUT, autocompletion=completion.resume_targets)] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved config as TOML (the keys --config reads) and exit.", rich_help_panel=PANEL_OUTPUT)] = False,
    **options: Any,
) -> None:
    """Train a model family. Writes last/best checkpoints, metrics, plots and grids to the run folder."""
    from aecli.training import train as run_training

    toml = load_toml(config) if config else {}
    where = f"--config {config}"
    family = _family(family, toml, where, resume, options["out"], print_config)
    values = config_values(options)
    given = _given(ctx, list(options))
    model = parse_model_options(family, model_opt or [])
    if num_classes:
        model["num_classes"] = num_classes
    cfg = build_config(family, {**values, "model": model}, given | {"model"}, toml, where)
    if print_config:
        from aecli.training.config import resolve_format, to_toml

        cfg.validate()
        typer.echo(to_toml(resolve_format(cfg)), nl=False)
        return
    cfg.command_line = reproduce_command(ctx, family, {**options, "model_opt": model_opt, "num_classes": num_classes,
                                                       "config": config, "resume": resume})
    given |= {"model"} | {k.replace("-", "_") for k in toml if k != "family"}
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
