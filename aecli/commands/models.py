"""`aecli models`: the table of registered model families."""

from __future__ import annotations

from typing import Annotated

import typer

from aecli.commands._common import handle_errors, stdout_is_terminal


def family_rows() -> list[dict[str, object]]:
    import dataclasses

    from aecli.models import get_family, list_models, supported_commands

    rows = []
    for name in list_models():
        cls = get_family(name)
        options = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                   for f in dataclasses.fields(cls.Config)}
        rows.append({"name": name, "description": cls.description, "seed": cls.seed,
                     "options": options, "commands": supported_commands(cls),
                     "train_defaults": dict(cls.train_defaults)})
    return rows


def _options_text(options: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def _training_text(defaults: dict[str, object]) -> str:
    """The family's `aecli train` defaults as the flags that set them (``--recon gaussian``)."""
    from aecli.training.config import cli_flag

    return " ".join(f"{cli_flag(k)} {v}" for k, v in defaults.items())


def plain_lines(rows: list[dict[str, object]]) -> list[str]:
    """One tab-separated line per family (header first): never wrapped, for grep, cut and awk."""
    lines = ["family\tseed\twhat it is\tcommands\toptions (defaults)\ttraining defaults"]
    for r in rows:
        lines.append("\t".join([str(r["name"]), str(r["seed"]), str(r["description"]),
                                ",".join(r["commands"]),  # type: ignore[arg-type]
                                _options_text(r["options"]),  # type: ignore[arg-type]
                                _training_text(r["train_defaults"])]))  # type: ignore[arg-type]
    return lines


# What "seed 00N" in a family's seed column refers to (README: The source experiments).
SEED_EXPERIMENTS = {
    "000": "the 17-run FFHQ ablation (skip/ResNet AEs, LPIPS sweep, VAEs, attention)",
    "001": "the AE-vs-VAE comparison (Mish conv AE and VAE, 256²)",
    "002": "the autoencoder notebook (MNIST MLP AE, TinyImageNet conv AE, glasses VAE arithmetic)",
    "003": "the CIFAR-10 generative-models report (AE, VAE, planar-flow VAE, GAN)",
    "004": "the MNIST LSTM/CNN AEs with t-SNE and the QuickDraw VAEs (GRU, CNN, conditional)",
}


def terminal_blocks(rows: list[dict[str, object]], width: int) -> list[str]:
    """Per family: its whole name and what it is, then seed, commands and options on indented lines
    wrapped at ``width`` between words (a family name or an option is never split)."""
    import textwrap

    def wrap(label: str, text: str) -> str:
        return textwrap.fill(text, width=max(40, width), initial_indent=f"  {label:<10}",
                             subsequent_indent=" " * 12, break_long_words=False, break_on_hyphens=False)

    blocks = []
    for r in rows:
        head = textwrap.fill(f"{r['name']} — {r['description']}", width=max(40, width), subsequent_indent="    ",
                             break_long_words=False, break_on_hyphens=False)
        lines = [head, wrap("seed", str(r["seed"])),
                 wrap("commands", ", ".join(r["commands"])),  # type: ignore[arg-type]
                 wrap("options", _options_text(r["options"]))]  # type: ignore[arg-type]
        if r["train_defaults"]:
            lines.append(wrap("training", _training_text(r["train_defaults"])))  # type: ignore[arg-type]
        blocks.append("\n".join(lines))
    return blocks


@handle_errors
def models(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """List every model family: what it is, its seed, options with defaults, supported commands, and the
    `aecli train` options it trains with unless told otherwise.

    In a terminal: a block per family. Piped or redirected: one tab-separated line per family."""
    rows = family_rows()
    if json_out:
        import json

        typer.echo(json.dumps(rows, indent=2, default=list))
        return
    if not stdout_is_terminal():
        typer.echo("\n".join(plain_lines(rows)))
        return
    import shutil
    import textwrap

    width = shutil.get_terminal_size().columns - 1
    typer.echo("\n\n".join(terminal_blocks(rows, width)))
    typer.echo("\nseeds (the source experiments, see the README):")
    for seed, what in SEED_EXPERIMENTS.items():
        typer.echo(textwrap.fill(f"{seed}  {what}", width=max(40, width), initial_indent="  ",
                                 subsequent_indent=" " * 7, break_long_words=False))


def register(app: typer.Typer) -> None:
    app.command("models")(models)
