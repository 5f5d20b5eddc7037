"""The dependency rule of the architecture: the pure core imports only the standard library and
itself; adapters never import each other; only daemon.py and cli.py wire things together."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hotline"
CORE = {"roster", "reconcile", "calls", "presence", "queuestate", "staffing"}
ADAPTERS = {"ami", "http", "metrics", "log", "store"}  # spool.py belongs to store
# Modules that make the core impure even though they are in the standard library.
IMPURE = {"asyncio", "logging", "socket", "subprocess", "time", "random", "os", "pathlib", "io"}


def imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_pure_core_imports_only_pure_standard_library_modules_and_the_core() -> None:
    for module in CORE:
        for name in imports(module):
            top = name.split(".")[0]
            if top == "hotline":
                assert name.split(".")[1] in CORE, f"{module} imports {name}"
            else:
                assert top in sys.stdlib_module_names, f"{module} imports {name}"
                assert top not in IMPURE, f"{module} imports {name}"


def test_adapters_do_not_import_each_other() -> None:
    for module in ADAPTERS:
        for name in imports(module):
            parts = name.split(".")
            if parts[0] == "hotline" and len(parts) > 1:
                assert parts[1] not in ADAPTERS - {module}, f"{module} imports {name}"


def test_only_ami_imports_panoramisk_only_store_asyncpg_and_only_the_cli_the_daemon() -> None:
    for path in PACKAGE.glob("*.py"):
        names = imports(path.stem)
        if path.stem != "ami":
            assert not any(n.startswith("panoramisk") for n in names), path.stem
        if path.stem != "store":
            assert not any(n.startswith("asyncpg") for n in names), path.stem
        if path.stem != "cli":
            assert "hotline.daemon" not in names, path.stem
