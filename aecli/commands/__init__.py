"""One module per CLI command. Each is a thin Typer wrapper over importable library code and must
not import torch at module level: ``aecli --help`` imports every command module."""
