"""Read and write the field's KL autoencoder formats for the ``ldm-kl`` family.

Sources ``aecli import`` reads:
- a diffusers ``AutoencoderKL`` folder: ``config.json`` + ``diffusion_pytorch_model.safetensors``
  (or ``.bin``), or a pipeline folder with such a ``vae/`` sub-folder;
- a single-file LDM / Stable Diffusion VAE (``encoder.down.0.block.0.norm1.weight``, …), alone or
  inside a full SD checkpoint (``first_stage_model.`` prefix), as ``.safetensors``, or as ``.ckpt``/
  ``.pt``/``.pth``/``.bin`` read only with ``torch.load(weights_only=True)`` (never unpickled);
- ``hf:OWNER/NAME[/SUBFOLDER]``: fetched with huggingface_hub where there is a network.

``ldm-kl`` uses diffusers' parameter names, so a diffusers state dict loads as it is; the LDM layout
is renamed by ``ldm_to_diffusers``. ``export_diffusers`` writes a folder that
``diffusers.AutoencoderKL.from_pretrained`` loads.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aecli.errors import CheckpointError, UsageError

if TYPE_CHECKING:
    import torch

DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_BIN = "diffusion_pytorch_model.bin"
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SD_SCALING_FACTOR = 0.18215  # Stable Diffusion 1.x/2.x kl-f8 (SDXL: 0.13025)
DEFAULT_IMAGE_SIZE = 256
_VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
# Older diffusers folders (e.g. 2022 uploads) name the attention projections like this.
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LDM_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


# -- configs ---------------------------------------------------------------------------------------
def config_from_diffusers(cfg: dict[str, Any], image_size: int | None = None) -> dict[str, Any]:
    """diffusers ``AutoencoderKL`` config.json → ldm-kl options; refuses what ldm-kl cannot compute."""
    name = cfg.get("_class_name", "AutoencoderKL")
    if name != "AutoencoderKL":
        raise UsageError(f"config.json describes a diffusers {name}, not an AutoencoderKL; aecli imports "
                         "AutoencoderKL (Stable Diffusion-style VAE) folders only")
    levels = len(cfg.get("block_out_channels", ()))
    down = cfg.get("down_block_types", ["DownEncoderBlock2D"] * levels)
    up = cfg.get("up_block_types", ["UpDecoderBlock2D"] * levels)
    if any(t != "DownEncoderBlock2D" for t in down) or any(t != "UpDecoderBlock2D" for t in up):
        raise UsageError(f"config.json uses blocks {sorted(set(down) | set(up))}; ldm-kl has only "
                         "DownEncoderBlock2D/UpDecoderBlock2D (the Stable Diffusion VAE)")
    if cfg.get("act_fn", "silu") != "silu":
        raise UsageError(f"config.json uses act_fn {cfg.get('act_fn')!r}; ldm-kl uses silu")
    cin, cout = cfg.get("in_channels", 3), cfg.get("out_channels", 3)
    if cin != cout:
        raise UsageError(f"config.json has in_channels {cin} but out_channels {cout}; aecli needs them equal")
    if cfg.get("latents_mean") is not None or cfg.get("latents_std") is not None:
        raise UsageError("config.json sets latents_mean/latents_std (per-channel latent statistics); "
                         "ldm-kl records only scaling_factor and shift_factor")
    return {
        "block_out_channels": tuple(cfg.get("block_out_channels", (64,))),
        "layers_per_block": cfg.get("layers_per_block", 1),
        "latent_channels": cfg.get("latent_channels", 4),
        "norm_num_groups": cfg.get("norm_num_groups", 32),
        "scaling_factor": float(cfg.get("scaling_factor", SD_SCALING_FACTOR)),
        "shift_factor": float(cfg.get("shift_factor") or 0.0),
        "use_quant_conv": bool(cfg.get("use_quant_conv", True)),
        "use_post_quant_conv": bool(cfg.get("use_post_quant_conv", True)),
        "mid_block_add_attention": bool(cfg.get("mid_block_add_attention", True)),
        "channels": cin,
        "image_size": int(image_size or cfg.get("sample_size") or DEFAULT_IMAGE_SIZE),
        "output_activation": "none",
    }


def config_to_diffusers(config: Any) -> dict[str, Any]:
    """ldm-kl config → the config.json diffusers' AutoencoderKL is built from."""
    levels = len(config.block_out_channels)
    return {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.27.0",  # the format, not the exporter: any diffusers ≥ 0.27 reads it
        "in_channels": config.channels,
        "out_channels": config.channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": list(config.block_out_channels),
        "layers_per_block": config.layers_per_block,
        "act_fn": "silu",
        "latent_channels": config.latent_channels,
        "norm_num_groups": config.norm_num_groups,
        "sample_size": config.image_size,
        "scaling_factor": config.scaling_factor,
        "shift_factor": config.shift_factor or None,
        "latents_mean": None,
        "latents_std": None,
        "force_upcast": True,
        "use_quant_conv": config.use_quant_conv,
        "use_post_quant_conv": config.use_post_quant_conv,
        "mid_block_add_attention": config.mid_block_add_attention,
    }


