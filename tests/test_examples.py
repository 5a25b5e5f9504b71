"""examples/: every recipe parses, matches its family and the seed, builds at full size and trains one
step on substitute data; every script is valid bash that only uses options aecli has."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from aecli.commands.train import build_config
from aecli.errors import UsageError
from aecli.models import create_model, get_family, list_models, make_config
from aecli.training import TrainConfig, train

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RECIPES = sorted(EXAMPLES.glob("*.toml"))
SCRIPTS = sorted(EXAMPLES.glob("*.sh"))
SEED000 = ["A1", "A2", "A3", "A4", "B1", "B2.1", "B2.2", "B2.3", "B2.4", "C1", "C2", "C3", "C4", "C5",
           "D1", "D2", "D3"]
WIDTH_KEYS = ("widths", "base_channels", "hidden", "g_hidden", "d_hidden", "fc_hidden", "latent_dim",
              "decoder_channels", "block_out_channels", "norm_num_groups")


def load(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def full_model_kwargs(recipe: dict[str, Any]) -> dict[str, Any]:
    """The family options `aecli train --config` builds the model from (setup.prepare's rules)."""
    kwargs = {**recipe.get("model", {}), "image_size": recipe["image_size"], "channels": recipe["channels"]}
    if recipe.get("recon") == "bce":
        kwargs.setdefault("output_activation", "sigmoid")
    return kwargs


def shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in module.parameters()]


def build_meta(family: str, **kwargs: Any) -> nn.Module:
    with torch.device("meta"):  # 256² models: shapes only, no memory
        return create_model(family, **kwargs)


@pytest.fixture(scope="module")
def recipes() -> dict[str, dict[str, Any]]:
    return {p.stem: load(p) for p in RECIPES}


def test_every_seed_experiment_has_a_recipe(recipes: dict[str, dict[str, Any]]) -> None:
    ids = sorted((m.group(1) for name in recipes if (m := re.match(r"seed000_([A-D]\d(?:\.\d)?)_", name))),
                 key=SEED000.index)
    assert ids == SEED000  # all 17 runs of the seed 000 study, each once
    for name in recipes:
        if name.startswith("seed000_"):
            r = recipes[name]
            assert (r["image_size"], r["channels"], r["val_count"], r["recon"], r["lr"]) == (256, 3, 1000, "l1", 2e-4)
    others = {n for n in recipes if not n.startswith("seed000_")}
    assert {"seed001_mish_conv_ae", "seed001_mish_conv_vae", "seed002_mnist_mlp_ae", "seed002_tinyimagenet_conv_ae",
            "seed002_glasses_vae", "seed003_conv_ae", "seed003_vae", "seed003_flow_vae",
            "seed003_flow_vae_cyclical", "seed003_gan", "seed004_lstm_ae", "seed004_cnn_ae",
            "seed004_quickdraw_gru_vae", "seed004_quickdraw_cnn_vae", "seed004_quickdraw_cvae"} <= others
    outs = [r["out"] for r in recipes.values()]
    assert len(set(outs)) == len(outs)  # no two recipes share a run folder


