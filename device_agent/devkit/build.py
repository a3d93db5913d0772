"""Build the suite's components GDK-style: each recipe as written, and one deterministic zip per component.

    python -m device_agent.devkit.build [--out DIR] [COMPONENT ...]

From the project root it builds every component into `greengrass-build/`; from a component folder (as
`gdk component build` runs a custom build: that folder is the working directory) it builds that component
into `./greengrass-build/`. The layout is the one GDK and `greengrass-cli --recipeDir --artifactDir` use:

    <out>/recipes/<ComponentName>.yaml                              the recipe, byte for byte
    <out>/artifacts/<ComponentName>/<version>/<ComponentName>.zip   the component's package, device_agent,
                                                                    the lock and (offline builds) wheels

`gdk component publish` then reads the recipe back as `greengrass-build/recipes/<ComponentName>.yaml`: GDK
resolves the folder's `recipe.yaml` link and uses the target's file name (GDK 1.6.2, `GDKProject`).

A component is a folder `components/<dir>/` holding a `gdk-config.json`, a `recipe.yaml` that is the relative
symbolic link `../../recipes/<ComponentName>.yaml` (a recipe has one source) and one Python package. A folder
whose recipe is not written yet is skipped by a full build; every recipe in `recipes/` needs its folder.

Every zip carries `requirements/device.lock`, which the recipe's Install step (`device_agent.install`)
installs into the component's virtual environment. An offline build (`--wheelhouse DIR`, or the environment
variable DEVICE_AGENT_WHEELHOUSE when the caller does not say) also ships, under `wheels/`, every wheel of
DIR whose sha256 the lock lists, so Install needs no package index; a wheel of a pinned release whose hash
the lock does not list is an error (it is not the file that was locked).

The zip is deterministic: entries sorted, no directory entries, fixed times (1980-01-01), fixed modes (0600)
and compression level, so the same sources give the same bytes whatever the files' times, modes or order on
disk (with the same zlib). Files are written atomically (temporary file, fsync, rename), 0600 in 0700 folders.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import stat
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from device_agent.devkit.errors import DevkitError, RecipeError
from device_agent.devkit.recipe_model import Unarchive
from device_agent.devkit.recipes import RECIPE_SUFFIXES, artifact_file_name, load_recipe, parse_version
from device_agent.errors import DeviceAgentError
from device_agent.files import atomic_write, ensure_private_dir
from device_agent.install import (
    LOCK_PATH,
    WHEELS_DIR,
    InstallError,
    Pin,
    canonical_name,
    file_sha256,
    parse_lock,
)

logger = logging.getLogger(__name__)

LIBRARY: Final = "device_agent"
GDK_CONFIG: Final = "gdk-config.json"
# The names GDK looks for in a project folder (exactly one must exist).
RECIPE_LINKS: Final = ("recipe.yaml", "recipe.json")
BUILD_DIR: Final = "greengrass-build"
# The wheels an offline build ships when the caller names none (scripts/_venv.sh points it at the dev
# wheelhouse for the virtual device; scripts/build clears it unless asked for --wheels).
WHEELHOUSE_ENV: Final = "DEVICE_AGENT_WHEELHOUSE"

# Zip entries: the earliest time a zip can hold, a regular file readable and writable by its owner only.
ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_ATTR: Final = (stat.S_IFREG | 0o600) << 16
ZIP_UNIX: Final = 3  # "made by" Unix, so unzip reads external_attr as a Unix mode on every platform
ZIP_LEVEL: Final = 9

# What a package ships: its sources and the PEP 561 marker. Everything else stays home.
_SHIPPED_SUFFIX: Final = ".py"
_SHIPPED_NAMES: Final = frozenset({"py.typed"})
_SKIPPED_DIRS: Final = frozenset(
    {"__pycache__", "tests", "test", "venv", "node_modules", BUILD_DIR, "zip-build"}
)
_TEST_FILE: Final = re.compile(r"(test_.*|.*_test|conftest)\.py")
# GDK's component name pattern; "." and ".." would be path segments, not names.
_COMPONENT_NAME: Final = re.compile(r"[A-Za-z0-9_.-]+")


class BuildError(DevkitError):
    """The project cannot be built as it is; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class ComponentSource:
    """A component folder that passed every check: what the build reads."""

    name: str
    version: str
    folder: Path
    package: Path
    recipe: Path  # the recipe's one source, in recipes/


