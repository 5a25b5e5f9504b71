"""The one checkpoint format every command reads: a self-describing safetensors file."""

from aecli.checkpoint.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckpointHeader,
    LoadedCheckpoint,
    load_model,
    read_header,
    save_model,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointHeader",
    "LoadedCheckpoint",
    "load_model",
    "read_header",
    "save_model",
]
