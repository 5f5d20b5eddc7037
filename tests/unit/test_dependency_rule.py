"""The dependency rule of the architecture, checked on the imports of every module under hotline/.

Layers, lowest first: `core` (pure: standard library without I/O or clock, and itself), `config`
(core and the YAML/pydantic stack), then side by side `app` (core, config) and each adapter under
`adapters/` (core, config, itself; never another adapter, never app). Only the composition root
(`cli.py`, `daemon.py`, `__main__.py`) wires things together, and only `cli.py` imports the daemon.
A module that belongs to no layer fails the test.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hotline"
ROOT_MODULES = {"cli", "daemon", "__main__"}
# Modules that make the core impure even though they are in the standard library.
IMPURE = {"asyncio", "logging", "socket", "subprocess", "time", "random", "os", "pathlib", "io"}
# Third-party packages each layer may import (adapters and the root may import any).
THIRD_PARTY = {
    "core": set[str](),
    "config": {"yaml", "pydantic", "pydantic_core"},
    "app": {"structlog"},
}
# The adapters allowed each driver: one, but for aiohttp, which the HTTP listener and the
# supervision API it serves both speak.
DRIVERS: dict[str, str | tuple[str, ...]] = {
    "panoramisk": "adapters.ami",
    "asyncpg": "adapters.store",
    "aiohttp": ("adapters.http", "adapters.api"),
}


def layer_of(relative: Path) -> str:
    """`core`, `config`, `app`, `adapters.<name>` or `root` for a path relative to hotline/."""
    parts = relative.with_suffix("").parts
    if parts == ("__init__",) or parts[0] == "core":
        return "core"
    if parts[0] in ("config", "app"):
        return parts[0]
    if parts[0] == "adapters" and len(parts) > 1 and parts[1] != "__init__":
        return f"adapters.{parts[1]}"
    if parts[0] == "adapters":
        return "adapters"
    if len(parts) == 1 and parts[0] in ROOT_MODULES:
        return "root"
    raise LookupError(f"hotline/{relative} belongs to no layer")


def _allowed(importer: str, imported: str) -> bool:
    if importer == "root" or imported == "core":
        return True
    if imported == "config":
        return importer != "core"
    if imported == "app":
        return importer == "app"
    if imported.startswith("adapters."):
        return importer == imported
    return False


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from hotline.adapters import http` imports the module hotline.adapters.http.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _target_layer(package: Path, name: str) -> str | None:
    """The layer of the hotline module `name` names, or None for a name that is not a module."""
    parts = name.split(".")[1:]
    for end in range(len(parts), 0, -1):
        base = package.joinpath(*parts[:end])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return layer_of(candidate.relative_to(package))
    return None if parts else "core"


def _may_use(layer: str, package: str) -> bool:
    if package in DRIVERS:
        return layer.startswith(DRIVERS[package])
    return layer not in THIRD_PARTY or package in THIRD_PARTY[layer]


def violations(package: Path) -> list[str]:
    problems: list[str] = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        try:
            layer = layer_of(relative)
        except LookupError as exc:
            problems.append(str(exc))
            continue
        for name in sorted(_imports(path)):
            top = name.split(".")[0]
            if top == "hotline":
                target = _target_layer(package, name)
                if target is not None and not _allowed(layer, target):
                    problems.append(f"{relative} ({layer}) imports {name} ({target})")
                if name == "hotline.daemon" and relative != Path("cli.py"):
                    problems.append(f"{relative} imports the daemon")
            elif top in sys.stdlib_module_names:
                if layer == "core" and top in IMPURE:
                    problems.append(f"{relative} (core) imports {name}")
            elif not _may_use(layer, top):
                problems.append(f"{relative} ({layer}) imports {name}")
    return problems


def test_every_module_of_hotline_belongs_to_a_layer_and_keeps_the_rule() -> None:
    assert violations(PACKAGE) == []


def _scratch(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "hotline"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"helpers.py": ""}, "hotline/helpers.py belongs to no layer"),
        ({"adapters/__init__.py": "", "misc/x.py": ""}, "hotline/misc/x.py belongs to no layer"),
        (
            {"core/a.py": "from hotline.adapters.ami import AmiLink\n", "adapters/ami.py": ""},
            "core/a.py (core) imports hotline.adapters.ami (adapters.ami)",
        ),
        ({"core/a.py": "import asyncio\n"}, "core/a.py (core) imports asyncio"),
        ({"core/a.py": "import yaml\n"}, "core/a.py (core) imports yaml"),
        (
            {"adapters/http.py": "from hotline.adapters import ami\n", "adapters/ami.py": ""},
            "adapters/http.py (adapters.http) imports hotline.adapters.ami (adapters.ami)",
        ),
        (
            {"adapters/ami.py": "from hotline.app.membership import X\n", "app/membership.py": ""},
            "adapters/ami.py (adapters.ami) imports hotline.app.membership (app)",
        ),
        (
            {
                "app/x.py": "from hotline.adapters.store import w\n",
                "adapters/store/__init__.py": "",
            },
            "app/x.py (app) imports hotline.adapters.store (adapters.store)",
        ),
        (
            {"config/x.py": "from hotline.app import y\n", "app/y.py": ""},
            "config/x.py (config) imports hotline.app.y (app)",
        ),
        (
            {"adapters/http.py": "import asyncpg\n"},
            "adapters/http.py (adapters.http) imports asyncpg",
        ),
        ({"app/x.py": "import aiohttp\n"}, "app/x.py (app) imports aiohttp"),
        (
            {
                "daemon.py": "from hotline import cli\n",
                "cli.py": "",
                "app/x.py": "import hotline.daemon\n",
            },
            "app/x.py imports the daemon",
        ),
    ],
)
def test_the_rule_catches_an_unassigned_module_and_each_kind_of_leak(
    tmp_path: Path, files: dict[str, str], problem: str
) -> None:
    assert problem in violations(_scratch(tmp_path, files))


def test_a_module_that_keeps_the_rule_passes(tmp_path: Path) -> None:
    files = {
        "core/a.py": "import enum\nfrom hotline.core import b\n",
        "core/b.py": "",
        "config/__init__.py": "import yaml\nfrom hotline.core.a import X\n",
        "app/k.py": "import structlog\nfrom hotline.config import C\nfrom hotline.core import a\n",
        "adapters/ami.py": "import panoramisk\nfrom hotline.config import Config\n",
        "cli.py": "from hotline import daemon\n",
        "daemon.py": "from hotline.adapters import ami\nfrom hotline.app import k\n",
    }
    assert violations(_scratch(tmp_path, files)) == []