def test_seed_values_that_matter(recipes: dict[str, dict[str, Any]]) -> None:
    r = recipes
    assert [r[n].get("lpips", 0.0) for n in sorted(r) if n.startswith("seed000_B2")] == [0.0, 0.05, 0.075, 0.1]
    assert [r[n]["beta"] for n in sorted(r) if re.match(r"seed000_C[1-3]_", n)] == [0.00025, 0.001, 0.01]
    assert r["seed000_C4_vae_wide"]["model"]["widths"][0] == 64 and r["seed000_C5_vae_lpips"]["lpips"] == 0.1
    assert r["seed000_D2_deep_resnet_vae_lpips"]["lpips"] == 0.1
    assert (r["seed000_D1_deep_resnet_vae"]["batch_size"], r["seed000_A1_skip_convae_depth10"]["epochs"]) == (4, 60)
    for name in ("seed001_mish_conv_ae", "seed001_mish_conv_vae"):
        s = r[name]
        assert (s["lr"], s["betas"], s["scheduler"], s["gamma"], s["patience"], s["epochs"]) == \
            (1e-4, [0.5, 0.999], "plateau", 0.5, 10, 1000)
    assert r["seed001_mish_conv_vae"]["beta"] == 0.00025
    assert "0.000025" in (EXAMPLES / "seed001_mish_conv_vae.toml").read_text()  # the code's value, noted
    m = r["seed002_mnist_mlp_ae"]
    assert (m["lr"], m["batch_size"], m["reduction"], m["epochs"]) == (0.00025, 32, "sum", 10)
    g = r["seed002_glasses_vae"]
    assert (g["lr"], g["weight_decay"], g["batch_size"], g["model"]["latent_dim"]) == (1e-4, 1e-5, 16, 100)
    assert (r["seed003_gan"]["lr"], r["seed003_gan"]["lr_d"]) == (1e-4, 4e-4)
    f = r["seed003_flow_vae"]
    assert (f["model"]["flows"], f["kl_warmup_steps"], f["free_bits"]) == (4, 10000, 0.5)
    assert r["seed003_flow_vae_cyclical"]["kl_cycles"] > 0
    assert r["seed004_lstm_ae"]["epochs"] * (60000 // 256) == pytest.approx(10_000, rel=0.02)  # ~10,000 steps
    assert r["seed004_quickdraw_cvae"]["model"]["num_classes"] == 3


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_keys_are_train_and_family_options(path: Path) -> None:
    text = path.read_text()
    for label in ("Source:", "Dataset:", "Shows:"):
        assert re.search(rf"^# .*{label}", text, re.M), f"{path.name}: header lacks {label}"
    recipe = load(path)
    fields = set(TrainConfig.option_names())
    assert set(recipe) <= fields, sorted(set(recipe) - fields)
    family = recipe["family"]
    assert family in list_models()
    options = {f.name for f in dataclasses.fields(get_family(family).Config)}
    model = recipe.get("model", {})
    assert set(model) <= options - {"image_size", "channels"}, sorted(set(model) - options)
    cfg = build_config(family, {}, set(), recipe)  # exactly what `aecli train --config` resolves
    cfg.validate()
    lists_as_tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in model.items()}  # TOML lists are typed
    assert cfg.model == lists_as_tuples and cfg.epochs == recipe["epochs"] and cfg.lr == recipe["lr"]
    make_config(family, **full_model_kwargs(recipe))


def _seed001_ae() -> nn.Module:  # seed 001 Q1, layer by layer
    enc, dec, cin = [], [], 3
    for c in (64, 128, 256, 512, 1024):
        enc += [nn.Conv2d(cin, c, 4, 2, 1), nn.BatchNorm2d(c), nn.Mish()]
        cin = c
    for cin, c in zip((1024, 1024, 512, 256, 128), (1024, 512, 256, 128, 64)):
        dec += [nn.ConvTranspose2d(cin, c, 4, 2, 1), nn.BatchNorm2d(c), nn.Mish()]
    return nn.Sequential(*enc, *dec, nn.Conv2d(64, 3, 3, 1, 1), nn.Tanh())


def _seed001_vae(latent: int = 1024) -> nn.Module:
    ae = list(_seed001_ae())
    ae[15] = nn.ConvTranspose2d(latent, 1024, 4, 2, 1)  # the decoder starts from the latent channels
    return nn.Sequential(*ae[:15], nn.Conv2d(1024, 2 * latent, 3, 1, 1), *ae[15:])


