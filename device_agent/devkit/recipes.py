"""Recipes for the local nucleus: loading, version requirements, artifact installation and interpolation.

What each part mirrors in the Greengrass nucleus (NUC) and its model library (COMMON,
aws-greengrass-component-common), so that a recipe that works here works on a device:

- Parsing: COMMON `SerializerFactory` (keys and enum values are case-insensitive), the checks in COMMON
  `ComponentRecipe`, `DependencyProperties`, `ComponentArtifact` and `Permission`; unknown top-level keys are
  refused as GDK's recipe schema does (`gdk/static/recipe_schema.json`, `additionalProperties: false`).
- Manifest selection: COMMON `PlatformHelper.findBestMatch` (first match wins), NUC `config/PlatformResolver`
  (platform detection, `filterPlatform` for `Selections`) and NUC `converter/RecipeLoader` (a manifest's own
  Lifecycle wins over the top-level one).
- Versions and requirements: a port of `com.vdurmont.semver4j` 3.1.0 (`Semver`, `Range`,
  `Requirement.buildNPM`), quirks included, because that is what the nucleus resolves dependencies with.
- Artifacts: the `greengrass-cli deployment create --artifactDir` layout (NUC `DeploymentService
  .copyRecipesAndArtifacts`), NUC `ComponentManager.prepareArtifacts`, `Unarchiver` and
  `models/Permission.toFileSystemPermission`.
- Interpolation: NUC `componentmanager/KernelConfigResolver` (its two regexes, its replace order, Jackson's
  `asText()` and compact JSON for configuration values).
"""

from __future__ import annotations

import filecmp
import json
import logging
import math
import os
import platform as _platform
import re
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from device_agent.devkit.errors import RecipeError
from device_agent.devkit.recipe_model import (
    EMPTY_ENV,
    Artifact,
    Dependency,
    DependencyType,
    Lifecycle,
    LifecycleStep,
    Recipe,
    StepName,
    Unarchive,
)

logger = logging.getLogger(__name__)

RECIPE_FORMAT_VERSION: Final = "2020-01-25"
RECIPE_SUFFIXES: Final = frozenset({".yaml", ".yml", ".json"})

# ----------------------------------------------------------------------------------------------------
# Platform


@dataclass(frozen=True)
class Platform:
    """The platform attributes manifests are matched against (NUC `PlatformResolver.getCurrentPlatform`)."""

    os: str
    architecture: str
    # Only detected on ARM (`uname -m` in armv6l/armv7l/armv8l/...); None elsewhere, as on the nucleus.
    architecture_detail: str | None = None

    @classmethod
    def current(cls) -> Platform:
        machine = _platform.machine().lower()
        arch = _ARCHITECTURES.get(machine, "arm" if "arm" in machine else "unknown")
        detail = machine if arch in {"arm", "aarch64"} and machine in _ARM_DETAILS else None
        if sys.platform.startswith("linux"):
            os_name = "linux"
        elif sys.platform == "darwin":
            os_name = "darwin"
        else:
            os_name = "unknown"
        return cls(os=os_name, architecture=arch, architecture_detail=detail)

    def attributes(self) -> dict[str, str]:
        """The key/value map a manifest's `Platform` is matched against."""
        attrs = {"os": self.os, "architecture": self.architecture}
        if self.architecture_detail:
            attrs["architecture.detail"] = self.architecture_detail
        return attrs


# Python's platform.machine() → the nucleus's names (it maps Java's os.arch the same way).
_ARCHITECTURES: Final = MappingProxyType(
    {
        "x86_64": "amd64",
        "amd64": "amd64",
        "i386": "x86",
        "i486": "x86",
        "i586": "x86",
        "i686": "x86",
        "x86": "x86",
        "aarch64": "aarch64",
        "arm64": "aarch64",
    }
)
_ARM_DETAILS: Final = frozenset({"armv6l", "armv7l", "armv8l", "armv6b", "armv7b", "armv8b"})
_SIMPLE_LABEL: Final = re.compile(r"[a-zA-Z0-9]")


def _attribute_satisfied(name: str, label: str | None, template: str | None, at: _At) -> bool:
    """COMMON `PlatformHelper.isAttributeSatisfied`."""
    if template is None or template == "*":
        return True
    if not label:
        return False
    if len(template) >= 2 and template.startswith("/") and template.endswith("/"):  # noqa: PLR2004
        try:
            return re.fullmatch(template[1:-1], label) is not None
        except re.error as e:
            raise at.error(f"invalid regular expression {template!r}: {e}") from e
    if name in {"os", "architecture"} and template in {"all", "any"}:
        return True
    # Templates starting with another symbol are reserved by the nucleus: they never match.
    if not _SIMPLE_LABEL.match(template):
        return False
    return template == label


# ----------------------------------------------------------------------------------------------------
# Error locations


@dataclass(frozen=True)
class _At:
    """Where a value sits: the recipe file and its key path, for error messages."""

    file: str
    path: str = ""

    def key(self, name: str) -> _At:
        return _At(self.file, f"{self.path}.{name}" if self.path else name)

    def index(self, i: int) -> _At:
        return _At(self.file, f"{self.path}[{i}]")

    def error(self, message: str) -> RecipeError:
        return RecipeError(f"{self.file}: {self.path}: {message}" if self.path else f"{self.file}: {message}")


class _Filtered(dict[str, Any]):
    """A lifecycle mapping after platform selection; remembers each value's key path in the file."""

    def __init__(self) -> None:
        super().__init__()
        self.origins: dict[str, str] = {}


def _child(container: Mapping[str, Any], key: str, at: _At) -> _At:
    if isinstance(container, _Filtered) and key in container.origins:
        return _At(at.file, container.origins[key])
    return at.key(key)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."  # noqa: PLR2004


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class _YamlDate(str):
    """An unquoted YAML date or timestamp, kept as the text written (as Jackson's YAML parser does)."""

    __slots__ = ()


_Fields = dict[str, tuple[_At, Any]]


def _fields(mapping: Mapping[str, Any], at: _At, known: Sequence[str], *, strict: bool) -> _Fields:
    """Known keys of a mapping, matched case-insensitively (COMMON: ACCEPT_CASE_INSENSITIVE_PROPERTIES)."""
    by_lower = {k.lower(): k for k in known}
    found: _Fields = {}
    for key, value in mapping.items():
        where = _child(mapping, key, at)
        canonical = by_lower.get(key.lower())
        if canonical is None:
            if strict:
                raise where.error(f"unknown key (expected one of: {', '.join(known)})")
            logger.warning("%s: %s: unknown key, ignored", where.file, where.path)
            continue
        if canonical in found:
            raise where.error(
                f"duplicate key (keys are case-insensitive; also given as {found[canonical][0].path})"
            )
        found[canonical] = (where, value)
    return found


def _required(fields: _Fields, name: str, at: _At) -> tuple[_At, Any]:
    if name not in fields or fields[name][1] is None:
        raise at.key(name).error("required key is missing")
    return fields[name]


def _string(where: _At, value: Any) -> str:
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {_kind(value)} {_show(value)}")
    if "\0" in value:
        raise where.error("contains a NUL character")
    return str(value)


def _optional_string(fields: _Fields, name: str) -> str | None:
    if name not in fields or fields[name][1] is None:
        return None
    return _string(*fields[name])


