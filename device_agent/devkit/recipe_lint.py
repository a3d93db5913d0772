"""Lint Greengrass recipes for the checks of the suite's security reference (§5) and GDK's recipe schema.

    python -m device_agent.devkit.recipe_lint recipes/*.yaml      (or: gg-virtual recipe lint FILE...)

Each finding has a rule id, a severity, where in the recipe and why. Errors fail; warnings are said once.

- `format-version`: RecipeFormatVersion other than the string "2020-01-25" (unquoted, YAML reads a date).
- `schema`: what GDK's recipe schema refuses: unknown top-level keys, missing required keys, wrong types,
  names, versions, dependency types, lifecycle step shapes, artifact keys.
- `version`: a ComponentVersion other than `device_agent.__version__` (one version for the whole suite).
- `access-policy`: accessControl the nucleus would refuse or drop (unknown service or operation, `?`, ...).
- `operation-star`: `*` as an operation. `resource-star`: a resource that is exactly `*`.
- `pubsub-wildcard`: `+` or `#` in a pub/sub resource, where they are literal (only `*` is a wildcard). A
  policy that only subscribes may name its filter literally (it grants exactly that filter): a warning.
- `iot-thing`: an IoT Core (mqttproxy) resource not pinned to the device with `{iot:thingName}`.
- `policy-id`: a policy id not unique across every recipe linted together, or not starting with the
  component's name.
- `privilege`: a lifecycle step with RequiresPrivilege true.
- `install-paths`: an Install script that names a place other than `{work:path}` (where it may write) and
  the artifacts (`{artifacts:path}`, `{artifacts:decompressedPath}`: read only): another recipe variable,
  an absolute or home path, `..`, a write target (`>`, `--work`, `--target`, `tee`, `cd`, ...) outside
  `{work:path}`, a read source (`--artifact`, `-r`, `--find-links`, ...) elsewhere, or a `chmod` that makes
  anything writable by others.
- `install-online` (a warning): an Install script that fetches from the network (a URL, curl, wget, git, a
  package manager, `pip install` without `--no-index`). The suite's `python3 -m device_agent.install`
  is offline exactly when the artifact carries wheels: a built recipe (`greengrass-build/recipes/`) whose
  zip beside it has none gets the warning; a source recipe cannot show it (docs/packaging.md).
- `artifact`: an artifact not unarchived as ZIP, or not `Permission: {Read: OWNER, Execute: NONE}`.
- `secret-default`: a DefaultConfiguration key that names a secret (password, token, secret, private key,
  credential, API or access key, salt, HMAC key) with a non-empty value; names ending in Id, Arn, Name,
  Path, File or Source point at a secret and are allowed.
- `config-defaults`: a key of the component's configuration model missing from DefaultConfiguration, a
  key there the model does not know, or a value other than the model's default for that key (checked when
  the component's package can be found). The recipe's defaults are what a device runs with; the model's
  are what the code, the docs and the tests assume.

GDK's rules are restated here from its `recipe_schema.json` (keys compared case-insensitively, as GDK
lower-cases them before validating); the schema file itself is not copied.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import enum
import importlib
import re
import shlex
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from device_agent import __version__
from device_agent.devkit.authz import ANY, MQTT_PROXY, PUBSUB, Authorizer
from device_agent.devkit.errors import PolicyError

FORMAT_VERSION = "2020-01-25"
THING = "{iot:thingName}"
SUBSCRIBE = "aws.greengrass#SubscribeToTopic"

_TOP_KEYS = frozenset(
    {
        "recipeformatversion",
        "componentname",
        "componentversion",
        "componentdescription",
        "componentpublisher",
        "componentconfiguration",
        "componenttype",
        "componentsource",
        "componentdependencies",
        "manifests",
        "lifecycle",
    }
)
_REQUIRED = ("recipeformatversion", "componentname", "componentversion", "manifests")
_NAME = re.compile(r"[a-zA-Z0-9\-_.]+")
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_TYPE = re.compile(r"aws\.greengrass\.(nucleus|generic|plugin|lambda)", re.IGNORECASE)
_DEPENDENCY_TYPE = re.compile(r"SOFT|HARD", re.IGNORECASE)
_PERMISSION = re.compile(r"NONE|OWNER|ALL", re.IGNORECASE)
_UNARCHIVE = re.compile(r"ZIP|NONE", re.IGNORECASE)
_SKIPIF = re.compile(r"(onpath|exists)\s+.*")
_STEPS = frozenset({"bootstrap", "install", "startup", "run", "shutdown", "recover"})
_STEP_KEYS = frozenset({"skipif", "script", "requiresprivilege", "setenv", "timeout"})
_ARTIFACT_KEYS = frozenset({"uri", "unarchive", "permission", "digest", "algorithm"})
_SECRET_NAME = re.compile(
    r"password|passwd|passphrase|secret|token|private_?key|credential|api_?key|access_?key|salt|hmac",
    re.IGNORECASE,
)
_REFERENCE_NAME = re.compile(r"(id|arn|name|path|file|source)$", re.IGNORECASE)
# Install: the recipe variables it may name, and the options whose argument it writes or reads.
_WORK = "{work:path}"
_ARTIFACTS = ("{artifacts:path}", "{artifacts:decompressedPath}")
_INSTALL_VARIABLES = frozenset({_WORK, *_ARTIFACTS})
_VARIABLE = re.compile(r"\{[.\w-]+:[^{}]*\}")
_WRITE_TARGET = frozenset({"--work", "--target", "--prefix", "--root", "--user-base", "tee", "cd", "mkdir"})
_READ_SOURCE = frozenset({"--artifact", "-r", "--requirement", "--constraint", "--find-links"})
_WORLD_WRITABLE = re.compile(r"^[0-7]?[0-7][0-7][2367]$|(^|,)[ao]*[+=][rwxXst]*w")
_FETCHERS = frozenset({"curl", "wget"})
_SUITE_INSTALL = "device_agent.install"
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")"})
_PACKAGE_MANAGERS = frozenset({"apt-get", "apt", "yum", "dnf", "apk", "snap"})


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Finding:
    recipe: str
    rule: str
    where: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        return f"{self.recipe}: {self.severity} [{self.rule}] {self.where}: {self.message}"


def _key(mapping: Mapping[Any, Any], name: str) -> Any:
    """`mapping[name]`, matching keys case-insensitively as GDK does; None if absent."""
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return None


class _Linter:
    def __init__(self, recipe: str, *, ships_wheels: bool | None = None) -> None:
        self.recipe = recipe
        self.ships_wheels = ships_wheels
        self.findings: list[Finding] = []

    def add(self, rule: str, where: str, message: str, severity: Severity = Severity.ERROR) -> None:
        self.findings.append(Finding(self.recipe, rule, where, message, severity))

    # ---- GDK's schema ---------------------------------------------------------------------------------

    def schema(self, document: Mapping[Any, Any]) -> None:
        for key in document:
            if not isinstance(key, str) or key.lower() not in _TOP_KEYS:
                self.add("schema", str(key), "not a recipe key (GDK's schema allows no other top-level key)")
        for required in _REQUIRED:
            if _key(document, required) is None:
                self.add("schema", required, "required")
        self._format_version(document)
        name = _key(document, "componentname")
        if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name) and len(name) <= 128):  # noqa: PLR2004
            self.add("schema", "ComponentName", "1-128 letters, digits, '-', '_' or '.'")
        version = _key(document, "componentversion")
        if version is not None and not (isinstance(version, str) and _SEMVER.fullmatch(version)):
            self.add("schema", "ComponentVersion", f'{version!r}: a quoted semantic version such as "1.0.0"')
        kind = _key(document, "componenttype")
        if kind is not None and not (isinstance(kind, str) and _TYPE.fullmatch(kind)):
            self.add("schema", "ComponentType", "aws.greengrass.generic (or nucleus, plugin, lambda)")
        for key in ("componentdescription", "componentpublisher", "componentsource"):
            value = _key(document, key)
            if value is not None and not isinstance(value, str):
                self.add("schema", key, "must be a string")
        self._dependencies(_key(document, "componentdependencies"))
        configuration = _key(document, "componentconfiguration")
        if configuration is not None and not isinstance(configuration, Mapping):
            self.add("schema", "ComponentConfiguration", "must be a mapping")
        self._manifests(_key(document, "manifests"))
        top_lifecycle = _key(document, "lifecycle")
        if top_lifecycle is not None:
            self._lifecycle(top_lifecycle, "Lifecycle")

    def _format_version(self, document: Mapping[str, Any]) -> None:
        value = _key(document, "recipeformatversion")
        if isinstance(value, dt.date):
            self.add(
                "format-version", "RecipeFormatVersion", f'quote it ("{FORMAT_VERSION}"): YAML reads a date'
            )
        elif value is not None and value != FORMAT_VERSION:
            self.add(
                "format-version", "RecipeFormatVersion", f"{value!r}: the only format is {FORMAT_VERSION!r}"
            )

    def _dependencies(self, dependencies: object) -> None:
        if dependencies is None:
            return
        if not isinstance(dependencies, Mapping):
            self.add("schema", "ComponentDependencies", "must be a mapping of component name to requirement")
            return
        for name, spec in dependencies.items():
            where = f"ComponentDependencies.{name}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                self.add("schema", where, "not a component name")
            if not isinstance(spec, Mapping) or not isinstance(_key(spec, "versionrequirement"), str):
                self.add("schema", where, 'needs VersionRequirement, a string such as ">=1.0.0 <2.0.0"')
                continue
            kind = _key(spec, "dependencytype")
            if kind is not None and not (isinstance(kind, str) and _DEPENDENCY_TYPE.fullmatch(kind)):
                self.add("schema", f"{where}.DependencyType", "HARD or SOFT")

    def _manifests(self, manifests: object) -> None:
        if manifests is None:
            return
        if not isinstance(manifests, list):
            self.add("schema", "Manifests", "must be a list")
            return
        for index, manifest in enumerate(manifests):
            where = f"Manifests[{index}]"
            if not isinstance(manifest, Mapping):
                self.add("schema", where, "must be a mapping")
                continue
            platform = _key(manifest, "platform")
            if platform is not None and (
                not isinstance(platform, Mapping) or not all(isinstance(v, str) for v in platform.values())
            ):
                self.add("schema", f"{where}.Platform", "a mapping of string values (os, architecture, ...)")
            lifecycle = _key(manifest, "lifecycle")
            if lifecycle is not None:
                self._lifecycle(lifecycle, f"{where}.Lifecycle")
            self._artifacts(_key(manifest, "artifacts"), f"{where}.Artifacts")

    def _lifecycle(self, lifecycle: object, where: str) -> None:
        if not isinstance(lifecycle, Mapping):
            self.add("schema", where, "must be a mapping of lifecycle steps")
            return
        for step, body in lifecycle.items():
            name = str(step).lower()
            if name == "setenv":
                self._setenv(body, f"{where}.{step}")
            elif name in _STEPS:
                self._step(body, f"{where}.{step}")
                if name == "install":
                    self._install(body, f"{where}.{step}")

    def _setenv(self, value: object, where: str) -> None:
        if isinstance(value, str):
            return
        if not isinstance(value, Mapping) or not all(
            isinstance(v, str | int | float | bool) for v in value.values()
        ):
            self.add("schema", where, "a mapping of variable name to string, number or boolean")

    def _step(self, body: object, where: str) -> None:
        if isinstance(body, str):
            return
        if not isinstance(body, Mapping):
            self.add("schema", where, "a script string or a mapping with Script")
            return
        for key in body:
            if str(key).lower() not in _STEP_KEYS:
                self.add("schema", f"{where}.{key}", "not a lifecycle step key", Severity.WARNING)
        if not isinstance(_key(body, "script"), str):
            self.add("schema", f"{where}.Script", "required, a string")
        skip = _key(body, "skipif")
        if skip is not None and not (isinstance(skip, str) and _SKIPIF.match(skip)):
            self.add("schema", f"{where}.SkipIf", "'onpath <executable>' or 'exists <file>'")
        timeout = _key(body, "timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | str)):
            self.add("schema", f"{where}.Timeout", "seconds, an integer")
        privilege = _key(body, "requiresprivilege")
        if privilege is not None and not isinstance(privilege, bool | str):
            self.add("schema", f"{where}.RequiresPrivilege", "a boolean")
        if privilege is True or (isinstance(privilege, str) and privilege.strip().lower() == "true"):
            self.add(
                "privilege", f"{where}.RequiresPrivilege", "a step runs as root: no step of the suite may"
            )
        setenv = _key(body, "setenv")
        if setenv is not None:
            self._setenv(setenv, f"{where}.Setenv")

    def _install(self, body: object, where: str) -> None:
        """Install writes only in {work:path}, reads the artifacts, and says when it reaches the network."""
        script = _key(body, "script") if isinstance(body, Mapping) else body
        if not isinstance(script, str):
            return
        where = where if isinstance(body, str) else f"{where}.Script"
        try:
            lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            self.add("install-paths", where, f"cannot read the script ({exc}): write it plainly")
            return
        for problem in _install_path_problems(tokens):
            self.add("install-paths", where, problem)
        online = _online_fetch(tokens)
        if online is None and self.ships_wheels is False and _SUITE_INSTALL in script:
            online = f"{_SUITE_INSTALL} of a build without wheels"
        if online is not None:
            self.add(
                "install-online",
                where,
                f"{online}: Install reaches the network, which a device may not have (and it trusts the"
                " index at install time); ship wheels in the artifact and install them --no-index",
                Severity.WARNING,
            )

    def _artifacts(self, artifacts: object, where: str) -> None:
        if artifacts is None:
            return
        if not isinstance(artifacts, list):
            self.add("schema", where, "must be a list")
            return
        for index, artifact in enumerate(artifacts):
            here = f"{where}[{index}]"
            if not isinstance(artifact, Mapping) or not isinstance(_key(artifact, "uri"), str):
                self.add("schema", here, "needs a URI string")
                continue
            for key in artifact:
                if str(key).lower() not in _ARTIFACT_KEYS:
                    self.add("schema", f"{here}.{key}", "not an artifact key", Severity.WARNING)
            unarchive = _key(artifact, "unarchive")
            if unarchive is not None and not (isinstance(unarchive, str) and _UNARCHIVE.fullmatch(unarchive)):
                self.add("schema", f"{here}.Unarchive", "ZIP or NONE")
            if not (isinstance(unarchive, str) and unarchive.upper() == "ZIP"):
                self.add(
                    "artifact", f"{here}.Unarchive", "the suite ships one ZIP per component: Unarchive: ZIP"
                )
            self._permission(_key(artifact, "permission"), f"{here}.Permission")

    def _permission(self, permission: object, where: str) -> None:
        if not isinstance(permission, Mapping):
            self.add("artifact", where, "state it: {Read: OWNER, Execute: NONE}")
            return
        for key, wanted in (("read", "OWNER"), ("execute", "NONE")):
            value = _key(permission, key)
            if value is not None and not (isinstance(value, str) and _PERMISSION.fullmatch(value)):
                self.add("schema", f"{where}.{key.title()}", "NONE, OWNER or ALL")
            elif not (isinstance(value, str) and value.upper() == wanted):
                self.add("artifact", f"{where}.{key.title()}", f"{value!r}: must be {wanted}")

    # ---- the suite's rules ------------------------------------------------------------------------------

    def version(self, document: Mapping[str, Any], expected: str) -> None:
        version = _key(document, "componentversion")
        if isinstance(version, str) and version != expected:
            self.add("version", "ComponentVersion", f"{version!r}: the suite's version is {expected!r}")

    def access(self, component: str, access_control: object, where: str) -> list[str]:
        """The checks on accessControl; returns its policy ids (for uniqueness across recipes)."""
        try:
            Authorizer(strict=True).set_component_policies(component or "unnamed", access_control)
        except PolicyError as exc:
            self.add("access-policy", where, str(exc))
        if not isinstance(access_control, Mapping):
            return []
        ids: list[str] = []
        for destination, policies in access_control.items():
            if not isinstance(policies, Mapping):
                continue
            for policy_id, policy in policies.items():
                ids.append(str(policy_id))
                here = f"{where}.{destination}.{policy_id}"
                if component and not str(policy_id).startswith(f"{component}:"):
                    self.add(
                        "policy-id", here, f"start policy ids with the component's name: {component}:..."
                    )
                if isinstance(policy, Mapping):
                    self._policy(str(destination), policy, here)
        return ids

    def _policy(self, destination: str, policy: Mapping[str, Any], where: str) -> None:
        operations = [str(o) for o in _key(policy, "operations") or ()]
        resources = [str(r) for r in _key(policy, "resources") or ()]
        if ANY in operations:
            self.add("operation-star", f"{where}.operations", "`*` grants every operation: name each one")
        for resource in resources:
            if resource == ANY:
                self.add("resource-star", f"{where}.resources", "a bare `*` grants every resource: name them")
            if destination == PUBSUB and ("+" in resource or "#" in resource):
                literal_filter = bool(operations) and set(operations) == {SUBSCRIBE}
                self.add(
                    "pubsub-wildcard",
                    f"{where}.resources",
                    f"{resource!r}: `+` and `#` are literal in pub/sub policies (only `*` is a wildcard)"
                    + (
                        "; this grants subscribing with exactly that filter"
                        if literal_filter
                        else "; use `*`"
                    ),
                    Severity.WARNING if literal_filter else Severity.ERROR,
                )
            if destination == MQTT_PROXY and THING not in resource:
                self.add(
                    "iot-thing", f"{where}.resources", f"{resource!r}: pin it to the device with {THING}"
                )

    def secrets(self, value: object, where: str) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                here = f"{where}.{key}"
                if key == "accessControl" and where == "DefaultConfiguration":
                    continue
                name = str(key)
                if _SECRET_NAME.search(name) and not _REFERENCE_NAME.search(name) and _non_empty(inner):
                    self.add(
                        "secret-default",
                        here,
                        "a secret-looking key with a value: every component can read it",
                    )
                self.secrets(inner, here)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.secrets(item, f"{where}[{index}]")

    def config_defaults(self, defaults: Mapping[str, Any], model: type) -> None:
        from device_agent.config import Parsed, defaults_document, parse_config, to_document  # noqa: PLC0415

        expected = defaults_document(model)
        missing = list(_missing(expected, defaults))
        for path in missing:
            self.add(
                "config-defaults", f"DefaultConfiguration.{path}", "a key the component reads has no default"
            )
        try:
            parsed: Parsed[Any] = parse_config(model, defaults)
        except ValueError as exc:
            self.add("config-defaults", "DefaultConfiguration", f"the component's model refuses it: {exc}")
            return
        for key_path in parsed.unknown_keys:
            path = ".".join(map(str, key_path))
            self.add("config-defaults", f"DefaultConfiguration.{path}", "a key the component does not know")
        # Compared as the model reads them (10 and 10.0 are one value); a missing key took the model's.
        for path, written, default in _differences(expected, to_document(parsed.value)):
            if path in missing:
                continue
            shown = "" if _SECRET_NAME.search(path) else f": {written!r}, the model's is {default!r}"
            self.add(
                "config-defaults",
                f"DefaultConfiguration.{path}",
                f"not the component's default{shown} (change both, or neither)",
            )


def _install_path_problems(tokens: Sequence[str]) -> Iterator[str]:
    """What in an Install script's tokens touches a place other than {work:path} and the artifacts."""
    previous, command = "", ""
    for word in tokens:
        if previous in _SEPARATORS or not previous:
            command = word.rsplit("/", 1)[-1]
        for variable in _VARIABLE.findall(word):
            if variable not in _INSTALL_VARIABLES:
                yield f"{variable}: Install may use only {', '.join(sorted(_INSTALL_VARIABLES))}"
        # A relative path is in the work folder, the lifecycle's working directory.
        relative = not word.startswith(("/", "~", "$", "{"))
        if word.startswith(("/", "~", "$HOME", "${HOME}")) or "/../" in f"/{_VARIABLE.sub('', word)}/":
            yield f"{word!r}: a path outside {_WORK} and the artifacts"
        elif (previous in _WRITE_TARGET or previous.endswith(">")) and not (
            relative or word.startswith(_WORK)
        ):
            yield f"{previous} {word}: Install writes only under {_WORK}"
        elif previous in _READ_SOURCE and not (relative or word.startswith((_WORK, *_ARTIFACTS))):
            yield f"{previous} {word}: Install reads only the artifacts (or {_WORK})"
        if command == "chmod" and _WORLD_WRITABLE.search(word):
            yield f"chmod {word}: nothing Install makes may be writable by others"
        previous = word


