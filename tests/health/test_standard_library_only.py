"""`device-health` and the health log need nothing beyond the standard library.

The technician's tool must work when the component's virtual environment is broken, so the import closure
of `device_agent.health_log` and `device_agent.health_cli` may hold only standard library modules and the
few `device_agent` modules that are themselves standard library only. Checked twice: statically (every
import, followed through the package) and for real (an interpreter without site-packages runs the tool).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.health import samples

PROJECT = Path(__file__).resolve().parents[2]
ROOTS = ("device_agent.health_cli", "device_agent.health_log")
# The package itself (its __init__ reads the version with importlib.metadata), the exception tree and
# the file I/O seam: each imports only the standard library.
ALLOWED_OWN = {
    "device_agent",
    "device_agent.errors",
    "device_agent.fileio",
    "device_agent.health_log",
    "device_agent.health_cli",
}


def module_path(name: str) -> Path:
    parts = name.split(".")
    package = PROJECT.joinpath(*parts, "__init__.py")
    return package if package.exists() else PROJECT.joinpath(*parts[:-1], f"{parts[-1]}.py")


def imports_of(name: str) -> set[str]:
    tree = ast.parse(module_path(name).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):  # every import, also inside functions and under TYPE_CHECKING
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def own_closure() -> tuple[set[str], set[str]]:
    """(device_agent modules reached, other top-level modules reached) from the roots."""
    seen: set[str] = set()
    foreign: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if "." in name:
            todo.append(name.rsplit(".", 1)[0])  # importing a submodule runs its package's __init__
        for imported in imports_of(name):
            if imported.split(".")[0] != "device_agent":
                foreign.add(imported.split(".")[0])
            elif module_path(imported).exists():
                todo.append(imported)
    return seen, foreign


def test_the_static_import_closure_is_the_standard_library() -> None:
    own, foreign = own_closure()
    assert own == ALLOWED_OWN
    assert foreign - set(sys.stdlib_module_names) == set()
    assert "__future__" in foreign  # the walk did see the imports


def test_the_tool_runs_on_an_interpreter_without_site_packages(tmp_path: Path) -> None:
    samples.write_log(tmp_path / "log", "warning")
    script = textwrap.dedent(
        f"""
        import io, json, sys
        sys.path.insert(0, {str(PROJECT)!r})
        from device_agent.health_cli import main
        out = io.StringIO()
        code = main(["--log-dir", {str(tmp_path / "log")!r}, "--json"], stdout=out)
        names = {{name.split(".")[0] for name in sys.modules}}
        loaded = sorted(names - set(sys.stdlib_module_names) - {{"__main__"}})
        own = sorted(name for name in sys.modules if name.startswith("device_agent"))
        status = json.loads(out.getvalue())["status"]
        print(json.dumps({{"code": code, "status": status, "foreign": loaded, "own": own}}))
        """
    )
    # -I: no user site, no environment variables; -S: no site module, so no site-packages at all (as if
    # the component's virtual environment were gone).
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["code"], result["status"]) == (1, "WARN")
    assert result["foreign"] == ["device_agent"]
    assert set(result["own"]) <= ALLOWED_OWN


def test_without_site_packages_the_project_really_cannot_import_its_dependencies() -> None:
    # The check above means something only if the bare interpreter lacks what the device library uses.
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import psutil"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert "No module named 'psutil'" in done.stderr
