"""examples/slurm/: every script parses (`bash -n`) and every `aecli` option it uses exists.

Options are checked against the command tree Typer builds (its click commands), the one the CLI parses with: a
renamed option or a command that is not registered fails here with its script and line named.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer

from aecli.cli import app

SLURM = Path(__file__).resolve().parents[1] / "examples" / "slurm"
SCRIPTS = sorted(SLURM.glob("*.sbatch")) + sorted(SLURM.glob("*.sh"))
COMMAND_END = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "<"}


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Non-comment lines with backslash continuations joined, each with its first line number."""
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for no, line in enumerate(text.splitlines(), 1):
        if not buf and line.lstrip().startswith("#"):
            continue
        if not buf:
            start = no
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    return out


def aecli_invocations(script: Path) -> list[tuple[int, list[str]]]:
    """Each `aecli ...` / `-m aecli ...` call as its argument words (up to a pipe, `;`, `&&`, redirect)."""
    calls = []
    for no, line in logical_lines(script.read_text()):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue  # bash -n reports real syntax errors
        for i, word in enumerate(words):
            if word == "aecli":
                args = []
                for w in words[i + 1:]:
                    if w in COMMAND_END or w.startswith(("2>", ">")):
                        break
                    args.append(w)
                calls.append((no, args))
    return calls


def resolve(args: list[str]) -> tuple[Any, list[str], str]:
    """Walk the command tree along the leading words: the leaf command, its remaining args, its path."""
    cmd = typer.main.get_command(app)
    path = ["aecli"]
    rest = list(args)
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):  # a group: descend
        name = rest.pop(0)
        sub = cmd.commands.get(name)
        if sub is None:
            raise AssertionError(f"`{' '.join(path)} {name}` is not a command (registered: "
                                 f"{', '.join(sorted(cmd.commands))}); it may not be implemented yet")
        cmd, path = sub, [*path, name]
    return cmd, rest, " ".join(path)


def option_names(cmd: Any) -> set[str]:
    names = {"--help", "-h"}
    for p in cmd.params:
        if p.param_type_name == "option":
            names.update(p.opts)
            names.update(p.secondary_opts)
    return names


def test_there_are_the_four_documented_scripts() -> None:
    assert {p.name for p in SCRIPTS} >= {"train_single_gpu.sbatch", "train_multinode.sbatch",
                                         "evaluate_sweep_array.sbatch", "lpips_ablation_array.sbatch"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_with_bash_n(script: Path) -> None:
    bash = shutil.which("bash")
    assert bash, "bash is needed to check the Slurm examples"
    done = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_aecli_option_in_the_script_exists(script: Path) -> None:
    calls = aecli_invocations(script)
    assert calls, f"{script.name} runs no aecli command"
    problems = []
    for line_no, args in calls:
        try:
            cmd, rest, path = resolve(args)
        except AssertionError as exc:
            problems.append(f"{script.name}:{line_no}: {exc}")
            continue
        known = option_names(cmd)
        for word in rest:
            if re.match(r"^--?[A-Za-z]", word):
                name = word.split("=", 1)[0]
                if name not in known:
                    problems.append(f"{script.name}:{line_no}: `{path}` has no option {name}")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_wrong_option_and_a_missing_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sbatch"
    bad.write_text("#!/bin/bash\n# aecli train --ignored-in-comments\nsrun aecli train conv-ae \\\n"
                   "    --epochs 3 --no-such-option 1 | tee log\naecli no-such-command --x\n")
    calls = aecli_invocations(bad)
    assert [args for _, args in calls] == [["train", "conv-ae", "--epochs", "3", "--no-such-option", "1"],
                                           ["no-such-command", "--x"]]
    cmd, rest, _ = resolve(calls[0][1])
    assert "--no-such-option" not in option_names(cmd) and "--epochs" in option_names(cmd)
    with pytest.raises(AssertionError, match="no-such-command` is not a command"):
        resolve(calls[1][1])