def _online_fetch(tokens: Sequence[str]) -> str | None:
    """The first thing in an Install script that fetches from the network, or None."""
    for index, word in enumerate(tokens):
        name = word.rsplit("/", 1)[-1]
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if word.startswith(("http://", "https://", "git+")) or name in _FETCHERS:
            return word
        if name in _PACKAGE_MANAGERS or (name == "git" and following in {"clone", "fetch", "pull"}):
            return f"{word} {following}".strip()
        if name in {"pip", "pip3"} and following == "install" and "--no-index" not in tokens[index:]:
            return f"{word} install (without --no-index)"
    return None


def _non_empty(value: object) -> bool:
    return value not in (None, "", [], {})


def _differences(
    expected: Mapping[str, Any], actual: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[str, Any, Any]]:
    """(path, actual value, expected value) wherever two documents differ; mappings compared key by key."""
    for key in sorted(set(expected) | set(actual), key=str):
        path = f"{prefix}{key}"
        want, have = expected.get(key), actual.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            yield from _differences(want, have, f"{path}.")
        elif want != have:
            yield path, have, want


def _missing(expected: Mapping[str, Any], actual: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in expected.items():
        path = f"{prefix}{key}"
        if key not in actual:
            yield path
        elif isinstance(value, Mapping) and isinstance(actual[key], Mapping):
            yield from _missing(value, actual[key], f"{path}.")


# ---- entry points -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """A recipe to lint: a label (its file name), the parsed document and its configuration model."""

    label: str
    document: Any
    config_model: type | None = None
    ships_wheels: bool | None = None  # a built recipe's zip carries wheels; None: not known (a source recipe)


def lint_recipe(recipe: Recipe, *, version: str = __version__) -> tuple[list[Finding], list[str]]:
    """Findings for one recipe, and its policy ids (uniqueness is checked across recipes by `lint`)."""
    linter = _Linter(recipe.label, ships_wheels=recipe.ships_wheels)
    document = recipe.document
    if not isinstance(document, Mapping):
        linter.add("schema", "(document)", "a recipe is a mapping")
        return linter.findings, []
    linter.schema(document)
    linter.version(document, version)
    name = _key(document, "componentname")
    configuration = _key(document, "componentconfiguration")
    defaults = _key(configuration, "defaultconfiguration") if isinstance(configuration, Mapping) else None
    ids: list[str] = []
    if isinstance(defaults, Mapping):
        access = defaults.get("accessControl")
        if access is not None:
            where = "DefaultConfiguration.accessControl"
            ids = linter.access(name if isinstance(name, str) else "", access, where)
        linter.secrets(defaults, "DefaultConfiguration")
        if recipe.config_model is not None:
            linter.config_defaults(
                {k: v for k, v in defaults.items() if k != "accessControl"}, recipe.config_model
            )
    return linter.findings, ids


def lint(recipes: Iterable[Recipe], *, version: str = __version__) -> list[Finding]:
    """Every finding for these recipes, policy ids checked for uniqueness across all of them."""
    findings: list[Finding] = []
    owners: dict[str, str] = {}
    for recipe in recipes:
        found, ids = lint_recipe(recipe, version=version)
        findings.extend(found)
        for policy_id in ids:
            first = owners.setdefault(policy_id, recipe.label)
            if first != recipe.label or ids.count(policy_id) > 1:
                findings.append(
                    Finding(
                        recipe.label,
                        "policy-id",
                        policy_id,
                        f"also used in {first}: policy ids must be unique",
                    )
                )
    return findings


def _scripts(lifecycle: object) -> Iterator[str]:
    if isinstance(lifecycle, str):
        yield lifecycle
    elif isinstance(lifecycle, Mapping):
        for value in lifecycle.values():
            yield from _scripts(value)


def run_package(document: object) -> str | None:
    """The package a recipe's Run step starts with `python -m <package>` (Install may run others)."""
    if not isinstance(document, Mapping):
        return None
    for manifest in _key(document, "manifests") or ():
        lifecycle = _key(manifest, "lifecycle") if isinstance(manifest, Mapping) else None
        run = _key(lifecycle, "run") if isinstance(lifecycle, Mapping) else None
        for script in _scripts(run):
            match = re.search(r"-m\s+([A-Za-z_]\w*)", script)
            if match:
                return match.group(1)
    return None


def secret_values(configuration: object, where: str = "configuration") -> list[str]:
    """Where a configuration (e.g. a deployment's merge) holds a secret-looking key with a value."""
    linter = _Linter("")
    linter.secrets(configuration, where)
    return [f.where for f in linter.findings]


def config_model_for(path: Path, document: Any) -> type | None:
    """The configuration model of the component a recipe file runs, when its package can be found.

    The package is the one the Run step starts (`python -m <package>`), looked for as
    `components/*/<package>/component.py` beside the recipe's folder or above it.
    """
    from device_agent.component import Component  # noqa: PLC0415

    package = run_package(document)
    name = document.get("ComponentName") if isinstance(document, Mapping) else None
    if package is None or not isinstance(name, str):
        return None
    for root in list(path.resolve().parents)[:3]:
        for module_file in sorted(root.glob(f"components/*/{package}/component.py")):
            folder = str(module_file.parent.parent)
            added = folder not in sys.path
            if added:
                sys.path.insert(0, folder)
            try:
                module = importlib.import_module(f"{package}.component")
            finally:
                if added:
                    sys.path.remove(folder)
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, Component)
                    and getattr(value, "name", None) == name
                ):
                    model: type = value.config_model
                    return model
    return None


