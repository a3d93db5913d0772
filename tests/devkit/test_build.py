"""The component build: what goes into a zip, determinism, modes, every check, and a built component running.

A fixture project in tmp_path holds one component (`components/built_probe/`: gdk-config.json, the recipe
link, a package with junk around it) and a small stand-in library with junk of its own, so the zip's contents
can be stated exactly; the tests that run the component ship the real library instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit import virtual_device
from device_agent.devkit.build import (
    BuildError,
    build_components,
    discover,
    main,
    shipped_files,
    zip_bytes,
)
from device_agent.devkit.errors import DevkitError, RecipeError
from device_agent.devkit.recipes import RECIPE_SUFFIXES, install_artifacts, load_recipe, unarchived_path

PROJECT = Path(__file__).resolve().parents[2]
REAL_LIBRARY = PROJECT / "device_agent"
NAME = "com.example.Built"
VERSION = "1.0.0"
PACKAGE = "built_probe"
TOPIC = "built/hello"

RECIPE = """---
# An authored comment and 'odd' quoting: the built recipe keeps them (GDK's custom build does no transform).
RecipeFormatVersion: "2020-01-25"
ComponentName: {name}
ComponentVersion: '{version}'
ComponentPublisher: device-agent tests
ComponentConfiguration:
  DefaultConfiguration:
    accessControl:
      aws.greengrass.ipc.mqttproxy:
        {name}:mqttproxy:1:
          operations: [aws.greengrass#PublishToIoTCore]
          resources: [{topic}]
Manifests:
  - Platform:
      os: linux
    Lifecycle:
      Setenv:
        PYTHONPATH: "{{artifacts:decompressedPath}}/{name}"
      Run: exec python3 -u -m {package}
    Artifacts:
      - URI: s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{artifact}
        Unarchive: ZIP
"""

# The component reports where its code came from, through the real SDK client, to IoT Core.
MAIN = f"""
import asyncio
import importlib.util
import json
import sys

import device_agent
import {PACKAGE}
from device_agent.ipc import IpcSession
from {PACKAGE}.sub import deep


async def main():
    devkit = importlib.util.find_spec("device_agent.devkit")
    ours = [m for name, m in sys.modules.items() if name.split(".")[0] in {{"device_agent", "{PACKAGE}"}}]
    report = {{
        "loaded": sorted(m.__file__ for m in ours if getattr(m, "__file__", None)),
        "devkit": devkit.origin if devkit is not None else None,
        "deep": deep.VALUE,
    }}
    async with IpcSession() as ipc:
        await ipc.publish_to_iot_core("{TOPIC}", json.dumps(report))


asyncio.run(main())
"""

SHIPPED_PACKAGE = [
    f"{PACKAGE}/__init__.py",
    f"{PACKAGE}/__main__.py",
    f"{PACKAGE}/helper.py",
    f"{PACKAGE}/sub/__init__.py",
    f"{PACKAGE}/sub/deep.py",
]
SHIPPED_LIBRARY = [
    "device_agent/__init__.py",
    "device_agent/errors.py",
    "device_agent/metrics/source.py",  # a namespace folder still ships its sources
    "device_agent/py.typed",
    "device_agent/store/__init__.py",
    "device_agent/store/engine.py",
]
# The lock every artifact carries for its Install step (the project's real one).
SHIPPED_LOCK = ["requirements/device.lock"]
# Never shipped: the devkit, caches, tests, hidden files, virtual environments, anything but sources.
JUNK_LIBRARY = [
    "devkit/__init__.py",
    "devkit/build.py",
    "__pycache__/errors.cpython-311.pyc",
    "store/__pycache__/engine.cpython-311.pyc",
    "errors.pyc",
    ".hidden.py",
    ".cache/cached.py",
    "tests/test_errors.py",
    "store/test_engine.py",
    "store/engine_test.py",
    "conftest.py",
    "notes.txt",
    "schema.json",
    "venv/lib/site.py",
    "env/pyvenv.cfg",
    "env/lib/site.py",
]
JUNK_PACKAGE = [
    "__pycache__/helper.cpython-311.pyc",
    "tests/test_helper.py",
    ".venv/lib/thing.py",
    "README.md",
]


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def gdk_config(name: str = NAME, version: str = VERSION, **overrides) -> dict[str, Any]:
    settings = {
        "author": "device-agent tests",
        "version": version,
        "build": {"build_system": "custom", "custom_build_command": ["bash", "../../scripts/build", name]},
        "publish": {"bucket": "device-agent-components", "region": "us-east-1"},
    }
    settings.update(overrides)
    return {"component": {name: settings}, "gdk_version": "1.0.0"}


def recipe_text(name: str = NAME, version: str = VERSION, artifact: str | None = None) -> str:
    return RECIPE.format(
        name=name, version=version, topic=TOPIC, package=PACKAGE, artifact=artifact or f"{name}.zip"
    )


def add_component(project: Path, folder: str = PACKAGE, name: str = NAME, *, recipe: bool = True) -> Path:
    base = project / "components" / folder
    package = base / PACKAGE
    write(package / "__init__.py")
    write(package / "__main__.py", MAIN)
    write(package / "helper.py", "GREETING = 'hello'\n")
    write(package / "sub" / "__init__.py")
    write(package / "sub" / "deep.py", "VALUE = 42\n")
    for junk in JUNK_PACKAGE:
        write(package / junk, "junk\n")
    write(base / "setup_notes.py", "# beside the package, not in it\n")
    write(base / "greengrass-build" / "old.py", "# an old build output\n")
    write(base / "gdk-config.json", json.dumps(gdk_config(name)))
    if recipe:
        write(project / "recipes" / f"{name}.yaml", recipe_text(name))
    (base / "recipe.yaml").symlink_to(f"../../recipes/{name}.yaml")
    return base


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    library = root / "device_agent"
    for name in SHIPPED_LIBRARY:
        write(library.parent / name, f"# {name}\n")
    for junk in JUNK_LIBRARY:
        write(library / junk, "junk\n")
    write(root / "requirements" / "device.lock", (PROJECT / "requirements" / "device.lock").read_text())
    add_component(root)
    return root


@pytest.fixture(autouse=True)
def _no_default_wheelhouse(monkeypatch):
    """scripts/test exports the dev wheelhouse; these builds are online unless a test says otherwise."""
    monkeypatch.delenv("DEVICE_AGENT_WHEELHOUSE", raising=False)


@pytest.fixture
def folder(project: Path) -> Path:
    return project / "components" / PACKAGE


def zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def build(project: Path, out: Path, **kwargs) -> Path:
    [built] = build_components(project, out, **kwargs)
    return built.artifact


# ---- what a build writes -----------------------------------------------------------------------------------


def test_the_zip_holds_the_package_and_the_library_and_nothing_else(project, tmp_path):
    out = tmp_path / "out"
    [built] = build_components(project, out)
    names = zip_names(built.artifact)
    assert names == sorted(SHIPPED_PACKAGE + SHIPPED_LIBRARY + SHIPPED_LOCK)
    assert built.artifact == out / "artifacts" / NAME / VERSION / f"{NAME}.zip"
    assert (built.name, built.version, built.file_count) == (NAME, VERSION, len(names))
    assert built.artifact_size == built.artifact.stat().st_size
    with zipfile.ZipFile(built.artifact) as archive:
        assert archive.read(f"{PACKAGE}/sub/deep.py") == b"VALUE = 42\n"
        assert archive.testzip() is None


def test_the_recipe_is_copied_byte_for_byte(project, tmp_path):
    [built] = build_components(project, tmp_path / "out")
    assert built.recipe == tmp_path / "out" / "recipes" / f"{NAME}.yaml"
    assert built.recipe.read_bytes() == (project / "recipes" / f"{NAME}.yaml").read_bytes()
    assert "URI: s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/" in built.recipe.read_text()


def test_zip_entries_have_fixed_metadata(project, tmp_path):
    artifact = build(project, tmp_path / "out")
    with zipfile.ZipFile(artifact) as archive:
        infos = archive.infolist()
    assert infos
    for info in infos:
        assert not info.is_dir()
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == stat.S_IFREG | 0o600
        assert info.create_system == 3
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.extra == b""


def test_builds_are_byte_identical_whatever_the_files_times_and_modes(project, tmp_path):
    first = build(project, tmp_path / "one").read_bytes()
    assert build(project, tmp_path / "two").read_bytes() == first
    for path in [*project.rglob("*.py"), *project.rglob("py.typed")]:
        os.utime(path, (1_900_000_000, 1_900_000_000))
    (project / "components" / PACKAGE / PACKAGE / "helper.py").chmod(0o755)
    assert build(project, tmp_path / "three").read_bytes() == first
    # The comparison can fail: a changed source changes the bytes.
    write(project / "components" / PACKAGE / PACKAGE / "helper.py", "GREETING = 'hi'\n")
    assert build(project, tmp_path / "four").read_bytes() != first


def test_the_zip_does_not_depend_on_the_order_files_are_listed(project):
    files = shipped_files(project / "device_agent", "device_agent", skip=frozenset({"devkit"}))
    assert len(files) == len(SHIPPED_LIBRARY)
    assert zip_bytes(files) == zip_bytes(list(reversed(files)))


def test_files_are_private_whatever_the_umask(project, tmp_path):
    out = tmp_path / "out"
    previous = os.umask(0)
    try:
        [built] = build_components(project, out)
    finally:
        os.umask(previous)
    for directory in (
        out,
        out / "recipes",
        out / "artifacts",
        out / "artifacts" / NAME,
        built.artifact.parent,
    ):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for file in (built.recipe, built.artifact):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_a_rebuild_replaces_the_artifact_by_renaming(project, tmp_path):
    out = tmp_path / "out"
    artifact = build(project, out)
    old_bytes = artifact.read_bytes()
    with artifact.open("rb") as reader:  # a reader of the old artifact, as a deployment in progress is
        write(project / "components" / PACKAGE / PACKAGE / "helper.py", "GREETING = 'changed'\n")
        assert build(project, out) == artifact
        assert reader.read() == old_bytes  # never truncated or rewritten in place
    assert artifact.read_bytes() != old_bytes
    assert sorted(p.name for p in artifact.parent.iterdir()) == [artifact.name]  # no temporary left


def test_a_full_build_removes_stale_outputs_and_a_named_build_keeps_them(project, tmp_path):
    out = tmp_path / "out"
    build(project, out)
    stale_recipe = write(out / "recipes" / "com.example.Gone.yaml", "stale\n")
    stale_component = write(out / "artifacts" / "com.example.Gone" / "1.0.0" / "com.example.Gone.zip")
    stale_version = write(out / "artifacts" / NAME / "0.9.0" / f"{NAME}.zip")
    build(project, out, names=[NAME])
    assert stale_recipe.exists()
    assert stale_component.exists()
    assert stale_version.exists()
    build(project, out)
    assert not stale_recipe.exists()
    assert not stale_component.parent.parent.exists()
    assert not stale_version.parent.exists()
    assert (out / "recipes" / f"{NAME}.yaml").exists()


def test_a_second_component_gets_its_own_zip(project, tmp_path):
    add_component(project, "second", "com.example.Second")
    built = build_components(project, tmp_path / "out")
    assert [b.name for b in built] == [NAME, "com.example.Second"]
    assert built[1].artifact.name == "com.example.Second.zip"
    assert zip_names(built[1].artifact) == sorted(SHIPPED_PACKAGE + SHIPPED_LIBRARY + SHIPPED_LOCK)
    only = build_components(project, tmp_path / "named", names=["com.example.Second"])
    assert [b.name for b in only] == ["com.example.Second"]
    assert not (tmp_path / "named" / "recipes" / f"{NAME}.yaml").exists()


# ---- the checks ------------------------------------------------------------------------------------------


def _rewrite_recipe(project: Path, **kwargs) -> Path:
    return write(project / "recipes" / f"{NAME}.yaml", recipe_text(**kwargs))


def _relink(folder: Path, target: str) -> Path:
    (folder / "recipe.yaml").unlink()
    (folder / "recipe.yaml").symlink_to(target)
    return folder / "recipe.yaml"


def _copy_instead_of_link(folder: Path) -> Path:
    text = (folder / "recipe.yaml").read_text()
    (folder / "recipe.yaml").unlink()
    return write(folder / "recipe.yaml", text)


def _config(folder: Path, document: object) -> Path:
    return write(folder / "gdk-config.json", json.dumps(document))


def _symlink(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _unlink(path: Path, named: Path) -> Path:
    path.unlink()
    return named


# case: (change (project, folder) -> the path the message must name, a fragment of the message, error type)
MISMATCHES: dict[str, tuple[Callable[[Path, Path], Path], str, type[DevkitError]]] = {
    "recipe name differs": (
        lambda p, f: _rewrite_recipe(p, name="com.example.Other"),
        "ComponentName",
        BuildError,
    ),
    "recipe version differs": (
        lambda p, f: _config(f, gdk_config(version="1.0.1")),
        "ComponentVersion",
        BuildError,
    ),
    "no package": (lambda p, f: _unlink(f / PACKAGE / "__init__.py", f), "no Python package", BuildError),
    "two packages": (
        lambda p, f: write(f / "other" / "__init__.py").parent.parent,
        "more than one Python package",
        BuildError,
    ),
    "recipe.yaml is a copy": (lambda p, f: _copy_instead_of_link(f), "not a symbolic link", BuildError),
    "recipe.yaml is an absolute link": (
        lambda p, f: _relink(f, str(p / "recipes" / f"{NAME}.yaml")),
        "relative link",
        BuildError,
    ),
    "recipe.yaml links outside recipes/": (
        lambda p, f: _relink(f, f"../../elsewhere/{NAME}.yaml"),
        "relative link",
        BuildError,
    ),
    "recipe.yaml links to another recipe": (
        lambda p, f: _relink(f, "../../recipes/com.example.Other.yaml"),
        "relative link",
        BuildError,
    ),
    "both recipe.yaml and recipe.json": (
        lambda p, f: write(f / "recipe.json", "{}").parent,
        "exactly one",
        BuildError,
    ),
    "a recipe with no component folder": (
        lambda p, f: write(p / "recipes" / "com.example.Orphan.yaml", recipe_text("com.example.Orphan")),
        "no component folder builds this recipe",
        BuildError,
    ),
    "gdk-config.json is not JSON": (lambda p, f: write(f / "gdk-config.json", "{"), "JSON", BuildError),
    "gdk-config.json is a zip build": (
        lambda p, f: _config(f, gdk_config(build={"build_system": "zip"})),
        "custom build",
        BuildError,
    ),
    "gdk-config.json has NEXT_PATCH": (
        lambda p, f: _config(f, gdk_config(version="NEXT_PATCH")),
        "fixed semantic version",
        BuildError,
    ),
    "gdk-config.json has no publish region": (
        lambda p, f: _config(f, gdk_config(publish={"bucket": "b"})),
        "region",
        BuildError,
    ),
    "gdk-config.json has no gdk_version": (
        lambda p, f: _config(f, {"component": gdk_config()["component"]}),
        "gdk_version",
        BuildError,
    ),
    "gdk-config.json has two components": (
        lambda p, f: _config(f, {**gdk_config(), "component": {**gdk_config()["component"], "x": {}}}),
        "exactly one",
        BuildError,
    ),
    "recipe names another zip": (
        lambda p, f: _rewrite_recipe(p, artifact="code.zip"),
        f"no artifact {NAME}.zip",
        BuildError,
    ),
    "recipe is not valid YAML": (
        lambda p, f: write(p / "recipes" / f"{NAME}.yaml", "Manifests: [\n"),
        "invalid YAML",
        RecipeError,
    ),
    "a symbolic link in the package": (
        lambda p, f: _symlink(f / PACKAGE / "linked.py", f / PACKAGE / "helper.py"),
        "not a regular file",
        BuildError,
    ),
}


@pytest.mark.parametrize("case", list(MISMATCHES), ids=list(MISMATCHES))
def test_every_mismatch_is_a_typed_error_naming_the_file(project, folder, tmp_path, case):
    change, fragment, error_type = MISMATCHES[case]
    named = change(project, folder)
    with pytest.raises(error_type) as caught:
        build_components(project, tmp_path / "out")
    message = str(caught.value)
    assert isinstance(caught.value, DevkitError)
    assert fragment in message
    assert str(named) in message
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_the_same_component_in_two_folders_is_refused(project, tmp_path):
    second = project / "components" / "copy"
    write(second / PACKAGE / "__init__.py")
    write(second / "gdk-config.json", json.dumps(gdk_config()))
    (second / "recipe.yaml").symlink_to(f"../../recipes/{NAME}.yaml")
    with pytest.raises(BuildError, match="already built by") as caught:
        discover(project)
    assert str(second / "gdk-config.json") in str(caught.value)


def test_a_folder_whose_recipe_is_not_written_yet_is_skipped_unless_named(project, tmp_path):
    add_component(project, "later", "com.example.Later", recipe=False)
    found = discover(project)
    assert [c.name for c in found.components] == [NAME]
    assert [(u.name, u.recipe) for u in found.unwritten] == [
        ("com.example.Later", project / "recipes" / "com.example.Later.yaml")
    ]
    assert [b.name for b in build_components(project, tmp_path / "out")] == [NAME]
    with pytest.raises(BuildError, match="does not exist yet") as caught:
        build_components(project, tmp_path / "out", names=["com.example.Later"])
    assert "com.example.Later.yaml" in str(caught.value)
    with pytest.raises(BuildError, match="no component named"):
        build_components(project, tmp_path / "out", names=["com.example.Nobody"])


def test_folders_without_a_gdk_config_are_not_components(project, tmp_path):
    write(project / "components" / "planned" / "planned" / "__init__.py")
    assert [c.name for c in discover(project).components] == [NAME]


# ---- the built artifact on the local nucleus --------------------------------------------------------------


def test_the_devkit_installs_and_unarchives_the_built_artifact(project, tmp_path):
    out = tmp_path / "out"
    [built] = build_components(project, out)
    recipe = load_recipe(built.recipe)
    root = tmp_path / "device"
    install_artifacts(recipe, artifact_dir=out / "artifacts", root=root)
    unpacked = unarchived_path(root, NAME, VERSION) / NAME
    files = sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file())
    assert files == zip_names(built.artifact)
    assert (unpacked / PACKAGE / "sub" / "deep.py").read_text() == "VALUE = 42\n"


async def test_a_built_component_runs_on_the_local_nucleus_from_its_artifact_alone(
    project, tmp_path, start_device
):
    out = tmp_path / "out"
    build_components(project, out, library=REAL_LIBRARY)
    async with start_device(recipe_dir=out / "recipes", artifact_dir=out / "artifacts") as device:
        [record] = await device.wait_for_published(TOPIC, timeout=60)
        report = json.loads(record.payload)
        unpacked = unarchived_path(device.root, NAME, VERSION) / NAME
    # Every module of the library and the package it loaded came from the artifact, not from this checkout
    # (which the dev environment's editable install would otherwise serve), and the devkit is not in it.
    loaded = [Path(f) for f in report["loaded"]]
    assert unpacked / "device_agent" / "ipc.py" in loaded
    assert unpacked / PACKAGE / "sub" / "deep.py" in loaded
    assert [f for f in loaded if not f.is_relative_to(unpacked)] == []
    assert report["devkit"] is None or not Path(report["devkit"]).is_relative_to(unpacked)
    assert report["deep"] == 42


# ---- command line, scripts/build and the virtual device ---------------------------------------------------


def test_cli_in_a_component_folder_builds_it_into_its_greengrass_build(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    assert main([]) == 0
    out = folder / "greengrass-build"
    artifact = out / "artifacts" / NAME / VERSION / f"{NAME}.zip"
    line = capsys.readouterr().out.strip()
    count = len(SHIPPED_PACKAGE + SHIPPED_LIBRARY + SHIPPED_LOCK)
    assert line == (
        f"built {NAME} {VERSION}: greengrass-build/artifacts/{NAME}/{VERSION}/{NAME}.zip "
        f"({artifact.stat().st_size} bytes, {count} files)"
    )
    # The name `gdk component publish` reads back: GDK resolves recipe.yaml and keeps the target's name.
    assert sorted(p.name for p in (out / "recipes").iterdir()) == [f"{NAME}.yaml"]
    assert (out / "recipes" / f"{NAME}.yaml").read_bytes() == (folder / "recipe.yaml").read_bytes()


def test_cli_in_a_component_folder_builds_only_that_component(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    assert main(["com.example.Other"]) == 1
    assert f"builds {NAME} only" in capsys.readouterr().err
    assert not (folder / "greengrass-build" / "artifacts").exists()


def test_cli_at_the_project_root_builds_all_and_reports_skipped_ones(project, tmp_path, monkeypatch, capsys):
    add_component(project, "later", "com.example.Later", recipe=False)
    monkeypatch.chdir(project)
    assert main(["--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"built {NAME} {VERSION}: ")
    assert lines[1] == "skipped com.example.Later: recipes/com.example.Later.yaml does not exist yet"
    assert (tmp_path / "out" / "artifacts" / NAME / VERSION / f"{NAME}.zip").is_file()


def test_cli_reports_a_broken_project_without_a_traceback(project, folder, monkeypatch, capsys):
    _copy_instead_of_link(folder)
    monkeypatch.chdir(project)
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("build failed: ")
    assert str(folder / "recipe.yaml") in err


def test_scripts_build_works_as_gdks_custom_build_command(folder):
    # GDK runs the command from the component folder with subprocess.run(check=True).
    proc = subprocess.run(
        ["bash", str(PROJECT / "scripts" / "build"), NAME],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"built {NAME} {VERSION}: greengrass-build/artifacts/")
    assert (folder / "greengrass-build" / "recipes" / f"{NAME}.yaml").is_file()
    assert zip_names(folder / "greengrass-build" / "artifacts" / NAME / VERSION / f"{NAME}.zip") == sorted(
        SHIPPED_PACKAGE + SHIPPED_LIBRARY + SHIPPED_LOCK
    )


def test_the_virtual_device_builds_the_suite_then_deploys_it(project, short_root, capsys):
    (project / "device_agent").rename(project / "stand-in-library")
    (project / "device_agent").symlink_to(REAL_LIBRARY)  # the component must run: ship the real library
    code = virtual_device.main(["--project", str(project), "--duration", "0", "--root", str(short_root())])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "built 1 component into greengrass-build/" in out
    assert "deploying 1 components from greengrass-build/recipes/" in out
    assert (project / "greengrass-build" / "artifacts" / NAME / VERSION / f"{NAME}.zip").is_file()


def test_the_virtual_device_falls_back_to_the_examples_without_recipes(project):
    (project / "recipes" / f"{NAME}.yaml").unlink()
    source = virtual_device._source(project)
    assert source.recipe_dir == project / "examples" / "recipes"
    assert not (project / "greengrass-build").exists()


# ---- the real project ------------------------------------------------------------------------------------


def test_the_real_project_builds_every_recipe_and_every_component_folder(tmp_path):
    found = discover(PROJECT)  # raises if a recipe in recipes/ has no component folder
    recipes_dir = PROJECT / "recipes"
    recipes = sorted(
        p.name for p in (recipes_dir.iterdir() if recipes_dir.is_dir() else []) if p.suffix in RECIPE_SUFFIXES
    )
    assert sorted(c.recipe.name for c in found.components) == recipes
    # Vice versa: every GDK project folder is a component whose recipe exists, or one still being written.
    folders = sorted(p.parent for p in (PROJECT / "components").glob("*/gdk-config.json"))
    assert sorted([*(c.folder for c in found.components), *(u.folder for u in found.unwritten)]) == folders
    assert "com.deviceagent.EncryptedStore" in {c.name for c in found.components} | {
        u.name for u in found.unwritten
    }
    built = build_components(PROJECT, tmp_path / "out")
    assert [b.name for b in built] == [c.name for c in found.components]
    for component, source in zip(built, found.components, strict=True):
        names = zip_names(component.artifact)
        assert f"{source.package.name}/__init__.py" in names
        assert f"{source.package.name}/__main__.py" in names
        assert "device_agent/__init__.py" in names
        assert "device_agent/py.typed" in names
        assert "requirements/device.lock" in names
        assert not [
            n
            for n in names
            if n.startswith("device_agent/devkit/")
            or (not n.endswith((".py", "py.typed")) and n != "requirements/device.lock")
        ]
        assert component.recipe.read_bytes() == source.recipe.read_bytes()


def test_the_real_gdk_configs_point_at_scripts_build():
    for config_path in (PROJECT / "components").glob("*/gdk-config.json"):
        [(name, settings)] = json.loads(config_path.read_text())["component"].items()
        command = settings["build"]["custom_build_command"]
        assert command == ["bash", "../../scripts/build", name], config_path
        script = config_path.parent / command[1]
        assert script.resolve() == PROJECT / "scripts" / "build"
        assert os.access(script, os.X_OK)


# ---- the lock and offline builds (bundled wheels) ----------------------------------------------------------


def fake_wheel(folder: Path, filename: str, content: bytes) -> tuple[Path, str]:
    path = folder / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


@pytest.fixture
def wheelhouse(project: Path, tmp_path: Path) -> Path:
    """Stand-in wheels and a lock that pins them (two files for alpha, as for two platforms)."""
    folder = tmp_path / "wheelhouse"
    _, alpha_x86 = fake_wheel(folder, "alpha-1.0-cp311-abi3-manylinux2014_x86_64.whl", b"alpha x86")
    _, alpha_arm = fake_wheel(folder, "alpha-1.0-cp311-abi3-manylinux2014_aarch64.whl", b"alpha arm")
    _, pip = fake_wheel(folder, "pip-26.3-py3-none-any.whl", b"pip")
    fake_wheel(folder, "alpha-0.9-py3-none-any.whl", b"an older release, not locked")
    fake_wheel(folder, "unrelated-2.0-py3-none-any.whl", b"not in the lock")
    write(
        project / "requirements" / "device.lock",
        f"# a lock\nalpha==1.0 \\\n    --hash=sha256:{alpha_x86} \\\n    --hash=sha256:{alpha_arm}\n"
        f"pip==26.3 \\\n    --hash=sha256:{pip}\n",
    )
    return folder


LOCKED_WHEELS = [
    "wheels/alpha-1.0-cp311-abi3-manylinux2014_aarch64.whl",
    "wheels/alpha-1.0-cp311-abi3-manylinux2014_x86_64.whl",
    "wheels/pip-26.3-py3-none-any.whl",
]


def test_an_offline_build_ships_exactly_the_locked_wheels_stored_as_they_are(project, wheelhouse, tmp_path):
    [built] = build_components(project, tmp_path / "out", wheels=wheelhouse)
    names = zip_names(built.artifact)
    assert names == sorted(SHIPPED_PACKAGE + SHIPPED_LIBRARY + SHIPPED_LOCK + LOCKED_WHEELS)
    assert built.wheel_count == len(LOCKED_WHEELS)
    with zipfile.ZipFile(built.artifact) as archive:
        assert archive.read("wheels/pip-26.3-py3-none-any.whl") == b"pip"
        assert archive.getinfo("wheels/pip-26.3-py3-none-any.whl").compress_type == zipfile.ZIP_STORED
        assert archive.getinfo("requirements/device.lock").compress_type == zipfile.ZIP_DEFLATED
        assert (
            archive.read("requirements/device.lock")
            == (project / "requirements" / "device.lock").read_bytes()
        )
    again = build_components(project, tmp_path / "again", wheels=wheelhouse)[0].artifact
    assert again.read_bytes() == built.artifact.read_bytes()


def test_a_wheel_that_is_not_the_locked_file_fails_the_build(project, wheelhouse, tmp_path):
    (wheelhouse / "alpha-1.0-cp311-abi3-manylinux2014_x86_64.whl").write_bytes(b"tampered")
    with pytest.raises(BuildError, match=r"alpha-1.0-cp311-abi3-manylinux2014_x86_64.whl.*not in the lock"):
        build_components(project, tmp_path / "out", wheels=wheelhouse)


def test_an_offline_build_needs_a_wheel_for_every_pin(project, wheelhouse, tmp_path):
    (wheelhouse / "pip-26.3-py3-none-any.whl").unlink()
    with pytest.raises(BuildError, match="no locked wheel for pip"):
        build_components(project, tmp_path / "out", wheels=wheelhouse)
    with pytest.raises(BuildError, match="no such wheel folder"):
        build_components(project, tmp_path / "out", wheels=tmp_path / "missing")


def test_the_wheelhouse_variable_is_the_default_and_none_means_online(
    project, wheelhouse, tmp_path, monkeypatch
):
    monkeypatch.setenv("DEVICE_AGENT_WHEELHOUSE", str(wheelhouse))
    [offline] = build_components(project, tmp_path / "offline")
    assert [n for n in zip_names(offline.artifact) if n.startswith("wheels/")] == LOCKED_WHEELS
    [online] = build_components(project, tmp_path / "online", wheels=None)
    assert [n for n in zip_names(online.artifact) if n.startswith("wheels/")] == []


@pytest.mark.parametrize(
    ("lock", "message"),
    [
        (None, "cannot read the lock"),
        ("alpha>=1.0\n", "not an ==-pinned requirement"),
        ("alpha==1.0\n", "every pin needs --hash lines"),
        ("# nothing pinned\n", "every pin needs --hash lines"),
    ],
)
def test_a_missing_or_unhashed_lock_fails_the_build(project, tmp_path, lock, message):
    path = project / "requirements" / "device.lock"
    if lock is None:
        path.unlink()
    else:
        path.write_text(lock)
    with pytest.raises(BuildError, match=message) as error:
        build_components(project, tmp_path / "out")
    assert "device.lock" in str(error.value)


def test_cli_reports_the_wheels_of_an_offline_build(project, wheelhouse, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main(["--wheelhouse", str(wheelhouse)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(f"files, {len(LOCKED_WHEELS)} of them wheels)"), line


# ---- the root GDK project ---------------------------------------------------------------------------------


def test_a_root_with_its_own_gdk_config_builds_every_component(project, monkeypatch, capsys):
    # GDK needs gdk-config.json and recipe.yaml where it runs; at the root they mean "build the suite".
    shutil.copy(PROJECT / "gdk-config.json", project / "gdk-config.json")
    (project / "recipe.yaml").symlink_to(f"recipes/{NAME}.yaml")
    add_component(project, "second", "com.example.Second")
    monkeypatch.chdir(project)
    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["com.example.Built", "com.example.Second"]
    assert sorted(p.name for p in (project / "greengrass-build" / "artifacts").iterdir()) == [
        "com.example.Built",
        "com.example.Second",
    ]


def test_the_real_root_gdk_config_builds_the_suite_through_scripts_build():
    document = json.loads((PROJECT / "gdk-config.json").read_text())
    [(name, settings)] = document["component"].items()
    assert name not in {
        p.stem for p in (PROJECT / "recipes").glob("*.yaml")
    }  # never publishes one by mistake
    assert settings["build"] == {"build_system": "custom", "custom_build_command": ["bash", "scripts/build"]}
    assert document["gdk_version"]
    # GDK refuses a project folder without exactly one recipe file, though a custom build never reads it.
    link = PROJECT / "recipe.yaml"
    assert link.is_symlink()
    assert not link.readlink().is_absolute()
    assert link.resolve().parent == PROJECT / "recipes"
    assert not (PROJECT / "recipe.json").exists()