REFERENCES = {  # recipe → the seed's own network, written out from its code
    "seed001_mish_conv_ae": _seed001_ae,
    "seed001_mish_conv_vae": _seed001_vae,
    "seed002_mnist_mlp_ae": lambda: nn.Sequential(nn.Linear(784, 200), nn.Linear(200, 20), nn.Linear(20, 200),
                                                  nn.Linear(200, 784)),
    "seed003_conv_ae": lambda: nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1),
                                             nn.ConvTranspose2d(32, 16, 3, 2, 1, 1),
                                             nn.ConvTranspose2d(16, 3, 3, 2, 1, 1)),
    # seed 002 §3.2: conv1, conv2 + batch2, conv3 (no padding: 31×31), linear1, linear2 and linear3 (aecli stacks
    # the two heads in one Linear(1024, 200)), decoder_lin, ConvT + BN, ConvT + BN, ConvT.
    "seed002_glasses_vae": lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Conv2d(16, 32, 3, 2, 0),
        nn.Linear(31 * 31 * 32, 1024), nn.Linear(1024, 200), nn.Linear(100, 1024), nn.Linear(1024, 31 * 31 * 32),
        nn.ConvTranspose2d(32, 16, 3, 2, 0, 1), nn.BatchNorm2d(16), nn.ConvTranspose2d(16, 8, 3, 2, 1, 1),
        nn.BatchNorm2d(8), nn.ConvTranspose2d(8, 3, 3, 2, 1, 1)),
    "seed004_cnn_ae": lambda: nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1),
                                            nn.Linear(32 * 7 * 7, 64), nn.Linear(64, 32 * 7 * 7),
                                            nn.ConvTranspose2d(32, 16, 3, 2, 1, 1),
                                            nn.ConvTranspose2d(16, 1, 3, 2, 1, 1)),
}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_builds_at_full_size(path: Path) -> None:
    recipe = load(path)
    kwargs = full_model_kwargs(recipe)
    model = build_meta(recipe["family"], **kwargs)
    n = recipe["image_size"]
    if model.has_encoder:
        with torch.device("meta"):
            labels = torch.zeros(2, dtype=torch.long) if model.is_conditional else None
            out = model.forward(torch.empty(2, recipe["channels"], n, n), labels)
        assert tuple(out.recon.shape) == (2, recipe["channels"], n, n)
    if path.stem in REFERENCES:
        with torch.device("meta"):
            ref = REFERENCES[path.stem]()
        assert shapes(model) == shapes(ref)
    if path.stem == "seed002_tinyimagenet_conv_ae":  # the count the seed's notebook printed
        assert sum(p.numel() for p in model.parameters()) == 13_912_707
    if path.stem == "seed001_mish_conv_vae":
        assert model.latent_shape == (1024, 8, 8)
    if path.stem == "seed003_gan":  # generator z→256→512→1024→image, discriminator image→1024→512→256→1
        assert sorted(shapes(model)) == sorted([(256, 100), (256,), (512, 256), (512,), (1024, 512), (1024,),
                                                (3072, 1024), (3072,), (1024, 3072), (1024,), (512, 1024),
                                                (512,), (256, 512), (256,), (1, 256), (1,)])


def test_seed004_cnn_vaes_decode_with_the_gru_vaes_decoder(recipes: dict[str, dict[str, Any]]) -> None:
    """Seed 004: the CNN-CNN VAE (and the conditional VAE built on it) uses "the same decoder as in the first
    architecture", the GRU VAE's: Linear(32 → 64×7×7) → ReLU → ConvT(64→32) → ReLU → ConvT(32→1) → Sigmoid."""
    gru = create_model("gru-vae", **full_model_kwargs(recipes["seed004_quickdraw_gru_vae"]))
    reference = shapes(gru.decoder)
    assert sum(p.numel() for p in gru.decoder.parameters()) == 32 * 3136 + 3136 + 64 * 32 * 9 + 32 + 32 * 9 + 1
    for name in ("seed004_quickdraw_cnn_vae", "seed004_quickdraw_cvae"):
        torch.manual_seed(0)
        model = create_model("conv-vae", **full_model_kwargs(recipes[name])).eval()
        decoder = nn.Sequential(model.from_latent, model.decoder)
        assert shapes(decoder) == reference, name
        assert sum(p.numel() for p in decoder.parameters()) == 122_241, name
        # The same function: the GRU VAE's decoder weights in the CNN VAE decode any z identically.
        with torch.no_grad():
            for dst, src in zip(decoder.parameters(), gru.decoder.parameters()):
                dst.copy_(src)
            z = torch.randn(3, 32)
            assert torch.allclose(model._decode(z), gru.decoder(z), atol=1e-6), name


# ---------------------------------------------------------------------------------------------- training
BATCH = 8