@dataclass(frozen=True)
class UnwrittenComponent:
    """A component folder whose recipe link is right but points at a recipe not written yet."""

    name: str
    folder: Path
    recipe: Path


@dataclass(frozen=True)
class Discovery:
    components: tuple[ComponentSource, ...]
    unwritten: tuple[UnwrittenComponent, ...]


@dataclass(frozen=True)
class BuiltComponent:
    name: str
    version: str
    recipe: Path
    artifact: Path
    artifact_size: int
    file_count: int
    wheel_count: int = 0


class _FromEnvironment:
    """The default of `wheels`: the folder named by DEVICE_AGENT_WHEELHOUSE, or none when it is unset."""


FROM_ENVIRONMENT: Final = _FromEnvironment()


# ----------------------------------------------------------------------------------------------------
# Discovery and checks


def discover(project: Path) -> Discovery:
    """Every component folder of `project`, checked against its recipe; BuildError names the first problem."""
    project = Path(project)
    recipes_dir = project / "recipes"
    components: list[ComponentSource] = []
    unwritten: list[UnwrittenComponent] = []
    seen: dict[str, Path] = {}
    components_dir = project / "components"
    folders = sorted(p for p in components_dir.iterdir() if p.is_dir()) if components_dir.is_dir() else []
    for folder in folders:
        if not (folder / GDK_CONFIG).is_file():
            continue  # not a GDK project (yet)
        name, version = _read_gdk_config(folder / GDK_CONFIG)
        if name in seen:
            raise BuildError(f"{folder / GDK_CONFIG}: {name} is already built by {seen[name] / GDK_CONFIG}")
        seen[name] = folder
        recipe = _recipe_source(folder, name, recipes_dir)
        if not recipe.exists():
            unwritten.append(UnwrittenComponent(name, folder, recipe))
            continue
        _check_recipe(recipe, name, version, folder / GDK_CONFIG)
        components.append(ComponentSource(name, version, folder, _package(folder), recipe))
    linked = {c.recipe.name for c in components} | {u.recipe.name for u in unwritten}
    if recipes_dir.is_dir():
        for path in sorted(recipes_dir.iterdir()):
            if path.suffix.lower() in RECIPE_SUFFIXES and path.name not in linked:
                raise BuildError(
                    f"{path}: no component folder builds this recipe (expected components/<dir>/ with a "
                    f"{GDK_CONFIG} naming {path.stem} and recipe{path.suffix} -> ../../recipes/{path.name})"
                )
    return Discovery(tuple(components), tuple(unwritten))


def _read_gdk_config(path: Path) -> tuple[str, str]:
    """(component name, version) from a GDK 1.x config, after the checks the build relies on."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BuildError(f"{path}: cannot read it as JSON: {e}") from e
    if not isinstance(document, dict) or "gdk_version" not in document:
        raise BuildError(f"{path}: expected an object with 'component' and 'gdk_version' (GDK's format)")
    components = document.get("component")
    if not isinstance(components, dict) or len(components) != 1:
        raise BuildError(f"{path}: 'component' must map exactly one component name to its settings")
    [(name, settings)] = components.items()
    if not _COMPONENT_NAME.fullmatch(name) or name in {".", ".."}:
        raise BuildError(f"{path}: invalid component name {name!r}")
    if not isinstance(settings, dict):
        raise BuildError(f"{path}: component.{name} must be an object")
    version = settings.get("version")
    if not isinstance(version, str):
        raise BuildError(f'{path}: component.{name}.version must be a version string such as "1.0.0"')
    try:
        parse_version(version)
    except RecipeError as e:
        raise BuildError(f"{path}: component.{name}.version: a fixed semantic version is needed: {e}") from e
    if not isinstance(settings.get("author"), str):
        raise BuildError(f"{path}: component.{name}.author is missing")
    build = settings.get("build")
    if (
        not isinstance(build, dict)
        or build.get("build_system") != "custom"
        or not build.get("custom_build_command")
    ):
        raise BuildError(f"{path}: component.{name}.build must be a custom build with a custom_build_command")
    publish = settings.get("publish")
    if not isinstance(publish, dict) or not publish.get("bucket") or not publish.get("region"):
        raise BuildError(f"{path}: component.{name}.publish needs a bucket and a region")
    return name, version


def _recipe_source(folder: Path, name: str, recipes_dir: Path) -> Path:
    """The recipe in recipes/ that the folder's recipe link points to; the link must be exactly right."""
    present = [folder / n for n in RECIPE_LINKS if (folder / n).is_symlink() or (folder / n).exists()]
    if not present:
        raise BuildError(f"{folder}: no recipe.yaml (it must be the symbolic link ../../recipes/{name}.yaml)")
    if len(present) > 1:
        raise BuildError(f"{folder}: both recipe.yaml and recipe.json; GDK needs exactly one")
    link = present[0]
    expected = f"../../recipes/{name}{link.suffix}"
    if not link.is_symlink():
        raise BuildError(
            f"{link}: a file, not a symbolic link; a recipe has one source: make it a link to {expected}"
        )
    target = str(link.readlink())
    if target != expected:
        raise BuildError(f"{link}: links to {target!r}; it must be the relative link {expected!r}")
    return recipes_dir / f"{name}{link.suffix}"