def _mapping(where: _At, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise where.error(f"expected a mapping, got {_kind(value)} {_show(value)}")
    return value


def _list(where: _At, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise where.error(f"expected a list, got {_kind(value)} {_show(value)}")
    return value


# ----------------------------------------------------------------------------------------------------
# Reading the document

# Anchors and aliases can make a tiny YAML file expand exponentially; a recipe is never this big.
_MAX_NODES: Final = 200_000


@cache
def _yaml_loader() -> type[Any]:
    import yaml  # noqa: PLC0415 - JSON recipes must load without PyYAML

    class Loader(yaml.SafeLoader):
        pass

    def timestamp(loader: yaml.SafeLoader, node: yaml.Node) -> _YamlDate:
        return _YamlDate(loader.construct_scalar(node))  # type: ignore[arg-type]

    def mapping(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, "expected a mapping", node.start_mark)
        loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            # Keys stay the text written (`1:`, `yes:`, `null:`): Jackson reads every key as a field name.
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain scalars", key_node.start_mark
                )
            result[str(key_node.value)] = loader.construct_object(value_node, deep=True)
        return result

    Loader.add_constructor("tag:yaml.org,2002:timestamp", timestamp)
    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    return Loader


def _parse_yaml(data: bytes, label: str) -> Any:
    import yaml  # noqa: PLC0415

    loader = _yaml_loader()(data)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise RecipeError(f"{label}: invalid YAML: {e}") from e
    finally:
        loader.dispose()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _parse_json(data: bytes, label: str) -> Any:
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RecipeError(f"{label}: invalid JSON: {e}") from e


def _read_document(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in RECIPE_SUFFIXES:
        raise RecipeError(f"{path}: not a recipe file name (expected .yaml, .yml or .json)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the recipe: {e.strerror or e}") from e
    return _parse_json(data, str(path)) if suffix == ".json" else _parse_yaml(data, str(path))


def _plain(value: Any, at: _At, budget: list[int]) -> Any:
    """Check a parsed value is JSON-like and copy it (YAML dates become their text, aliases are expanded)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise at.error("the recipe is too large (or expands too much through YAML aliases)")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, at.key(str(k)), budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, at.index(i), budget) for i, v in enumerate(value)]
    raise at.error(f"unsupported value of type {type(value).__name__} (a recipe holds JSON values only)")


# ----------------------------------------------------------------------------------------------------
# Public loading API


def load_recipe(path: Path, *, platform: Platform | None = None) -> Recipe:
    """Load and validate one recipe file, selecting the manifest for `platform` (default: this machine)."""
    path = Path(path)
    at = _At(str(path))
    try:
        document = _read_document(path)
        return _build_recipe(document, at, platform or Platform.current())
    except RecursionError as e:
        raise at.error("the recipe is nested too deeply") from e


def load_recipe_dir(directory: Path, *, platform: Platform | None = None) -> list[Recipe]:
    """Every recipe under `directory` (walked recursively, as the nucleus copies a `--recipeDir`).

    Files of other types and empty files are skipped, as the nucleus does. Two files declaring the same
    component name and version are an error (the nucleus would silently keep the last one copied).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise RecipeError(f"{directory}: not a directory")
    recipes: list[Recipe] = []
    seen: dict[str, Path] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.suffix.lower() not in RECIPE_SUFFIXES:
            logger.info("%s: not a recipe file name, skipped", path)
            continue
        if path.stat().st_size == 0:
            logger.warning("%s: empty file, skipped", path)
            continue
        recipe = load_recipe(path, platform=platform)
        if recipe.ref in seen:
            raise RecipeError(f"{path}: {recipe.ref} is already declared by {seen[recipe.ref]}")
        seen[recipe.ref] = path
        recipes.append(recipe)
    return recipes


_TOP_KEYS: Final = (
    "RecipeFormatVersion",
    "ComponentName",
    "ComponentVersion",
    "ComponentDescription",
    "ComponentPublisher",
    "ComponentType",
    "ComponentSource",
    "ComponentConfiguration",
    "ComponentDependencies",
    "Manifests",
    "Lifecycle",
)
_NAME: Final = re.compile(r"[a-zA-Z0-9\-_.]+")
_MAX_NAME: Final = 128
_MAX_VERSION: Final = 64
_MAX_VERSION_NUMBER: Final = 999_999
# Versions become directory names; semver4j would accept "1.0.0-a/../../x", the cloud would not.
_VERSION_CHARS: Final = re.compile(r"[0-9A-Za-z.+\-]+")
_COMPONENT_TYPES: Final = (
    "aws.greengrass.generic",
    "aws.greengrass.lambda",
    "aws.greengrass.plugin",
    "aws.greengrass.nucleus",
)


def _build_recipe(document: Any, at: _At, platform: Platform) -> Recipe:
    if not isinstance(document, dict):
        raise at.error(f"a recipe must be a mapping, got {_kind(document)}")
    for key, value in document.items():
        if str(key).lower() == "recipeformatversion" and isinstance(value, _YamlDate):
            raise at.key(key).error(
                f"expected the string '{RECIPE_FORMAT_VERSION}', got an unquoted YAML date; "
                f"quote it: RecipeFormatVersion: '{RECIPE_FORMAT_VERSION}'"
            )
    document = _plain(document, at, [_MAX_NODES])
    fields = _fields(document, at, _TOP_KEYS, strict=True)

    where, value = _required(fields, "RecipeFormatVersion", at)
    if value != RECIPE_FORMAT_VERSION:
        raise where.error(f"expected '{RECIPE_FORMAT_VERSION}', got {_show(value)}")
    name = _component_name(*_required(fields, "ComponentName", at))
    version = _component_version(*_required(fields, "ComponentVersion", at))
    for key in ("ComponentDescription", "ComponentPublisher", "ComponentSource"):
        _optional_string(fields, key)
    component_type = _component_type(fields)
    dependencies = _dependencies(fields)
    configuration = _default_configuration(fields)

    raw_manifests = _manifest_list(fields, at)
    manifests = [_manifest(i, m, fields["Manifests"][0]) for i, m in enumerate(raw_manifests)]
    chosen = _select_manifest(manifests, platform, at)
    lifecycle = _lifecycle(chosen, manifests, fields, at)
    return Recipe(
        name=name,
        version=version,
        description=_optional_string(fields, "ComponentDescription") or "",
        publisher=_optional_string(fields, "ComponentPublisher") or "",
        component_type=component_type,
        dependencies=MappingProxyType(dependencies),
        default_configuration=configuration,
        lifecycle=lifecycle,
        artifacts=chosen.artifacts,
    )


def _component_name(where: _At, value: Any) -> str:
    name = _string(where, value)
    if not name or len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise where.error(
            f"invalid component name {_show(name)}: "
            f"1 to {_MAX_NAME} characters among letters, digits, '-', '_', '.'"
        )
    return name


def _component_version(where: _At, value: Any) -> str:
    if not isinstance(value, str):
        raise where.error(
            f"expected a version string such as '1.0.0', got {_kind(value)} {_show(value)}; quote it"
        )
    try:
        parsed = _semver(value, _STRICT)
    except _SemverError as e:
        raise where.error(
            f"invalid version {_show(value)}: {e} (expected MAJOR.MINOR.PATCH, e.g. 1.0.0)"
        ) from e
    if len(parsed.value) > _MAX_VERSION:
        raise where.error(f"the version is longer than {_MAX_VERSION} characters")
    if max(parsed.major, parsed.minor or 0, parsed.patch or 0) > _MAX_VERSION_NUMBER:
        raise where.error("major, minor and patch cannot exceed 6 digits")
    if parsed.major < 0 or not _VERSION_CHARS.fullmatch(parsed.value):
        raise where.error(
            f"invalid version {_show(value)}: only letters, digits, '.', '-' and '+' are allowed"
        )
    return parsed.value


def _component_type(fields: _Fields) -> str:
    text = _optional_string(fields, "ComponentType")
    if text is None:
        return "aws.greengrass.generic"
    if text.lower() not in _COMPONENT_TYPES:
        raise fields["ComponentType"][0].error(
            f"expected one of {', '.join(_COMPONENT_TYPES)}, got {_show(text)}"
        )
    return text.lower()


def _dependencies(fields: _Fields) -> dict[str, Dependency]:
    if "ComponentDependencies" not in fields:
        return {}
    where, value = fields["ComponentDependencies"]
    result: dict[str, Dependency] = {}
    for dep_name, spec in _mapping(where, value).items():
        dep_at = where.key(dep_name)
        _component_name(dep_at, dep_name)
        if not isinstance(spec, Mapping):
            raise dep_at.error(f"expected a mapping with VersionRequirement, got {_kind(spec)} {_show(spec)}")
        dep = _fields(spec, dep_at, ("VersionRequirement", "DependencyType"), strict=False)
        req_at, req = _required(dep, "VersionRequirement", dep_at)
        requirement = _string(req_at, req)
        try:
            parse_requirement(requirement)
        except RecipeError as e:
            raise req_at.error(str(e)) from e
        kind = _optional_string(dep, "DependencyType") or "HARD"
        if kind.upper() not in DependencyType.__members__:
            raise dep["DependencyType"][0].error(f"expected HARD or SOFT, got {_show(kind)}")
        result[dep_name] = Dependency(
            name=dep_name, version_requirement=requirement, dependency_type=DependencyType(kind.upper())
        )
    return result


def _default_configuration(fields: _Fields) -> Mapping[str, Any]:
    if "ComponentConfiguration" not in fields:
        return MappingProxyType({})
    where, value = fields["ComponentConfiguration"]
    config = _fields(_mapping(where, value), where, ("DefaultConfiguration",), strict=False)
    if "DefaultConfiguration" not in config:
        return MappingProxyType({})
    default_at, default = config["DefaultConfiguration"]
    # Read-only at the top, plain JSON values inside (the config store takes them as they are); _plain already
    # made this a private copy. Use recipe_model.thaw_json for a mutable copy.
    return MappingProxyType(dict(_mapping(default_at, default)))


# ----------------------------------------------------------------------------------------------------
# Manifests


@dataclass(frozen=True)
class _Manifest:
    at: _At
    platform: Mapping[str, str | None]
    selections: tuple[str, ...] | None
    lifecycle: Mapping[str, Any]
    lifecycle_at: _At
    artifacts: tuple[Artifact, ...]


def _manifest_list(fields: _Fields, at: _At) -> list[Any]:
    # The nucleus refuses a recipe without manifests ("Recipe file ... is missing manifests"), GDK too.
    where, value = _required(fields, "Manifests", at)
    manifests = _list(where, value)
    if not manifests:
        raise where.error("at least one manifest is required")
    return manifests


def _manifest(i: int, value: Any, manifests_at: _At) -> _Manifest:
    at = manifests_at.index(i)
    if not isinstance(value, Mapping):
        raise at.error(f"expected a mapping, got {_kind(value)} {_show(value)}")
    fields = _fields(value, at, ("Name", "Platform", "Lifecycle", "Selections", "Artifacts"), strict=False)
    _optional_string(fields, "Name")
    platform: dict[str, str | None] = {}
    if "Platform" in fields:
        platform_at, raw = fields["Platform"]
        for key, template in _mapping(platform_at, raw).items():
            platform[key] = None if template is None else _string(platform_at.key(key), template)
    selections: tuple[str, ...] | None = None
    if "Selections" in fields and fields["Selections"][1] is not None:
        sel_at, raw = fields["Selections"]
        selections = tuple(_string(sel_at.index(j), s) for j, s in enumerate(_list(sel_at, raw)))
    lifecycle: Mapping[str, Any] = {}
    lifecycle_at = at.key("Lifecycle")
    if "Lifecycle" in fields:
        lifecycle_at = fields["Lifecycle"][0]
        lifecycle = _mapping(*fields["Lifecycle"])
    artifacts: tuple[Artifact, ...] = ()
    if "Artifacts" in fields:
        art_at, raw = fields["Artifacts"]
        artifacts = tuple(_artifact(art_at.index(j), a) for j, a in enumerate(_list(art_at, raw)))
    return _Manifest(
        at=at,
        platform=platform,
        selections=selections,
        lifecycle=lifecycle,
        lifecycle_at=lifecycle_at,
        artifacts=artifacts,
    )


def _select_manifest(manifests: Sequence[_Manifest], platform: Platform, at: _At) -> _Manifest:
    attributes = platform.attributes()
    for manifest in manifests:
        if all(
            _attribute_satisfied(k, attributes.get(k), t, manifest.at.key("Platform").key(k))
            for k, t in manifest.platform.items()
        ):
            return manifest
    offered = "; ".join(", ".join(f"{k}={v}" for k, v in m.platform.items()) or "any" for m in manifests)
    raise at.key("Manifests").error(
        f"no manifest for {platform.os}/{platform.architecture} (the manifests offer: {offered})"
    )


def _lifecycle(chosen: _Manifest, manifests: Sequence[_Manifest], fields: _Fields, at: _At) -> Lifecycle:
    """NUC `RecipeLoader.convertLifecycleFromFile`: the manifest's Lifecycle, else the filtered top one."""
    if chosen.lifecycle:
        return _parse_lifecycle(chosen.lifecycle, chosen.lifecycle_at)
    if "Lifecycle" not in fields:
        return Lifecycle()
    where, value = fields["Lifecycle"]
    source = _mapping(where, value)
    keywords = frozenset({"all"}).union(*(m.selections or () for m in manifests))
    filtered = _filter_platform(source, keywords, chosen.selections or (), where.path)
    if filtered is None or not isinstance(filtered[0], dict) or not filtered[0]:
        if source:
            logger.warning("%s: Lifecycle: nothing left for this platform's selections, ignored", at.file)
        return Lifecycle()
    return _parse_lifecycle(filtered[0], _At(at.file, filtered[1]))


def _filter_platform(
    source: Mapping[str, Any], keywords: frozenset[str], selectors: Sequence[str], path: str
) -> tuple[Any, str] | None:
    """NUC `PlatformResolver.filterPlatform`, also tracking the key path of what is kept."""
    if any(k in keywords for k in source):
        chosen = next(((s, source[s]) for s in selectors if source.get(s) is not None), None)
        if chosen is None and source.get("all") is not None:
            chosen = ("all", source["all"])
        ignored = [k for k in source if k not in keywords]
        if ignored:
            logger.warning("%s: keys %s sit beside platform selectors and are ignored", path, ignored)
        if chosen is None:
            return None
        return _filter_value(chosen[1], keywords, selectors, f"{path}.{chosen[0]}")
    result = _Filtered()
    for key, value in source.items():
        kept = _filter_value(value, keywords, selectors, f"{path}.{key}")
        if kept is not None:
            result[key], result.origins[key] = kept
    return result, path


def _filter_value(
    value: Any, keywords: frozenset[str], selectors: Sequence[str], path: str
) -> tuple[Any, str] | None:
    if isinstance(value, Mapping):
        return _filter_platform(value, keywords, selectors, path)
    return None if value is None else (value, path)


# ----------------------------------------------------------------------------------------------------
# Lifecycle

_STEP_KEYS: Final = MappingProxyType(
    {
        "Bootstrap": StepName.BOOTSTRAP,
        "Install": StepName.INSTALL,
        "Startup": StepName.STARTUP,
        "Run": StepName.RUN,
        "Shutdown": StepName.SHUTDOWN,
        "Recover": StepName.RECOVER,
    }
)
_SKIPIF: Final = re.compile(r"(exists|onpath) +(.+)")
# NUC `util/Coerce.toBoolean` for strings; anything else is false.
_TRUE_WORDS: Final = frozenset({"true", "yes", "on", "t", "y", "Y"})


def _parse_lifecycle(mapping: Mapping[str, Any], at: _At) -> Lifecycle:
    fields = _fields(mapping, at, ("Setenv", *_STEP_KEYS), strict=False)
    steps: dict[StepName, LifecycleStep] = {}
    for key, step_name in _STEP_KEYS.items():
        if key in fields:
            step = _parse_step(*fields[key])
            if step is not None:
                steps[step_name] = step
    if StepName.STARTUP in steps and StepName.RUN in steps:
        raise fields["Run"][0].error("a lifecycle defines either Startup or Run, not both")
    setenv = _setenv(*fields["Setenv"]) if "Setenv" in fields else EMPTY_ENV
    return Lifecycle(setenv=setenv, steps=MappingProxyType(steps))


def _parse_step(at: _At, value: Any) -> LifecycleStep | None:
    if value is None:
        return None
    if isinstance(value, str):
        return LifecycleStep(script=_string(at, value))
    if not isinstance(value, Mapping):
        raise at.error(
            f"expected a script (string) or a mapping with Script, got {_kind(value)} {_show(value)}"
        )
    fields = _fields(value, at, ("Script", "RequiresPrivilege", "Skipif", "Timeout", "Setenv"), strict=False)
    script = _string(*_required(fields, "Script", at))
    return LifecycleStep(
        script=script,
        requires_privilege=_privilege(*fields["RequiresPrivilege"])
        if "RequiresPrivilege" in fields
        else False,
        skipif=_skipif(*fields["Skipif"]) if "Skipif" in fields else None,
        timeout=_timeout(*fields["Timeout"]) if "Timeout" in fields else None,
        setenv=_setenv(*fields["Setenv"]) if "Setenv" in fields else EMPTY_ENV,
    )


def _privilege(at: _At, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in _TRUE_WORDS and value != "false":
            logger.warning(
                "%s: %s: %r is read as %s by the nucleus", at.file, at.path, value, value in _TRUE_WORDS
            )
        return value in _TRUE_WORDS
    raise at.error(f"expected true or false, got {_kind(value)} {_show(value)}")


def parse_skipif(expression: str) -> tuple[bool, str, str] | None:
    """Split a Skipif expression into (negated, "exists"|"onpath", argument); None when it is malformed.

    NUC `GenericExternalService.shouldSkip`: trimmed, an optional leading "!", then `(exists|onpath) +(.+)`.
    """
    expr = _java_trim(expression)
    negated = expr.startswith("!")
    if negated:
        expr = _java_trim(expr[1:])
    match = _SKIPIF.fullmatch(expr)
    return None if match is None else (negated, match.group(1), match.group(2))


def _skipif(at: _At, value: Any) -> str | None:
    if value is None:
        return None
    text = _string(at, value)
    if parse_skipif(text) is None:
        raise at.error(
            f"expected 'exists PATH' or 'onpath EXECUTABLE' (optionally after '!'), got {_show(text)}"
        )
    return text


def _timeout(at: _At, value: Any) -> float | None:
    if value is None:
        return None
    number: float
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise at.error(f"expected a number, got {_show(value)}")
    if isinstance(value, str):
        try:
            number = int(_java_int_text(value.strip()))
        except ValueError:
            raise at.error(f"expected a number, got {_show(value)}") from None
    else:
        number = value
    if not math.isfinite(number) or number < 0:
        raise at.error(f"expected a non-negative number of seconds, got {_show(value)}")
    # The nucleus reads timeouts with Coerce.toInt: whole seconds.
    return float(int(number))


def _setenv(at: _At, value: Any) -> Mapping[str, str]:
    if value is None:
        return EMPTY_ENV
    if not isinstance(value, Mapping):
        raise at.error(f"expected a mapping of variable names to values, got {_kind(value)} {_show(value)}")
    env: dict[str, str] = {}
    for key, raw in value.items():
        where = _child(value, key, at)
        if not key or "=" in key or "\0" in key:
            raise where.error("not a valid environment variable name")
        if isinstance(raw, bool):
            text = "true" if raw else "false"  # Java Boolean.toString
        elif isinstance(raw, int):
            text = str(raw)
        elif isinstance(raw, float):
            text = java_double_text(raw)
        elif isinstance(raw, str):
            text = _string(where, raw)
        else:
            raise where.error(f"expected a string, number or boolean, got {_kind(raw)} {_show(raw)}")
        env[key] = text
    return MappingProxyType(env)


# ----------------------------------------------------------------------------------------------------
# Artifacts

_SCHEMES: Final = frozenset({"s3", "greengrass", "docker"})
_URI_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.*)", re.DOTALL)
_S3_URI: Final = re.compile(r"s3://([^/]+)/(.*)", re.DOTALL)
# Characters java.net.URI refuses anywhere (plus bad % escapes, checked below).
_URI_ILLEGAL: Final = re.compile(r"[\x00-\x20\x7f\"<>\\^`{|}]")
_PERMISSIONS: Final = ("NONE", "OWNER", "ALL")


def _artifact(at: _At, value: Any) -> Artifact:
    if not isinstance(value, Mapping):
        raise at.error(f"expected a mapping with URI, got {_kind(value)} {_show(value)}")
    fields = _fields(value, at, ("URI", "Unarchive", "Permission", "Digest", "Algorithm"), strict=False)
    uri_at, raw_uri = _required(fields, "URI", at)
    uri = _string(uri_at, raw_uri)
    _check_uri(uri, uri_at)
    unarchive_text = (_optional_string(fields, "Unarchive") or "NONE").upper()
    if unarchive_text not in Unarchive.__members__:
        raise fields["Unarchive"][0].error(f"expected ZIP or NONE, got {_show(unarchive_text)}")
    read, execute = "OWNER", "NONE"
    if "Permission" in fields:
        perm_at, raw = fields["Permission"]
        perm = _fields(_mapping(perm_at, raw), perm_at, ("Read", "Execute"), strict=False)
        read = _permission(perm, "Read", read)
        execute = _permission(perm, "Execute", execute)
    for key in ("Digest", "Algorithm"):
        _optional_string(fields, key)
    return Artifact(uri=uri, unarchive=Unarchive[unarchive_text], read=read, execute=execute)


def _permission(fields: _Fields, name: str, default: str) -> str:
    text = _optional_string(fields, name)
    if text is None:
        return default
    if text.upper() not in _PERMISSIONS:
        raise fields[name][0].error(f"expected NONE, OWNER or ALL, got {_show(text)}")
    return text.upper()


def _check_uri(uri: str, at: _At) -> None:
    if _URI_ILLEGAL.search(uri) or re.search(r"%(?![0-9A-Fa-f]{2})", uri):
        raise at.error(f"not a valid URI: {_show(uri)}")
    match = _URI_SCHEME.fullmatch(uri)
    if match is None:
        raise at.error(
            f"the artifact URI {_show(uri)} has no scheme (expected s3://, greengrass: or docker:)"
        )
    scheme = match.group(1).lower()
    if scheme not in _SCHEMES:
        raise at.error(f"artifact URI scheme {match.group(1)!r} is not supported (s3, greengrass, docker)")
    if scheme == "s3" and not _S3_URI.fullmatch(uri):
        raise at.error(f"invalid S3 artifact URI {_show(uri)} (expected s3://BUCKET/KEY)")
    if scheme != "docker" and artifact_file_name(Artifact(uri=uri)) in {"", ".", ".."}:
        raise at.error(f"the artifact URI {_show(uri)} does not end with a file name")


def artifact_file_name(artifact: Artifact) -> str | None:
    """The file an artifact is stored as, as the nucleus downloaders name it; None for docker images.

    S3: the last "/"-segment of the object key (`S3Downloader`); greengrass: the last path segment of the
    decoded scheme-specific part (`GreengrassRepositoryDownloader`).
    """
    match = _URI_SCHEME.fullmatch(artifact.uri)
    if match is None:
        return artifact.file_name
    scheme = match.group(1).lower()
    if scheme == "docker":
        return None
    if scheme == "s3":
        s3 = _S3_URI.fullmatch(artifact.uri)
        parts = _java_split(s3.group(2), "/") if s3 else []
        return parts[-1] if parts else ""
    from urllib.parse import unquote  # noqa: PLC0415

    segments = [s for s in unquote(match.group(2)).split("/") if s]
    return segments[-1] if segments else ""


def artifact_path(root: Path, name: str, version: str) -> Path:
    """`{artifacts:path}`: `<root>/packages/artifacts/<name>/<version>` (NUC `NucleusPaths.artifactPath`)."""
    return Path(root).absolute() / "packages" / "artifacts" / name / version


def unarchived_path(root: Path, name: str, version: str) -> Path:
    """`{artifacts:decompressedPath}`: `<root>/packages/artifacts-unarchived/<name>/<version>`."""
    return Path(root).absolute() / "packages" / "artifacts-unarchived" / name / version


def work_path(root: Path, name: str) -> Path:
    """`{work:path}`: `<root>/work/<name>` (NUC `NucleusPaths.workPath`)."""
    return Path(root).absolute() / "work" / name


def artifact_file_mode(artifact: Artifact) -> int:
    """NUC `models/Permission.toFileSystemPermission`: the nucleus's "owner" is the component's group.

    The owner can always read; when not running as root the owner can also write (the nucleus adds it so it
    can clean up). Nothing is ever world- or group-writable.
    """
    read, execute = artifact.read, artifact.execute
    executable = execute in {"OWNER", "ALL"}
    mode = stat.S_IRUSR
    mode |= stat.S_IXUSR if executable else 0
    mode |= stat.S_IRGRP if read in {"OWNER", "ALL"} or executable else 0
    mode |= stat.S_IXGRP if executable else 0
    mode |= stat.S_IROTH if read == "ALL" or execute == "ALL" else 0
    mode |= stat.S_IXOTH if execute == "ALL" else 0
    if os.geteuid() != 0:
        mode |= stat.S_IWUSR
    return mode


_DIR_MODE: Final = 0o700


def install_artifacts(recipe: Recipe, *, artifact_dir: Path, root: Path) -> None:
    """Install a recipe's artifacts from a `greengrass-cli --artifactDir` folder into the component store.

    `<artifact_dir>/<name>/<version>/<file>` is copied to `<root>/packages/artifacts/<name>/<version>/<file>`;
    `Unarchive: ZIP` artifacts are also extracted to
    `<root>/packages/artifacts-unarchived/<name>/<version>/<file name without its last extension>/`
    (NUC `ComponentManager.getFileName`). Docker image artifacts are left to a Docker manager, as on a device.
    Re-installing is idempotent: unchanged files are left alone, changed ones are replaced.
    """
    source_dir = Path(artifact_dir) / recipe.name / recipe.version
    target_dir = artifact_path(root, recipe.name, recipe.version)
    for artifact in recipe.artifacts:
        file_name = artifact_file_name(artifact)
        if file_name is None:
            logger.info("%s: %s is a Docker image; the devkit does not pull images", recipe.ref, artifact.uri)
            continue
        source = source_dir / file_name
        if not source.is_file():
            raise RecipeError(f"{recipe.ref}: artifact {artifact.uri} not found: expected the file {source}")
        mode = artifact_file_mode(artifact)
        try:
            _private_dirs(Path(root).absolute(), target_dir)
            target = target_dir / file_name
            _copy_if_changed(source, target)
            target.chmod(mode)
        except OSError as e:
            raise RecipeError(f"{recipe.ref}: cannot install artifact {artifact.uri}: {e}") from e
        if artifact.unarchive is Unarchive.ZIP:
            destination = unarchived_path(root, recipe.name, recipe.version) / _strip_extension(file_name)
            _unzip(target, destination, mode, Path(root).absolute(), f"{recipe.ref}: {file_name}")


def _strip_extension(file_name: str) -> str:
    dot = file_name.rfind(".")
    return file_name[:dot] if dot > 0 else file_name


def _private_dirs(root: Path, directory: Path) -> None:
    """Create `directory` and the folders between `root` and it, all owner-only (0700)."""
    directory.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
    current = directory
    while current != root and root in current.parents:
        if current.is_symlink():
            raise OSError(f"{current} is a symbolic link")
        current.chmod(_DIR_MODE)
        current = current.parent


def _copy_if_changed(source: Path, target: Path) -> None:
    if target.is_symlink() or target.is_dir():
        raise OSError(f"{target} exists and is not a regular file")
    if target.exists() and filecmp.cmp(source, target, shallow=False):
        return
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".install-")
    os.close(fd)
    try:
        shutil.copyfile(source, temp)
        Path(temp).replace(target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _unsafe_entry(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\0" in name:
        return "a NUL character in its name"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    normal = os.path.normpath(os.path.join("d", name))  # noqa: PTH118 - string paths keep ".." visible
    if not normal.startswith("d" + os.sep):
        return "a path outside the extraction folder"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def _unzip(archive: Path, destination: Path, mode: int, root: Path, label: str) -> None:
    """NUC `Unarchiver.unzip`, safer: every entry is checked before anything is written."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                reason = _unsafe_entry(info)
                if reason is not None:
                    raise RecipeError(f"{label}: unsafe ZIP entry {info.filename!r}: {reason}")
            _private_dirs(root, destination)
            try:
                _extract(zf, infos, destination)
            except (OSError, zipfile.BadZipFile, zlib.error, EOFError, RecipeError):
                # As the nucleus does: never leave a half-extracted folder behind.
                shutil.rmtree(destination, ignore_errors=True)
                raise
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise RecipeError(f"{label}: cannot extract the ZIP archive: {e}") from e
    _chmod_tree(destination, mode)


def _extract(zf: zipfile.ZipFile, infos: Sequence[zipfile.ZipInfo], destination: Path) -> None:
    real_destination = os.path.realpath(destination)
    for info in infos:
        target = Path(os.path.join(destination, info.filename))  # noqa: PTH118
        # Canonical-path check, as the nucleus does: also catches symlinks planted in the folder since.
        if not os.path.realpath(target).startswith(real_destination + os.sep):
            raise RecipeError(f"ZIP entry {info.filename!r} resolves outside {destination}")
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
            continue
        target.parent.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        if _same_entry(info, target):
            continue
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".unzip-")
        try:
            with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst)
            Path(temp).replace(target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def _same_entry(info: zipfile.ZipInfo, target: Path) -> bool:
    if target.is_symlink() or not target.is_file() or target.stat().st_size != info.file_size:
        return False
    crc = 0
    with target.open("rb") as f:
        while chunk := f.read(1 << 16):
            crc = zlib.crc32(chunk, crc)
    return crc == info.CRC


def _chmod_tree(top: Path, mode: int) -> None:
    top.chmod(_DIR_MODE)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(_DIR_MODE)
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(mode)


# ----------------------------------------------------------------------------------------------------
# Interpolation (NUC KernelConfigResolver)

_SAME_COMPONENT: Final = re.compile(r"\{([.\w-]+):([^:}]*)\}", re.ASCII)
_CROSS_COMPONENT: Final = re.compile(r"\{([.\w-]+):([.\w-]+):([^:}]*)\}", re.ASCII)
_SYSTEM_NAMESPACES: Final = frozenset({"artifacts", "work", "kernel", "iot"})


@dataclass(frozen=True, kw_only=True)
class InterpolationContext:
    """What a component's recipe variables resolve against.

    `dependencies` holds the contexts of the component's *direct* dependencies (HARD or SOFT) that are part of
    the deployment: only those may be named in `{Dep:namespace:key}` placeholders.
    """

    component_name: str
    component_version: str
    root: Path
    thing_name: str = ""
    configuration: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    dependencies: Mapping[str, InterpolationContext] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def for_recipe(
        cls,
        recipe: Recipe,
        *,
        root: Path,
        thing_name: str = "",
        configuration: Mapping[str, Any] | None = None,
        deployed: Mapping[str, InterpolationContext] | None = None,
    ) -> InterpolationContext:
        """A context for `recipe`; of `deployed` (any components) only direct dependencies are kept."""
        deployed = deployed or {}
        return cls(
            component_name=recipe.name,
            component_version=recipe.version,
            root=root,
            thing_name=thing_name,
            configuration=recipe.default_configuration if configuration is None else configuration,
            dependencies=MappingProxyType({n: deployed[n] for n in recipe.dependencies if n in deployed}),
        )


def interpolate(text: str, ctx: InterpolationContext) -> str:
    """Replace recipe variables in `text`, as the nucleus does for lifecycle scripts.

    Unknown or unresolvable placeholders are left as written (a warning is logged). A `{configuration:...}`
    pointer that does not start with "/" is a RecipeError: Jackson refuses it and the deployment fails.
    """
    return _interpolate(text, ctx, configuration=True)


def interpolate_lifecycle(recipe: Recipe, ctx: InterpolationContext) -> Recipe:
    """A copy of `recipe` whose step scripts, Skipif and Setenv values are interpolated."""

    def env(values: Mapping[str, str]) -> Mapping[str, str]:
        return MappingProxyType({k: interpolate(v, ctx) for k, v in values.items()}) if values else values

    steps = {
        name: replace(
            step,
            script=interpolate(step.script, ctx),
            skipif=None if step.skipif is None else interpolate(step.skipif, ctx),
            setenv=env(step.setenv),
        )
        for name, step in recipe.lifecycle.steps.items()
    }
    lifecycle = replace(recipe.lifecycle, setenv=env(recipe.lifecycle.setenv), steps=MappingProxyType(steps))
    return replace(recipe, lifecycle=lifecycle)


def interpolate_configuration(config: Any, ctx: InterpolationContext) -> Any:
    """The nucleus's `interpolateComponentConfiguration` option: system parameters only, in string values.

    `{configuration:...}` placeholders stay as written (NUC `interpolateSystemParametersOnly`); keys are never
    interpolated. Returns plain dicts and lists.
    """
    if isinstance(config, Mapping):
        return {k: interpolate_configuration(v, ctx) for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [interpolate_configuration(v, ctx) for v in config]
    if isinstance(config, str):
        return _interpolate(config, ctx, configuration=False)
    return config


def _interpolate(text: str, ctx: InterpolationContext, *, configuration: bool) -> str:
    # Same replace order as the nucleus: matches are found in the text as it was before each pass, and every
    # occurrence of a matched placeholder is replaced (Java String.replace), same-component pass first.
    result = text
    for match in _SAME_COMPONENT.finditer(text):
        value = _resolve(ctx, match.group(1), match.group(2), match.group(0), configuration=configuration)
        if value is not None:
            result = result.replace(match.group(0), value)
    snapshot = result
    for match in _CROSS_COMPONENT.finditer(snapshot):
        target, placeholder = match.group(1), match.group(0)
        dependency = ctx.dependencies.get(target)
        if dependency is None:
            logger.warning(
                "%s: %s left as is: %s is not a direct dependency in this deployment",
                ctx.component_name,
                placeholder,
                target,
            )
            continue
        value = _resolve(dependency, match.group(2), match.group(3), placeholder, configuration=configuration)
        if value is not None:
            result = result.replace(placeholder, value)
    return result


def _resolve(
    ctx: InterpolationContext, namespace: str, key: str, placeholder: str, *, configuration: bool
) -> str | None:
    if configuration and namespace == "configuration":
        value = _configuration_text(ctx.configuration, key, placeholder)
        if value is None:
            logger.warning("%s: %s left as is: no value at %r", ctx.component_name, placeholder, key)
        return value
    if namespace in _SYSTEM_NAMESPACES:
        value = _system_value(ctx, namespace, key)
        if value is None:
            logger.warning("%s: %s left as is: unknown key %r", ctx.component_name, placeholder, key)
        return value
    logger.warning("%s: %s left as is: unknown namespace %r", ctx.component_name, placeholder, namespace)
    return None


def _system_value(ctx: InterpolationContext, namespace: str, key: str) -> str | None:
    match namespace, key:
        case "artifacts", "path":
            return str(artifact_path(ctx.root, ctx.component_name, ctx.component_version))
        case "artifacts", "decompressedPath":
            return str(unarchived_path(ctx.root, ctx.component_name, ctx.component_version))
        case "work", "path":
            return str(work_path(ctx.root, ctx.component_name))
        case "kernel", "rootPath":
            return str(Path(ctx.root).absolute())
        case "iot", "thingName":
            return ctx.thing_name
    return None


_MISSING: Final = object()


def _configuration_text(config: Mapping[str, Any], pointer: str, placeholder: str) -> str | None:
    if pointer and not pointer.startswith("/"):
        raise RecipeError(
            f"{placeholder}: a JSON pointer must be empty or start with '/' (e.g. /path/to/key)"
        )
    node: Any = config
    if pointer:
        for raw in pointer[1:].split("/"):
            node = _pointer_step(node, re.sub(r"~([01])", lambda m: "~" if m.group(1) == "0" else "/", raw))
            if node is _MISSING:
                return None
    if isinstance(node, Mapping | list | tuple):
        return jackson_json(node)
    return jackson_text(node)


def _pointer_step(node: Any, token: str) -> Any:
    if isinstance(node, Mapping):
        return node.get(token, _MISSING)
    if isinstance(node, list | tuple):
        index = _pointer_index(token)
        return node[index] if 0 <= index < len(node) else _MISSING
    return _MISSING


def _pointer_index(token: str) -> int:
    """Jackson `JsonPointer._parseIndex`: digits only, no leading zero, fits an int; else -1."""
    if not token or len(token) > 10 or not token.isascii() or not token.isdigit():  # noqa: PLR2004
        return -1
    if token[0] == "0" and len(token) > 1:
        return -1
    index = int(token)
    return index if index <= 2**31 - 1 else -1


def jackson_text(value: Any) -> str:
    """Jackson `JsonNode.asText()` of a scalar: strings as is, true/false, null, Java number formatting."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return java_double_text(value)
    return str(value)


def jackson_json(value: Any) -> str:
    """Compact JSON as the nucleus writes a container node: keys sorted (Java string order), no spaces."""
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: str(kv[0]).encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(f"{_json_string(str(k))}:{jackson_json(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(jackson_json(v) for v in value) + "]"
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, float) and not math.isfinite(value):
        return _json_string(java_double_text(value))  # Jackson quotes NaN and infinities
    return jackson_text(value)


_JSON_ESCAPES: Final = MappingProxyType(
    {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
)


def _json_string(text: str) -> str:
    def escape(match: re.Match[str]) -> str:
        char = match.group(0)
        return _JSON_ESCAPES.get(char) or f"\\u{ord(char):04X}"

    return '"' + re.sub(r'["\\\x00-\x1f]', escape, text) + '"'


def java_double_text(value: float) -> str:
    """Java `Double.toString`: shortest digits, plain between 1e-3 and 1e7, else `d.dddE[-]n`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    exponent = int(digits_tuple.exponent) + len(digits) - 1  # scientific exponent of the first digit
    if 1e-3 <= abs(value) < 1e7:  # noqa: PLR2004
        if exponent >= 0:
            whole, frac = digits[: exponent + 1].ljust(exponent + 1, "0"), digits[exponent + 1 :]
        else:
            whole, frac = "0", "0" * (-exponent - 1) + digits
        return f"{sign}{whole}.{frac or '0'}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exponent}"


# ----------------------------------------------------------------------------------------------------
# Versions: a port of com.vdurmont.semver4j 3.1.0 (STRICT, LOOSE and NPM types; NPM requirements)


class _SemverError(Exception):
    pass


_STRICT: Final = "strict"
_LOOSE: Final = "loose"
_NPM: Final = "npm"
_JAVA_INT: Final = re.compile(r"[+-]?[0-9]+")


def _java_int_text(text: str) -> int:
    """Java `Integer.valueOf` (ASCII digits only)."""
    if not _JAVA_INT.fullmatch(text):
        raise ValueError(text)
    number = int(text)
    if not -(2**31) <= number < 2**31:
        raise ValueError(text)
    return number


def _java_split(text: str, sep: str) -> list[str]:
    """Java `String.split` with a literal one-character separator: trailing empty strings are dropped."""
    if sep not in text:
        return [text]
    parts = text.split(sep)
    while parts and not parts[-1]:
        parts.pop()
    return parts


def _java_trim(text: str) -> str:
    """Java `String.trim`: strips every character up to U+0020."""
    start, end = 0, len(text)
    while start < end and text[start] <= " ":
        start += 1
    while end > start and text[end - 1] <= " ":
        end -= 1
    return text[start:end]


@dataclass(frozen=True)
class _Semver:
    value: str
    major: int
    minor: int | None
    patch: int | None
    suffix: tuple[str, ...]
    build: str | None
    kind: str


def _semver(text: str, kind: str) -> _Semver:
    value = _java_trim(text)
    if kind == _NPM and value[:1] in {"v", "V"}:
        value = _java_trim(value[1:])
    hyphen, plus = value.find("-"), value.find("+")
    prerelease = hyphen != -1 and (plus == -1 or hyphen < plus)
    tokens = value.split("-", 1) if prerelease else [value]
    build: str | None = None
    if len(tokens) == 1:
        if tokens[0].endswith("+"):
            raise _SemverError("the build cannot be empty")
        parts = _java_split(tokens[0], "+")
        main = _java_split(parts[0], ".") if parts else []
        if len(parts) == 2:  # noqa: PLR2004 - "a+b+c" keeps no build, as in semver4j
            build = parts[1]
    else:
        main = _java_split(tokens[0], ".")
    try:
        major = _java_int_text(main[0])
    except (IndexError, ValueError):
        raise _SemverError(f"no major version in {value!r}") from None
    minor = _semver_part(main, 1, kind, "minor", value)
    patch = _semver_part(main, 2, kind, "patch", value)
    suffix: tuple[str, ...] = ()
    if len(tokens) == 2:  # noqa: PLR2004
        if tokens[1].endswith("+"):
            raise _SemverError("the build cannot be empty")
        parts = _java_split(tokens[1], "+")
        if len(parts) == 2:  # noqa: PLR2004
            suffix, build = tuple(_java_split(parts[0], ".")), parts[1]
        else:
            suffix = tuple(_java_split(tokens[1], "."))
    return _Semver(value, major, minor, patch, suffix, build, kind)


def _semver_part(main: Sequence[str], i: int, kind: str, what: str, value: str) -> int | None:
    if i >= len(main):
        if kind == _STRICT:
            raise _SemverError(f"no {what} version in {value!r}")
        return None
    try:
        return _java_int_text(main[i])
    except ValueError:
        if kind != _NPM or main[i] not in {"x", "X", "*"}:
            raise _SemverError(f"no {what} version in {value!r}") from None
        return None


def _ci_compare(a: str, b: str) -> int:
    x, y = a.lower(), b.lower()
    return (x > y) - (x < y)


def _greater(a: _Semver, b: _Semver) -> bool:
    """semver4j `isGreaterThan` (a missing minor/patch of `b` counts as 0 unless `a` is an NPM version)."""
    if a.major != b.major:
        return a.major > b.major
    if a.kind == _NPM and b.minor is None:
        return False
    other_minor = b.minor if b.minor is not None else 0
    if a.minor is not None and a.minor != other_minor:
        return a.minor > other_minor
    if a.kind == _NPM and b.patch is None:
        return False
    other_patch = b.patch if b.patch is not None else 0
    if a.patch is not None and a.patch != other_patch:
        return a.patch > other_patch
    if not a.suffix and b.suffix:
        return True
    if not b.suffix and a.suffix:
        return False
    for x, y in zip(a.suffix, b.suffix, strict=False):
        try:
            cmp = _java_int_text(x) - _java_int_text(y)
        except ValueError:
            cmp = _ci_compare(x, y)
        if cmp:
            return cmp > 0
    return len(a.suffix) > len(b.suffix)


def _equivalent(a: _Semver, b: _Semver) -> bool:
    """semver4j `isEquivalentTo`: builds are ignored, then the version strings must be equal."""
    first = a if a.build is None else _semver(a.value.replace("+" + a.build, ""), _STRICT)
    second = b if b.build is None else _semver(b.value.replace("+" + b.build, ""), _STRICT)
    if first.kind == _NPM:
        if first.major != second.major:
            return False
        if second.minor is None or second.patch is None:
            return True
    return first.value == second.value


def _lower(a: _Semver, b: _Semver) -> bool:
    return not _greater(a, b) and not _equivalent(a, b)


@dataclass(frozen=True)
class _Range:
    version: _Semver
    op: str  # "=", "<", "<=", ">", ">="

    def satisfied_by(self, v: _Semver) -> bool:
        match self.op:
            case "=":
                return _equivalent(v, self.version)
            case "<":
                return _lower(v, self.version)
            case "<=":
                return _lower(v, self.version) or _equivalent(v, self.version)
            case ">":
                return _greater(v, self.version)
            case _:
                return _greater(v, self.version) or _equivalent(v, self.version)


@dataclass(frozen=True)
class _Req:
    range: _Range | None = None
    left: _Req | None = None
    op: str = ""  # "AND" | "OR"
    right: _Req | None = None

    def satisfied_by(self, v: _Semver) -> bool:
        if self.range is not None:
            return self.range.satisfied_by(v)
        if self.left is None or self.right is None:
            raise _SemverError("invalid requirement")
        if self.op == "OR":
            return self.left.satisfied_by(v) or self.right.satisfied_by(v)
        ranges = self._ranges()
        if ranges is None:  # an OR inside an AND: semver4j falls back to evaluating both sides
            return self.left.satisfied_by(v) and self.right.satisfied_by(v)
        if not all(r.satisfied_by(v) for r in ranges):
            return False
        if v.suffix:
            # A prerelease only passes a range set that names a prerelease of the same major.minor.patch.
            return any(
                r.version.suffix
                and (r.version.major, r.version.minor, r.version.patch) == (v.major, v.minor, v.patch)
                for r in ranges
            )
        return True

    def _ranges(self) -> list[_Range] | None:
        if self.range is not None:
            return [self.range]
        if self.op != "AND" or self.left is None or self.right is None:
            return None
        left, right = self.left._ranges(), self.right._ranges()  # noqa: SLF001
        return None if left is None or right is None else left + right


def _leaf(version: _Semver | str, op: str) -> _Req:
    # semver4j's Range(String, op) parses LOOSE; Range(Semver, op) keeps the Semver's type.
    return _Req(range=_Range(_semver(version, _LOOSE) if isinstance(version, str) else version, op))


def _extrapolate(v: _Semver) -> _Semver:
    text = f"{v.major}.{v.minor or 0}.{v.patch or 0}"
    if v.suffix:
        text += "-" + ".".join(v.suffix)
    if v.build is not None:
        text += "+" + v.build
    return _semver(text, v.kind)


def _with(v: _Semver, major: int, minor: int | None, patch: int | None) -> _Semver:
    text = (
        str(major)
        + (f".{minor}" if v.minor is not None else "")
        + (f".{patch}" if v.patch is not None else "")
    )
    if v.suffix:
        text += "-" + ".".join(v.suffix)
    if v.build is not None:
        text += "+" + v.build
    return _semver(text, v.kind)


def _tilde(text: str) -> _Req:
    v = _semver(text, _NPM)
    upper = f"{v.major}.{v.minor + 1}.0" if v.minor is not None else f"{v.major + 1}.0.0"
    return _Req(left=_leaf(_extrapolate(v), ">="), op="AND", right=_leaf(upper, "<"))


def _caret(text: str) -> _Req:
    v = _semver(text, _NPM)
    if v.major != 0:
        upper = f"{v.major + 1}.0.0"
    elif v.minor is None:
        upper = "1.0.0"
    elif v.minor != 0:
        upper = f"0.{v.minor + 1}.0"
    elif v.patch is None:
        upper = "0.1.0"
    else:
        upper = f"0.0.{v.patch + 1}"
    return _Req(left=_leaf(_extrapolate(v), ">="), op="AND", right=_leaf(upper, "<"))


def _hyphen(lower_text: str, upper_text: str) -> _Req:
    lower = _extrapolate(_semver(lower_text, _NPM))
    upper = _semver(upper_text, _NPM)
    op = "<="
    if upper.minor is None or upper.patch is None:
        op = "<"
        full = _extrapolate(upper)
        if upper.minor is None:
            upper = _with(full, full.major + 1, full.minor, full.patch)
        else:
            upper = _with(full, full.major, (full.minor or 0) + 1, full.patch)
    return _Req(left=_leaf(lower, ">="), op="AND", right=_leaf(upper, op))


@dataclass
class _Token:
    kind: str  # an operator character, "AND", "(" / ")" or "V" for a version
    value: str | None = None


_UNARY: Final = frozenset({"~", "^", "=", "<", "≤", ">", "≥"})
_SPECIAL: Final = _UNARY | {"-", "|", "(", ")"}


def _tokenize(requirement: str) -> list[_Token]:
    text = requirement.replace("||", "|").replace("<=", "≤").replace(">=", "≥")
    tokens: list[_Token] = []
    previous: _Token | None = None
    current: _Token | None = None
    for char in text:
        if char == " ":
            continue
        if char in _SPECIAL:
            if current is not None:
                tokens.append(current)
                previous, current = current, None
            token = _Token(char)
            if char in _UNARY and previous is not None and previous.kind == "V":
                tokens.append(_Token("AND"))  # ">=1.0.0 <2.0.0" is an implicit AND
            tokens.append(token)
            previous = token
        else:
            if current is None:
                current = _Token("V", "")
            current.value = (current.value or "") + char
    if current is not None:
        tokens.append(current)
    return tokens


def _merge_prerelease_hyphens(tokens: list[_Token]) -> list[_Token]:
    """semver4j `removeFalsePositiveVersionRanges`: "1.0.0-beta" is a version, "1.0.0 - 2.0.0" a range."""
    result: list[_Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if (
            i + 2 < len(tokens)
            and token.kind == "V"
            and tokens[i + 1].kind == "-"
            and tokens[i + 2].kind == "V"
            and not _parses_npm(tokens[i + 2].value or "")
        ):
            token = _Token("V", f"{token.value}-{tokens[i + 2].value}")
            i += 2
        result.append(token)
        i += 1
    return result


def _parses_npm(text: str) -> bool:
    try:
        _semver(text, _NPM)
    except _SemverError:
        return False
    return True


def _to_rpn(tokens: list[_Token]) -> list[_Token]:
    output: list[_Token] = []
    stack: list[_Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "V":
            output.append(token)
        elif token.kind == ")":
            while stack[-1].kind != "(":
                output.append(stack.pop())
            stack.pop()
            if stack and stack[-1].kind in _UNARY:
                output.append(stack.pop())
        elif token.kind in _UNARY:
            i += 1
            output.extend((tokens[i], token))  # operand first, then the operator
        else:
            stack.append(token)
        i += 1
    output.extend(reversed(stack))
    # semver4j pushes onto the head of a list and evaluates from the head: reverse our append order.
    output.reverse()
    return output


_RANGE_OPS: Final = MappingProxyType({"=": "=", "<": "<", "≤": "<=", ">": ">", "≥": ">="})


def _evaluate(tokens: Iterator[_Token]) -> _Req:
    token = next(tokens)
    if token.kind == "V":
        text = token.value or ""
        if text in {"*", "latest"}:
            return _leaf("0.0.0", ">=")
        version = _semver(text, _NPM)
        if version.minor is not None and version.patch is not None:
            return _leaf(version, "=")
        return _tilde(version.value)  # 1.2.x, 1.2 and 1 are tilde ranges
    if token.kind == "-":
        upper, lower = next(tokens), next(tokens)
        return _hyphen(_operand(lower), _operand(upper))
    if token.kind in _UNARY:
        operand = _operand(next(tokens))
        if token.kind == "~":
            return _tilde(operand)
        if token.kind == "^":
            return _caret(operand)
        return _leaf(operand, _RANGE_OPS[token.kind])
    right, left = _evaluate(tokens), _evaluate(tokens)
    if token.kind == "|":
        return _Req(left=left, op="OR", right=right)
    if token.kind == "AND":
        return _Req(left=left, op="AND", right=right)
    raise _SemverError("invalid requirement")


def _operand(token: _Token) -> str:
    if token.kind != "V" or token.value is None:
        raise _SemverError("an operator needs a version after it")
    return token.value


def _build_npm(requirement: str) -> _Req:
    tokens = _merge_prerelease_hyphens(_tokenize(requirement or "*"))
    grouped = [_Token("(")]
    for token in tokens:
        grouped.extend((_Token(")"), token, _Token("(")) if token.kind == "|" else (token,))
    grouped.append(_Token(")"))
    return _evaluate(iter(_to_rpn(grouped)))


@dataclass(frozen=True)
class Version:
    """A component version as the nucleus parses it (semver4j STRICT), ordered as semver4j orders."""

    text: str
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str | None = None

    def _semver(self) -> _Semver:
        return _Semver(self.text, self.major, self.minor, self.patch, self.prerelease, self.build, _STRICT)

    def __lt__(self, other: Version) -> bool:
        return _lower(self._semver(), other._semver())

    def __le__(self, other: Version) -> bool:
        return not _greater(self._semver(), other._semver())

    def __gt__(self, other: Version) -> bool:
        return _greater(self._semver(), other._semver())

    def __ge__(self, other: Version) -> bool:
        return not self < other

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class VersionRequirement:
    """An NPM-style requirement (semver4j `Requirement.buildNPM`): ">=1.0.0 <2.0.0", "^1.2", "1.x || 3"."""

    text: str
    _tree: _Req = field(repr=False, compare=False)

    def is_satisfied_by(self, version: str | Version) -> bool:
        parsed = parse_version(version) if isinstance(version, str) else version
        try:
            return self._tree.satisfied_by(parsed._semver())  # noqa: SLF001
        except _SemverError as e:
            raise RecipeError(f"cannot compare {parsed} with requirement {self.text!r}: {e}") from e

    def __str__(self) -> str:
        return self.text


def parse_version(text: str) -> Version:
    """Parse a component version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]); RecipeError if invalid."""
    try:
        v = _semver(text, _STRICT)
    except _SemverError as e:
        raise RecipeError(f"invalid version {text!r}: {e}") from e
    # STRICT parsing guarantees minor and patch.
    return Version(v.value, v.major, v.minor or 0, v.patch or 0, v.suffix, v.build)


def parse_requirement(text: str) -> VersionRequirement:
    """Parse an NPM-style version requirement as the nucleus does; RecipeError if invalid."""
    try:
        return VersionRequirement(text, _build_npm(text))
    except (_SemverError, IndexError, KeyError, StopIteration, RecursionError) as e:
        detail = f": {e}" if isinstance(e, _SemverError) else ""
        raise RecipeError(f"invalid version requirement {text!r}{detail}") from e


def satisfies(version: str, requirement: str) -> bool:
    """Whether `version` meets the NPM-style `requirement`, with the nucleus's semantics (semver4j 3.1.0)."""
    return parse_requirement(requirement).is_satisfied_by(version)