def _shrunk(family: str, model: dict[str, Any], size: int, channels: int) -> dict[str, Any]:
    """Widths ÷8 (depth, norm, activation and every loss/optimizer setting kept) when the recipe's
    model is too big to step quickly on a shared CPU."""
    with torch.device("meta"):
        n = sum(p.numel() for p in create_model(family, **model, image_size=size, channels=channels).parameters())
    if n <= 300_000:
        return {}

    def cut(v: Any) -> Any:
        return max(4, v // 8) if v else v

    out: dict[str, Any] = {}
    for key in WIDTH_KEYS:
        if key in model:
            v = model[key]
            out[key] = [cut(x) for x in v] if isinstance(v, list) else cut(v)
    return out


def _size(family: str, model: dict[str, Any], channels: int) -> int:
    """The smallest substitute size the family takes (28 for MNIST-like recipes, else 32)."""
    for size in (28, 32):
        try:
            make_config(family, **model, image_size=size, channels=channels)
            return size
        except UsageError:
            continue
    raise AssertionError(f"{family} takes neither 28 nor 32 px")


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A strictly loadable AlexNet state dict with a random trunk (no download possible here). The
    classifier, which LPIPS never uses, is a zero-stride view: right shapes, a few bytes on disk."""
    import torchvision

    with torch.device("meta"):
        ref = torchvision.models.alexnet().state_dict()
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 if k.startswith("features.") else
             torch.zeros(1).expand(v.shape) for k, v in ref.items()}
    path = tmp_path_factory.mktemp("weights") / "alexnet-random.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def quickdraw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's three QuickDraw classes as <class>.npy bitmaps (N×784 uint8), 4 drawings each."""
    folder = tmp_path_factory.mktemp("quickdraw")
    rng = np.random.default_rng(0)
    for name in ("rabbit", "snowman", "yoga"):
        np.save(folder / f"{name}.npy", (rng.random((4, 784)) > 0.8).astype(np.uint8) * 255)
    return folder


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_trains_one_step(path: Path, tmp_path: Path, alexnet_file: Path, quickdraw: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The per-epoch loss plot and image grids cost ~1.5 s a run and do not depend on the recipe
    # (test_train covers them): skipped so 30+ recipes fit the time budget.
    from aecli.training.logs import MetricsLog
    from aecli.training.trainer import Trainer

    monkeypatch.setattr(MetricsLog, "plot", lambda *args, **kwargs: None)
    monkeypatch.setattr(Trainer, "_write_grids", lambda *args, **kwargs: [])
    recipe = load(path)
    family, channels = recipe["family"], recipe["channels"]
    model = recipe.get("model", {})
    size = _size(family, model, channels)
    steps = max(1, recipe.get("kl_cycles", 0))  # a cyclical schedule needs one step per cycle at least
    data = str(quickdraw) if "quickdraw" in recipe["data"] else f"shapes:{2 + steps * BATCH}"
    overrides = dict(data=data, image_size=size, val_count=2, val_fraction=None, epochs=1, batch_size=BATCH,
                     out=str(tmp_path / "run"), device="cpu", workers=1, log_every=1000, grid_size=4,
                     model=_shrunk(family, model, size, channels))
    if recipe.get("lpips", 0) > 0:
        overrides["lpips_weights"] = str(alexnet_file)
    cfg = build_config(family, overrides, set(overrides), recipe)
    assert cfg.recon == recipe.get("recon", "mse") and cfg.betas == tuple(recipe["betas"])  # loss/optim kept
    result = train(cfg)
    assert result.steps == steps
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epoch = next(r for r in rows if r["kind"] == "epoch" and r["split"] == "train")
    numbers = {k: v for k, v in epoch.items() if isinstance(v, float)}
    assert all(math.isfinite(v) for v in numbers.values())
    if family == "gan":
        assert {"d_loss", "g_loss"} <= set(epoch)
    else:
        assert "recon" in epoch
    if recipe.get("lpips", 0) > 0:
        assert epoch["lpips"] > 0
    if family.endswith("vae") and not family.startswith("vq"):
        assert "kl" in epoch
    if family.startswith("vq"):
        assert epoch["vq_perplexity"] >= 1 and 0 < epoch["vq_used"] <= 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    for key in ("recon", "reduction", "beta", "lr", "lr_d", "weight_decay", "scheduler", "free_bits",
                "kl_warmup_steps", "lpips", "optimizer"):
        if key in recipe:
            assert saved[key] == recipe[key], key


# ---------------------------------------------------------------------------------------------- scripts
def cli_options() -> dict[str, set[str]]:
    """`train` → {--data, ...}; `weights check` → {...}: every command's options, from the Typer app."""
    import typer

    from aecli.cli import app

    found: dict[str, set[str]] = {}

    def walk(cmd: Any, prefix: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])
            return
        opts = {"--help", "-h"}
        for p in cmd.params:
            if p.param_type_name == "option":
                opts.update(p.opts + p.secondary_opts)
        found[" ".join(prefix)] = opts

    walk(typer.main.get_command(app), [])
    return found


def aecli_calls(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(command, [--options]) of every `aecli CMD ...` in shell text; a call continues over lines ending
    in a backslash and stops at ;, &&, ||, |, ) or a backquote."""
    calls = []
    for line in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines():
        for m in re.finditer(r"(?:^|(?<=[\s;&|(`]))aecli\s+([^;&|)`]*)", line):
            tokens = m.group(1).split()
            cmd = " ".join(tokens[:2]) if tokens[:1] == ["weights"] else tokens[0]
            calls.append((cmd, [t.split("=")[0] for t in tokens if re.match(r"--?[a-z]", t)]))
    return calls


def _check_calls(calls: list[tuple[str, list[str]]], where: str) -> None:
    known = cli_options()
    for cmd, opts in calls:
        assert cmd in known, f"{where}: `aecli {cmd}` is not a command"
        unknown = [o for o in opts if o not in known[cmd]]
        assert not unknown, f"{where}: `aecli {cmd}` has no option(s) {unknown}"


def test_there_are_end_to_end_scripts() -> None:
    names = {p.name for p in SCRIPTS}
    assert "seed000_study_mini.sh" in names and len(names) >= 3
    study = (EXAMPLES / "seed000_study_mini.sh").read_text().splitlines()
    code = [ln for ln in study if not ln.lstrip().startswith("#")]
    evaluates = [c for c in aecli_calls(code) if c[0] == "evaluate"]
    assert len(evaluates) == 1  # the whole study is compared in one table


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash_using_real_options(path: Path) -> None:
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    assert "set -euo pipefail" in text and 'OUT=${OUT:-runs/examples}' in text
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    calls = aecli_calls(lines)
    assert {c for c, _ in calls} >= {"train", "evaluate", "reconstruct", "tsne"}
    _check_calls(calls, path.name)
    for config in re.findall(r"(seed\d{3}_[\w.]+?\.toml)", text):
        assert (EXAMPLES / config).exists(), f"{path.name} uses missing {config}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_commands_in_recipe_headers_exist(path: Path) -> None:
    """Header commands start a line (or sit in backquotes); a wrapped one continues on deeper-indented lines."""
    header = [ln[1:] for ln in path.read_text().splitlines() if ln.startswith("#")]
    logical: list[str] = re.findall(r"`(aecli [^`]+)`", "\n".join(header))
    depth = -1
    for ln in header:
        indent = len(ln) - len(ln.lstrip())
        if ln.lstrip().startswith("aecli "):
            logical.append(ln.strip())
            depth = indent
        elif depth >= 0 and indent > depth and ln.strip():
            logical[-1] += " " + ln.strip()
        else:
            depth = -1
    assert logical or not path.stem.startswith(("seed000", "seed002", "seed004")), "no example command"
    _check_calls(aecli_calls(logical), path.name)


def test_option_checker_catches_mistakes() -> None:
    calls = aecli_calls(["aecli train --config x.toml \\", "  --no-such-option 3 && aecli weights check -m lpips"])
    assert calls == [("train", ["--config", "--no-such-option"]), ("weights check", ["-m"])]
    with pytest.raises(AssertionError, match="no-such-option"):
        _check_calls(calls, "test")
    with pytest.raises(AssertionError, match="not a command"):
        _check_calls([("trian", [])], "test")