# -- state dicts -----------------------------------------------------------------------------------
def _ldm_key(key: str, levels: int) -> str:
    """One LDM name → its diffusers name (``levels``: the number of resolution levels)."""
    def resnet(rest: str) -> str:
        return rest.replace("nin_shortcut", "conv_shortcut")

    m = re.fullmatch(r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{resnet(m[3])}"
    m = re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(.+)", key)
    if m:
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"
    # LDM numbers decoder levels by resolution (up.0 is the last, full-resolution one); diffusers
    # numbers them in execution order.
    m = re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(.+)", key)
    if m:
        return f"decoder.up_blocks.{levels - 1 - int(m[1])}.resnets.{m[2]}.{resnet(m[3])}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(.+)", key)
    if m:
        return f"decoder.up_blocks.{levels - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"
    m = re.fullmatch(r"(encoder|decoder)\.mid\.block_([12])\.(.+)", key)
    if m:
        return f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{resnet(m[3])}"
    m = re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)", key)
    if m:
        return f"{m[1]}.mid_block.attentions.0.{_LDM_ATTENTION[m[2]]}.{m[3]}"
    m = re.fullmatch(r"(encoder|decoder)\.norm_out\.(.+)", key)
    if m:
        return f"{m[1]}.conv_norm_out.{m[2]}"
    m = re.fullmatch(r"(encoder\.conv_in|encoder\.conv_out|decoder\.conv_in|decoder\.conv_out|quant_conv"
                     r"|post_quant_conv)\.(weight|bias)", key)
    if m:
        return key
    raise CheckpointError(f"unexpected tensor {key!r} in an LDM VAE file; it is not a Stable Diffusion "
                          "(kl-f8 style) autoencoder")


def _linear_attention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Attention projections as Linear weights (LDM stores them as 1×1 convs: (C, C, 1, 1))."""
    out = {}
    for k, v in state.items():
        if ".attentions.0.to_" in k and k.endswith(".weight") and v.dim() == 4:
            v = v[:, :, 0, 0]
        out[k] = v
    return out


def ldm_levels(state: dict[str, torch.Tensor]) -> int:
    found = {int(m[1]) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))}
    if not found:
        raise CheckpointError("no encoder.down.N tensors: not an LDM / Stable Diffusion VAE")
    return max(found) + 1


def ldm_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an LDM single-file VAE state dict to diffusers' (= ldm-kl's) layout."""
    levels = ldm_levels(state)
    return _linear_attention({_ldm_key(k, levels): v for k, v in state.items()})


def legacy_diffusers_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old diffusers attention names (query/key/value/proj_attn) → the current ones."""
    out = {}
    for k, v in state.items():
        m = re.fullmatch(r"(.+\.attentions\.0)\.(query|key|value|proj_attn)\.(weight|bias)", k)
        out[f"{m[1]}.{_LEGACY_ATTENTION[m[2]]}.{m[3]}" if m else k] = v
    return _linear_attention(out)


def config_from_ldm_state(state: dict[str, torch.Tensor], norm_num_groups: int) -> dict[str, Any]:
    """The options of an LDM-layout VAE, read off its tensor shapes (GroupNorm's group count is not
    stored in the weights: it is an argument, 32 for every Stable Diffusion VAE)."""
    try:
        levels = ldm_levels(state)
        widths = tuple(int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels))
        blocks = {int(m[1]) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
        return {
            "block_out_channels": widths,
            "layers_per_block": max(blocks) + 1,
            "latent_channels": int(state["decoder.conv_in.weight"].shape[1]),
            "channels": int(state["encoder.conv_in.weight"].shape[1]),
            "norm_num_groups": norm_num_groups,
            "use_quant_conv": "quant_conv.weight" in state,
            "use_post_quant_conv": "post_quant_conv.weight" in state,
            "mid_block_add_attention": any(k.startswith("encoder.mid.attn_1.") for k in state),
            "output_activation": "none",
        }
    except KeyError as exc:
        raise CheckpointError(f"the LDM VAE has no tensor {exc.args[0]}; the file is incomplete") from None


# -- reading sources -------------------------------------------------------------------------------
def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a torch file through ``torch.load(weights_only=True)`` only."""
    import torch

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    if suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError, EOFError …: every way a file can fail
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise CheckpointError(f"{path} cannot be read safely: torch.load(weights_only=True) refused it "
                                  f"({first}). aecli never unpickles files; convert it to .safetensors "
                                  "where you trust it") from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]  # a Lightning checkpoint (LDM's .ckpt)
        if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
            raise CheckpointError(f"{path} does not hold a flat dict of tensors (a state dict)")
        return obj
    raise UsageError(f"{path}: cannot import a {suffix or 'suffix-less'} file; give a diffusers folder, a "
                     f".safetensors file, or a {'/'.join(TORCH_SUFFIXES)} state dict")


