"""The boundaries in DESIGN.md, enforced: what may import what.

- `device_agent` outside `devkit` never imports `device_agent.devkit` (the devkit is never shipped);
- a component package under `components/<name>/` never imports `device_agent.devkit`, nor another component;
- the on-device library imports only the standard library and the runtime dependencies a device carries.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
LIBRARY = PROJECT / "device_agent"
COMPONENTS = PROJECT / "components"
DEVICE_DEPENDENCIES = {"awsiot", "awscrt", "cryptography", "psutil", "device_agent"}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def library_files() -> list[Path]:
    return [p for p in LIBRARY.rglob("*.py") if "devkit" not in p.relative_to(LIBRARY).parts]


def component_packages() -> dict[str, Path]:
    if not COMPONENTS.is_dir():
        return {}
    packages = {}
    for project in sorted(p for p in COMPONENTS.iterdir() if p.is_dir()):
        for init in project.glob("*/__init__.py"):
            packages[init.parent.name] = init.parent
    return packages


def test_the_library_is_not_empty():
    assert len(library_files()) >= 2  # the checks below must have something to check


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(PROJECT)))
def test_library_never_imports_the_devkit(path: Path):
    offending = [
        (line, name) for line, name in imported_modules(path) if name.startswith("device_agent.devkit")
    ]
    assert offending == [], f"{path.relative_to(PROJECT)} imports the devkit: {offending}"


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(PROJECT)))
def test_library_imports_only_what_a_device_carries(path: Path):
    allowed = set(sys.stdlib_module_names) | DEVICE_DEPENDENCIES
    foreign = [(line, name) for line, name in imported_modules(path) if name.split(".")[0] not in allowed]
    assert foreign == [], f"{path.relative_to(PROJECT)} imports what a device does not carry: {foreign}"


def test_components_import_neither_the_devkit_nor_each_other():
    packages = component_packages()
    problems = []
    for name, package in packages.items():
        others = set(packages) - {name}
        for path in package.rglob("*.py"):
            for line, module in imported_modules(path):
                top = module.split(".")[0]
                if module.startswith("device_agent.devkit") or top in others:
                    problems.append(f"{path.relative_to(PROJECT)}:{line} imports {module}")
    assert problems == []


def test_the_checker_sees_a_violation(tmp_path: Path):
    # The AST walk must catch both import forms, or the boundary tests above could pass vacuously.
    sample = tmp_path / "sample.py"
    sample.write_text("import device_agent.devkit.nucleus\nfrom device_agent.devkit import testing\n")
    assert [name for _, name in imported_modules(sample)] == [
        "device_agent.devkit.nucleus",
        "device_agent.devkit",
    ]


def test_every_recipe_ships_the_library_version():
    """A component reports `device_agent.__version__` in its heartbeats: its recipe must say the same."""
    import yaml  # noqa: PLC0415 - dev dependency, only this test needs it

    from device_agent import __version__  # noqa: PLC0415

    versions = {
        p.name: yaml.safe_load(p.read_text())["ComponentVersion"]
        for p in (PROJECT / "recipes").glob("*.yaml")
    }
    assert versions
    assert set(versions.values()) == {__version__}, versions
