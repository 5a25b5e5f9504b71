"""One vocabulary across commands: one name and one default per idea, old names as hidden aliases,
flags shown as flags, help for every option, and the README's option tables generated from the CLI."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aecli.cli import app
from aecli.commands._reference import click_commands, option_rows, update

README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS = dict(click_commands())


def test_readme_option_tables_match_the_cli() -> None:
    text = README.read_text(encoding="utf-8")
    assert update(text) == text, "README option tables are stale: run `python -m aecli.commands._reference README.md`"
    for row in option_rows():  # and every option of every command is in it
        assert f"`{row.names[0]}`" in text


def test_every_option_has_help() -> None:
    missing = [f"{r.command} {r.names[0]}" for r in option_rows() if not r.help]
    assert not missing, missing


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_flags_as_flags(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--help" in result.output
    assert "<bool>" not in result.output, result.output


def test_one_name_one_default_per_idea() -> None:
    rows = option_rows()
    visible = {n for r in rows for n in r.names}
    # The old spellings of the grid width and of the cache folder are gone from --help.
    assert not visible & {"--grid-size", "--grid-n", "--nrow", "--cache-dir"}
    assert [r.command for r in rows if "--ema-decay" in r.names] == ["train"]  # makes EMA weights; --ema uses them
    assert {r.command for r in rows if "--grid-columns" in r.names} == {"train", "reconstruct", "sample"}
    # -m means one thing: train's family options.
    assert [r.command for r in rows if "-m" in r.names] == ["train"]
    by_name: dict[str, list] = defaultdict(list)
    for r in rows:
        by_name[r.names[0]].append(r)
    for name, same in by_name.items():  # a shared name reads the same environment variable everywhere
        if name == "--out":  # AECLI_OUT names train's run folder; elsewhere --out is one file or folder
            continue
        assert len({r.envvar for r in same}) == 1, (name, [(r.command, r.envvar) for r in same])
    for name, default in {"--split": "auto", "--device": "auto", "--seed": "0", "--ema": "off",
                          "--data-root": "", "--lpips-net": "alex"}.items():
        # encode's job is a whole data set's latents (a diffusion model's training set): its default is all.
        rows_ = [r for r in by_name[name] if not (name == "--split" and r.command == "encode")]
        assert {r.default for r in rows_} == {default}, (name, [(r.command, r.default) for r in rows_])
    assert [r.default for r in by_name["--split"] if r.command == "encode"] == ["all"]
    assert {r.envvar for r in by_name["--cache"]} == {"AECLI_CACHE"} and len(by_name["--cache"]) >= 3
    # --json prints JSON on stdout (a flag) wherever it appears; a JSON/CSV *file* is --json-out/--csv-out.
    assert by_name["--json"] and all(r.flag for r in by_name["--json"])
    assert {r.command for r in by_name["--json-out"]} == {"evaluate", "tsne"}
    assert not any(r.flag for r in by_name["--json-out"] + by_name["--csv-out"])


@pytest.mark.parametrize("command,args,param,value", [
    ("sample", ["c.safetensors", "--out", "g.png", "--nrow", "3"], "nrow", 3),
    ("sample", ["c.safetensors", "--out", "g.png", "--nrow=4"], "nrow", 4),
    ("sample", ["c.safetensors", "--out", "g.png", "--grid-columns", "5"], "nrow", 5),
    ("reconstruct", ["c.safetensors", "--out", "o", "--grid-n", "6"], "grid_n", 6),
    ("train", ["conv-ae", "--grid-size", "2"], "grid_size", 2),
    ("train", ["conv-ae", "--ema", "0.99"], "ema", 0.99),
    ("train", ["conv-ae", "--ema-decay", "0.9"], "ema", 0.9),
    ("evaluate", ["c.safetensors", "-m", "psnr"], "metrics", "psnr"),
    ("evaluate", ["c.safetensors", "--cache-dir", "/tmp/x"], "cache_dir", "/tmp/x"),
    ("weights check", ["-m", "fid"], "metrics", "fid"),
    ("evaluate", ["c.safetensors", "--json", "e.json", "--csv=e.csv"], "json_path", Path("e.json")),
    ("evaluate", ["c.safetensors", "--csv", "e.csv"], "csv_path", Path("e.csv")),
    ("tsne", ["c.safetensors", "--json", "t.json"], "json_out", "t.json"),
    ("weights download", ["-m", "lpips"], "metrics", "lpips"),
])
def test_old_names_still_work_as_hidden_aliases(command: str, args: list[str], param: str, value: object,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ctx = COMMANDS[command].make_context(command, list(args))
    assert ctx.params[param] == value
    old = next((a.split("=")[0] for a in args if a.split("=")[0] in ("--nrow", "--grid-n", "--grid-size", "-m",
                                                                      "--cache-dir", "--ema", "--json", "--csv")), None)
    err = capsys.readouterr().err
    assert (f"note: {old} is now" in err) if old else err == ""


def test_alias_rewriting_stops_at_double_dash() -> None:
    ctx = COMMANDS["sample"].make_context("sample", ["--out", "g.png", "--", "--nrow"])
    assert str(ctx.params["checkpoint"]) == "--nrow" and ctx.params["nrow"] is None