def _check_recipe(recipe_path: Path, name: str, version: str, config: Path) -> None:
    recipe = load_recipe(recipe_path)  # RecipeError names the file and key
    if recipe.name != name:
        raise BuildError(f"{recipe_path}: ComponentName is {recipe.name!r} but {config} builds {name!r}")
    if recipe.version != version:
        raise BuildError(
            f"{recipe_path}: ComponentVersion is {recipe.version!r} but {config} says {version!r}"
        )
    zip_name = f"{name}.zip"
    if not any(artifact_file_name(a) == zip_name and a.unarchive is Unarchive.ZIP for a in recipe.artifacts):
        raise BuildError(
            f"{recipe_path}: no artifact {zip_name} with Unarchive: ZIP (the file this build makes), e.g. "
            f"URI: s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{zip_name}"
        )


def _package(folder: Path) -> Path:
    packages = sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "__init__.py").is_file()
    )
    if not packages:
        raise BuildError(f"{folder}: no Python package (a folder holding __init__.py)")
    if len(packages) > 1:
        names = ", ".join(p.name for p in packages)
        raise BuildError(f"{folder}: more than one Python package ({names}); a component ships one")
    if packages[0].name == LIBRARY:
        raise BuildError(f"{packages[0]}: a component package cannot be named {LIBRARY}")
    return packages[0]


# ----------------------------------------------------------------------------------------------------
# The zip


def shipped_files(
    package: Path, arc_root: str, *, skip: frozenset[str] = frozenset()
) -> list[tuple[str, Path]]:
    """(zip name, file) for every file of `package` an artifact ships, sorted by zip name.

    Sources and `py.typed` only: never caches, tests, hidden files, virtual environments or the top-level
    folders named in `skip`. A symbolic link among them is an error (what it points to is not ours to ship).
    """
    files: list[tuple[str, Path]] = []
    for current, dirnames, filenames in os.walk(package):
        here = Path(current)
        kept = []
        for d in dirnames:
            path = here / d
            if _skipped_dir(path, skip=skip if here == package else frozenset()):
                continue
            if path.is_symlink():
                raise BuildError(f"{path}: a symbolic link; artifacts hold regular files only")
            kept.append(d)
        dirnames[:] = kept
        for f in filenames:
            path = here / f
            if f.startswith(".") or _TEST_FILE.fullmatch(f):
                continue
            if not (f.endswith(_SHIPPED_SUFFIX) or f in _SHIPPED_NAMES):
                continue
            if path.is_symlink() or not path.is_file():
                raise BuildError(f"{path}: not a regular file; artifacts hold regular files only")
            files.append((str(PurePosixPath(arc_root, path.relative_to(package).as_posix())), path))
    return sorted(files)


def _skipped_dir(path: Path, *, skip: frozenset[str]) -> bool:
    name = path.name
    return (
        name.startswith(".")
        or name in _SKIPPED_DIRS
        or name in skip
        or (path / "pyvenv.cfg").exists()  # a virtual environment, whatever its name
    )


def zip_bytes(files: Sequence[tuple[str, Path]]) -> bytes:
    """A deterministic zip of `files` (zip name, source): same names and contents, same bytes.

    Wheels are stored as they are: they are zips already, and deflating them again only costs time.
    """
    buffer = io.BytesIO()  # seekable, so no data descriptors: sizes and CRCs sit in the local headers
    with zipfile.ZipFile(buffer, "w") as archive:
        for arcname, source in sorted(files):
            info = zipfile.ZipInfo(arcname, date_time=ZIP_TIME)
            info.create_system = ZIP_UNIX
            info.external_attr = ZIP_FILE_ATTR
            stored = arcname.endswith(".whl")
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes(), compresslevel=None if stored else ZIP_LEVEL)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------
# The lock and the wheels