def _select_vae(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The autoencoder's tensors of a file: a full SD checkpoint keeps them under first_stage_model.;
    an LDM training checkpoint adds loss.* (discriminator) tensors, which are not part of the model."""
    prefix = "first_stage_model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if k.startswith(_VAE_PREFIXES)}


def fetch_hf(spec: str) -> Path:
    """``hf:OWNER/NAME[/SUBFOLDER]`` → a local folder, via huggingface_hub (needs a network)."""
    parts = spec[len("hf:"):].strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise UsageError(f"{spec}: write hf:OWNER/NAME or hf:OWNER/NAME/SUBFOLDER (e.g. hf:stabilityai/sd-vae-ft-mse)")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UsageError("hf: sources need huggingface_hub (pip install huggingface_hub), or download the "
                         "folder elsewhere and import it from disk") from None
    where = f"{sub}/" if sub else ""
    patterns = [f"{where}{DIFFUSERS_CONFIG}", f"{where}{DIFFUSERS_WEIGHTS}"]
    try:
        root = Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, gated repo: each raises its own hub error
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"cannot fetch {repo} from the Hugging Face Hub ({type(exc).__name__}: {first}). "
                         f"Offline compute nodes cannot reach it: on a machine with internet run "
                         f"`huggingface-cli download {repo} --local-dir DIR`, copy DIR here and run "
                         f"`aecli import DIR{'/' + sub if sub else ''} --out FILE.safetensors`") from None
    return root / sub if sub else root


def read_source(src: str, image_size: int | None = None, scaling_factor: float | None = None,
                norm_num_groups: int = 32) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(ldm-kl options, diffusers-layout state dict, a description) of an import source."""
    path = fetch_hf(src) if src.startswith("hf:") else Path(os.path.expanduser(src))
    if not path.exists():
        raise UsageError(f"{src} does not exist; give a diffusers AutoencoderKL folder, a VAE .safetensors "
                         "file, or hf:OWNER/NAME")
    if path.is_dir():
        if not (path / DIFFUSERS_CONFIG).exists() and (path / "vae" / DIFFUSERS_CONFIG).exists():
            path = path / "vae"  # a whole pipeline folder
        config_file = path / DIFFUSERS_CONFIG
        weights = next((path / n for n in (DIFFUSERS_WEIGHTS, DIFFUSERS_BIN) if (path / n).exists()), None)
        if not config_file.exists() or weights is None:
            raise UsageError(f"{path} is not a diffusers AutoencoderKL folder: it needs {DIFFUSERS_CONFIG} and "
                             f"{DIFFUSERS_WEIGHTS} (or {DIFFUSERS_BIN})")
        try:
            cfg = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{config_file} is not readable JSON ({exc})") from None
        if not isinstance(cfg, dict):
            raise UsageError(f"{config_file} must hold a JSON object")
        options = config_from_diffusers(cfg, image_size)
        if scaling_factor is not None:
            options["scaling_factor"] = scaling_factor
        return options, legacy_diffusers_names(read_tensors(weights)), f"diffusers folder {path}"
    state = _select_vae(read_tensors(path))
    if not state:
        raise CheckpointError(f"{path} holds no autoencoder tensors (encoder.*, decoder.*); it is not a VAE file")
    if any(k.startswith("encoder.down_blocks.") for k in state):  # a diffusers state dict in one file
        raise UsageError(f"{path} holds diffusers-layout weights without their config.json; put both in a "
                         "folder and import the folder")
    options = config_from_ldm_state(state, norm_num_groups)
    options["image_size"] = image_size or DEFAULT_IMAGE_SIZE
    options["scaling_factor"] = SD_SCALING_FACTOR if scaling_factor is None else scaling_factor
    return options, ldm_to_diffusers(state), f"LDM single-file VAE {path}"


def import_checkpoint(src: str, out: str | os.PathLike[str], image_size: int | None = None,
                      scaling_factor: float | None = None, norm_num_groups: int = 32) -> tuple[Path, dict[str, Any]]:
    """Write ``src`` as an aecli ``ldm-kl`` checkpoint; returns the path and the model options."""
    import torch

    from aecli.checkpoint import save_model
    from aecli.data.spec import DataSpec
    from aecli.models import create_model

    if not str(out).endswith(".safetensors"):
        raise UsageError(f"--out must end in .safetensors, got {out}")
    if norm_num_groups < 1:  # checked even where a diffusers config.json gives the value: never ignored silently
        raise UsageError(f"--norm-num-groups must be at least 1, got {norm_num_groups}")
    options, state, what = read_source(src, image_size, scaling_factor, norm_num_groups)
    model = create_model("ldm-kl", **options)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = "; ".join(p for p in (f"missing {', '.join(missing[:4])}" if missing else "",
                                        f"unexpected {', '.join(unexpected[:4])}" if unexpected else "") if p)
        raise CheckpointError(f"{src}: weights do not fit the ldm-kl config read from it ({detail})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{src}: tensor {k} has shape {tuple(v.shape)}, the config needs "
                                  f"{tuple(expected[k].shape)}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    spec = DataSpec(image_size=model.config.image_size, channels=model.config.channels, value_range=(-1.0, 1.0))
    path = save_model(out, model, spec, training={"imported_from": src, "source_format": what})
    return path, model.config.to_dict()


def latent_scale(metadata: dict[str, str], config: dict[str, Any]) -> dict[str, Any] | None:
    """The latent convention ``(z − shift) · scale`` a checkpoint declares, and where it comes from:
    the ``latent_scale`` metadata that ``aecli encode --scale-to-checkpoint`` measured on data (it wins:
    it was measured after training, and on the user's own images), else ldm-kl's config
    (``scaling_factor``/``shift_factor``, e.g. an imported SD VAE's 0.18215), else None."""
    from aecli.checkpoint.format import LATENT_SCALE_KEY

    raw = metadata.get(LATENT_SCALE_KEY)
    if raw:
        try:
            entry = json.loads(raw)
            scale, shift = float(entry["scale_factor"]), float(entry.get("shift_factor") or 0.0)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"checkpoint metadata {LATENT_SCALE_KEY!r} is malformed ({exc}); rerun "
                                  "`aecli encode … --scale-to-checkpoint`") from None
        if not (0 < scale < float("inf")) or shift != shift or abs(shift) == float("inf"):
            raise CheckpointError(f"checkpoint metadata {LATENT_SCALE_KEY!r} holds scale {scale} and shift "
                                  f"{shift}; rerun `aecli encode … --scale-to-checkpoint`")
        return {"scaling_factor": scale, "shift_factor": shift, "from": "aecli encode --scale-to-checkpoint",
                **{k: entry[k] for k in ("source", "split", "n") if k in entry}}
    if "scaling_factor" in config:
        return {"scaling_factor": float(config["scaling_factor"]),
                "shift_factor": float(config.get("shift_factor") or 0.0), "from": "config"}
    return None


def export_diffusers(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                     ema: bool = False) -> Path:
    """Write an ldm-kl checkpoint as a diffusers AutoencoderKL folder (config.json + safetensors); its
    scaling_factor/shift_factor are the checkpoint's ``latent_scale``."""
    import dataclasses

    from safetensors.torch import save_file

    from aecli.atomic import atomic_path, write_text
    from aecli.checkpoint import load_model

    loaded = load_model(checkpoint, "cpu", ema=ema)
    model = loaded.model
    if model.family != "ldm-kl":
        raise UsageError(f"{checkpoint} is a {model.family} model; only ldm-kl checkpoints map onto "
                         "diffusers' AutoencoderKL")
    if model.config.num_classes:
        raise UsageError(f"{checkpoint} is class-conditional; diffusers' AutoencoderKL has no class input")
    if model.config.output_activation != "none":
        raise UsageError(f"{checkpoint} ends in {model.config.output_activation}; diffusers' AutoencoderKL "
                         "has no output activation (train with output_activation=none)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--diffusers {out} is a file; give a folder path")
    # A scale measured by `aecli encode --scale-to-checkpoint` is what a diffusion model trained on
    # this VAE's latents must use: it goes into diffusers' scaling_factor/shift_factor.
    scale = latent_scale(loaded.header.metadata, loaded.header.config)
    assert scale is not None  # every ldm-kl config has a scaling_factor
    config = dataclasses.replace(model.config, scaling_factor=scale["scaling_factor"],
                                 shift_factor=scale["shift_factor"])
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(out / DIFFUSERS_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_text(out / DIFFUSERS_CONFIG, json.dumps(config_to_diffusers(config), indent=2) + "\n")
    return out