def read_recipe(path: Path, *, with_model: bool = True) -> Recipe:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    model = None
    if with_model:
        with contextlib.suppress(ImportError):
            model = config_model_for(path, document)
    return Recipe(path.name, document, model, built_ships_wheels(path, document))


def built_ships_wheels(path: Path, document: object) -> bool | None:
    """Whether the zip built beside a built recipe carries wheels (GDK's layout: greengrass-build/recipes/
    and greengrass-build/artifacts/<name>/<version>/<name>.zip); None when there is no such zip."""
    if not isinstance(document, Mapping):
        return None
    name, version = _key(document, "componentname"), _key(document, "componentversion")
    if not (isinstance(name, str) and isinstance(version, str)) or path.parent.name != "recipes":
        return None
    artifact = path.parent.parent / "artifacts" / name / version / f"{name}.zip"
    try:
        with zipfile.ZipFile(artifact) as archive:
            return any(entry.startswith("wheels/") for entry in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return None


def lint_files(paths: Sequence[Path], *, with_models: bool = True) -> list[Finding]:
    return lint([read_recipe(p, with_model=with_models) for p in paths])


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipes", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--no-models", action="store_true", help="skip the configuration-model check")


def add_parser(commands: Any) -> None:
    """`gg-virtual recipe lint FILE...` (`commands` is the CLI's subparsers)."""
    recipe = commands.add_parser("recipe", help="check recipes")
    actions = recipe.add_subparsers(dest="action", required=True)
    _arguments(actions.add_parser("lint", help="the suite's recipe checks (docs/security.md)"))


def run(args: argparse.Namespace) -> int:
    """Print every finding (sorted) and a count; 1 when there is an error."""
    findings = lint_files(args.recipes, with_models=not args.no_models)
    sys.stdout.writelines(f"{finding}\n" for finding in sorted(findings))
    errors = sum(f.severity is Severity.ERROR for f in findings)
    sys.stderr.write(
        f"{len(args.recipes)} recipe(s), {errors} error(s), {len(findings) - errors} warning(s)\n"
    )
    return 1 if errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recipe-lint", description="Lint Greengrass recipes.")
    _arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