def read_lock(project: Path) -> tuple[Path, tuple[Pin, ...]]:
    """The project's lock and its pins; BuildError when it is missing or not a hash-pinned lock."""
    path = project / LOCK_PATH
    try:
        pins = parse_lock(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BuildError(f"{path}: cannot read the lock ({e.strerror}); write it with scripts/lock") from e
    except InstallError as e:
        raise BuildError(f"{path}: {e}") from e
    unhashed = [p.name for p in pins if not p.hashes]
    if not pins or unhashed:
        raise BuildError(f"{path}: every pin needs --hash lines (none for: {', '.join(unhashed) or 'all'})")
    return path, pins


def locked_wheels(wheelhouse: Path, pins: Sequence[Pin]) -> list[tuple[str, Path]]:
    """(zip name, file) for the wheels of `wheelhouse` that the lock pins, each checked against its hashes.

    Wheels of other releases are left out (a shared wheelhouse holds many). Every pin needs a wheel: an
    offline artifact that lacks one would fail on the device, so the build fails instead.
    """
    if not wheelhouse.is_dir():
        raise BuildError(f"{wheelhouse}: no such wheel folder (scripts/build --wheels fills one)")
    by_name = {p.name: p for p in pins}
    chosen: list[tuple[str, Path]] = []
    covered: set[str] = set()
    for path in sorted(wheelhouse.glob("*.whl")):
        name, _, rest = path.name.partition("-")
        pin = by_name.get(canonical_name(name))
        if pin is None or not rest.startswith(f"{pin.version}-"):
            continue
        if file_sha256(path) not in pin.hashes:
            raise BuildError(f"{path}: {pin.name}=={pin.version}, but its sha256 is not in the lock")
        chosen.append((f"{WHEELS_DIR}/{path.name}", path))
        covered.add(pin.name)
    missing = sorted(set(by_name) - covered)
    if missing:
        raise BuildError(f"{wheelhouse}: no locked wheel for {', '.join(missing)}")
    return chosen


def _wheelhouse(wheels: Path | _FromEnvironment | None) -> Path | None:
    if isinstance(wheels, _FromEnvironment):
        named = os.environ.get(WHEELHOUSE_ENV)
        return Path(named) if named else None
    return wheels


# ----------------------------------------------------------------------------------------------------
# Building


def build_components(
    project: Path,
    out: Path,
    names: Sequence[str] | None = None,
    *,
    library: Path | None = None,
    wheels: Path | _FromEnvironment | None = FROM_ENVIRONMENT,
) -> list[BuiltComponent]:
    """Build `names` (every component whose recipe exists, when None) into `out`, GDK's layout.

    `library` is the shared library shipped in every zip (default: `<project>/device_agent`, without its
    `devkit`). `wheels` is the folder an offline build takes its wheels from (None: an online build; by
    default the folder DEVICE_AGENT_WHEELHOUSE names, if set). A full build also removes what an earlier build
    left in `out` for components that are no longer built (a stale recipe there would otherwise be deployed).
    """
    project, out = Path(project), Path(out)
    library = project / LIBRARY if library is None else Path(library)
    if not (library / "__init__.py").is_file():
        raise BuildError(f"{library}: not the {LIBRARY} package (no __init__.py)")
    found = discover(project)
    selected = list(found.components) if names is None else _select(found, names)
    lock, pins = read_lock(project)
    wheelhouse = _wheelhouse(wheels)
    wheel_files = [] if wheelhouse is None else locked_wheels(wheelhouse, pins)
    shared = [
        *shipped_files(library, LIBRARY, skip=frozenset({"devkit"})),
        (LOCK_PATH.as_posix(), lock),
        *wheel_files,
    ]
    built = [_build_one(source, out, shared, len(wheel_files)) for source in selected]
    if names is None:
        _remove_stale(out, built)
    return built


def _select(found: Discovery, names: Sequence[str]) -> list[ComponentSource]:
    by_name = {c.name: c for c in found.components}
    unwritten = {u.name: u for u in found.unwritten}
    selected = []
    for name in dict.fromkeys(names):
        if name in unwritten:
            raise BuildError(f"{unwritten[name].recipe}: {name}'s recipe does not exist yet")
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            raise BuildError(f"no component named {name!r} (components with a recipe: {known})")
        selected.append(by_name[name])
    return selected


def _build_one(
    source: ComponentSource, out: Path, shared_files: Sequence[tuple[str, Path]], wheel_count: int
) -> BuiltComponent:
    package_files = shipped_files(source.package, source.package.name)
    files = sorted([*package_files, *shared_files])
    data = zip_bytes(files)
    recipes_dir = _private_dirs(out, "recipes")
    artifact_dir = _private_dirs(out, "artifacts", source.name, source.version)
    recipe = recipes_dir / source.recipe.name
    artifact = artifact_dir / f"{source.name}.zip"
    atomic_write(recipe, source.recipe.read_bytes())  # GDK's custom build does no transform
    atomic_write(artifact, data)
    logger.info(
        "build.component_built",
        extra={"component": source.name, "version": source.version, "bytes": len(data), "files": len(files)},
    )
    return BuiltComponent(source.name, source.version, recipe, artifact, len(data), len(files), wheel_count)


def _private_dirs(out: Path, *parts: str) -> Path:
    """`out/part/...`, every level a 0700 directory of ours."""
    current = ensure_private_dir(out)
    for part in parts:
        current = ensure_private_dir(current / part)
    return current


def _remove_stale(out: Path, built: Sequence[BuiltComponent]) -> None:
    recipes = {b.recipe.name for b in built}
    versions = {b.name: b.version for b in built}
    for path in _entries(out / "recipes"):
        if path.name not in recipes:
            _remove(path)
    for component in _entries(out / "artifacts"):
        if component.name not in versions:
            _remove(component)
            continue
        for version in _entries(component):
            if version.name != versions[component.name]:
                _remove(version)


def _entries(directory: Path) -> Iterator[Path]:
    return iter(sorted(directory.iterdir())) if directory.is_dir() else iter(())


def _remove(path: Path) -> None:
    logger.info("build.stale_removed", extra={"path": str(path)})
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


# ----------------------------------------------------------------------------------------------------
# Command line


@dataclass(frozen=True)
class _Invocation:
    project: Path
    out: Path
    names: tuple[str, ...] | None


def _invocation(args: argparse.Namespace, cwd: Path) -> _Invocation:
    names = tuple(args.components) or None
    # The project root's gdk-config.json (GDK needs one where it runs) builds the whole suite.
    at_root = (cwd / "components").is_dir() and (cwd / "recipes").is_dir()
    if args.project is None and (cwd / GDK_CONFIG).is_file() and not at_root:
        name, _ = _read_gdk_config(cwd / GDK_CONFIG)
        if cwd.parent.name != "components":
            raise BuildError(f"{cwd}: a component folder must sit in the project's components/ folder")
        if names is not None and set(names) != {name}:
            raise BuildError(f"{cwd / GDK_CONFIG}: this folder builds {name} only, not {', '.join(names)}")
        out = args.out if args.out is not None else cwd / BUILD_DIR
        return _Invocation(cwd.parent.parent, out, (name,))
    project = args.project if args.project is not None else cwd
    if not (project / "components").is_dir() and not (project / "recipes").is_dir():
        raise BuildError(f"{project}: neither the project root nor a component folder ({GDK_CONFIG})")
    return _Invocation(project, args.out if args.out is not None else project / BUILD_DIR, names)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def _shown(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m device_agent.devkit.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument("components", nargs="*", metavar="COMPONENT", help="component names (default: all)")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: ./{BUILD_DIR})")
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"offline build: ship the locked wheels found in DIR (default: ${WHEELHOUSE_ENV}, if set)",
    )
    parser.add_argument("--project", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cwd = Path.cwd()
    try:
        run = _invocation(args, cwd)
        found = discover(run.project)
        wheels = FROM_ENVIRONMENT if args.wheelhouse is None else args.wheelhouse
        built = build_components(run.project, run.out, run.names, wheels=wheels)
    except (DevkitError, DeviceAgentError) as e:
        sys.stderr.write(f"build failed: {e}\n")
        return 1
    for b in built:
        size = f"{b.artifact_size} bytes, {b.file_count} files"
        if b.wheel_count:
            size += f", {b.wheel_count} of them wheels"
        _say(f"built {b.name} {b.version}: {_shown(b.artifact, cwd)} ({size})")
    if run.names is None:
        for u in found.unwritten:
            _say(f"skipped {u.name}: {_shown(u.recipe, cwd)} does not exist yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
