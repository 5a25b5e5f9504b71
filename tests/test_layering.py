"""The package's layers, checked on every import statement (module level and inside functions):
a module imports only from its own package and from layers below it, so the commands stay a thin
shell over importable library code and the library never reaches back up into the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import aecli

ROOT = Path(aecli.__file__).parent
# Top to bottom. A module in layer i may import from its own package and from any layer below i; the
# command line (layer 0) is one unit.
LAYERS = [
    {"cli", "__main__", "commands", "completion"},
    {"analysis", "reporting"},  # t-SNE/latent maps over inference; run-folder reports
    {"inference", "training", "interop"},  # what the commands do
    {"metrics"},
    {"checkpoint", "losses"},
    {"pretrained"},  # LPIPS/Inception networks built from the files below
    {"weights"},  # which pretrained files, where, their hashes, download
    {"models", "data"},
    {"devices", "hashing", "images", "locking", "options", "progress", "untrusted"},  # options: field declarations
    {"atomic"},
    {"errors", ""},  # "": aecli itself (its version)
]
# Imports that break the layering (none left: pretrained-weights construction moved below metrics).
# Nothing may be added here.
KNOWN: set[tuple[str, str]] = set()


def _package(module: str) -> str:
    """aecli.inference.common → inference; aecli.devices → devices; aecli → ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"aecli.{package} is in no layer: add it to LAYERS in {__file__}")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported aecli module) of every import in ``path``, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "aecli":  # from aecli import completion
                found += [(node.lineno, f"aecli.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, m) for line, m in found if m == "aecli" or m.startswith("aecli.")]


def test_every_import_goes_down_the_layers() -> None:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent)
        source = _package(".".join(rel.with_suffix("").parts))
        for line, module in _imports(path):
            target = _package(module)
            if target == source or (source, target) in KNOWN:
                continue
            if _layer(target) < _layer(source) or _layer(target) == _layer(source) != 0:
                bad.append(f"{rel}:{line} imports {module} (layer {_layer(target)} from layer {_layer(source)})")
    assert not bad, "\n".join(bad)


def test_only_the_command_line_imports_the_commands() -> None:
    users = {str(path.relative_to(ROOT.parent)) for path in ROOT.rglob("*.py")
             for _, module in _imports(path) if _package(module) == "commands"}
    assert users and all(u.startswith(("aecli/commands/", "aecli/cli.py")) for u in users), sorted(users)


def test_the_check_sees_function_level_imports(tmp_path: Path) -> None:
    """The walk finds an import inside a function body (where most upward imports hid)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    if True:\n        from aecli.commands._common import resolve_device\n")
    assert _imports(f) == [(3, "aecli.commands._common")]
