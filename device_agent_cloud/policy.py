"""The verifier's policy file: which devices of each thing type may leave quarantine (docs/verifier.md).

    {
      "schema": "verifier-policy/1",
      "default": {every key below, decided explicitly},
      "thingTypes": {"thermostat": {any keys to override}, "kiosk": {...}}
    }

Rule keys: `allowedArchitectures` (list or null = any), `allowedModels` (list of {vendor, model} or null),
`serialAllowlist` (null, {"serials": [...]} or {"path": "manifest.csv"}, relative to the policy file; one
serial per line, or CSV with a `serial` column or the first column; optionally with
`"pseudonymSalt": {"env": "NAME"}`, the fleet salt of devices that redact their serial, so that the
manifest's serials also match as `hmac-sha256:` pseudonyms), `requireRootEncryption`,
`requireSecureBoot`, `requireTpm` (booleans), `minimumNucleusVersion` (semantic version or null),
`maxReportAgeSeconds`, `maxClockSkewSeconds`, `reverifyIntervalSeconds` (positive numbers) and
`whenFactUnavailable` ("reject" or "pending"). The certificate rule has no key: it is always on.

`default` must name every key, so that no rule is permissive by omission; a thing type's entry overrides
only the keys it names. Any error raises `PolicyFileError` with the key path (`thingTypes.kiosk.requireTpm`).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from device_agent_cloud.errors import PolicyFileError

SCHEMA: Final = "verifier-policy/1"
MAX_POLICY_BYTES: Final = 1 << 20
MAX_MANIFEST_BYTES: Final = 16 << 20
THING_TYPE = re.compile(r"[a-zA-Z0-9:_-]{1,128}")  # AWS IoT thing type names
PSEUDONYM_PREFIX: Final = "hmac-sha256:"
MIN_SALT_CHARS: Final = 16  # what the reporter requires of its fleetSalt when it redacts
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

Unavailable = Literal["reject", "pending"]
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?"
)


@dataclass(frozen=True, order=False, slots=True)
class SemVer:
    """A semantic version (semver.org 2.0.0); comparison follows its precedence rules, build ignored."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SemVer:
        match = _SEMVER.fullmatch(text)
        if match is None:
            raise ValueError("not a semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]")
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else ())

    def _key(self) -> tuple[Any, ...]:
        # A release ranks above its pre-releases; numeric identifiers rank below alphanumeric ones.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, not self.prerelease, pre)

    def __lt__(self, other: SemVer) -> bool:
        return self._key() < other._key()

    def __le__(self, other: SemVer) -> bool:
        return self._key() <= other._key()

    def __str__(self) -> str:
        pre = "-" + ".".join(self.prerelease) if self.prerelease else ""
        return f"{self.major}.{self.minor}.{self.patch}{pre}"


@dataclass(frozen=True, slots=True)
class Model:
    vendor: str
    model: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RuleSet:
    """The rules for one thing type (`name` is the type, or "default")."""

    name: str
    allowed_architectures: frozenset[str] | None
    allowed_models: frozenset[Model] | None
    serial_allowlist: frozenset[str] | None
    require_root_encryption: bool
    require_secure_boot: bool
    require_tpm: bool
    minimum_nucleus_version: SemVer | None
    max_report_age_seconds: float
    max_clock_skew_seconds: float
    when_fact_unavailable: Unavailable
    reverify_interval_seconds: float

    def __repr__(self) -> str:  # a serial manifest can be long; its size says enough
        serials = "any" if self.serial_allowlist is None else f"{len(self.serial_allowlist)} serials"
        return f"RuleSet(name={self.name!r}, serials={serials})"


@dataclass(frozen=True, slots=True)
class Policy:
    default: RuleSet
    thing_types: Mapping[str, RuleSet]

    def rules_for(self, thing_type: str | None) -> RuleSet:
        """The rules of `thing_type`, or the default ones for a thing without a type or an unlisted type."""
        if thing_type is None:
            return self.default
        return self.thing_types.get(thing_type, self.default)


_KEYS: Final = {
    "allowedArchitectures": "allowed_architectures",
    "allowedModels": "allowed_models",
    "serialAllowlist": "serial_allowlist",
    "requireRootEncryption": "require_root_encryption",
    "requireSecureBoot": "require_secure_boot",
    "requireTpm": "require_tpm",
    "minimumNucleusVersion": "minimum_nucleus_version",
    "maxReportAgeSeconds": "max_report_age_seconds",
    "maxClockSkewSeconds": "max_clock_skew_seconds",
    "whenFactUnavailable": "when_fact_unavailable",
    "reverifyIntervalSeconds": "reverify_interval_seconds",
}
RULE_KEYS: Final = frozenset(_KEYS)


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; serial manifests are read relative to its directory."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PolicyFileError(
            (), f"cannot read the policy file ({error.strerror or type(error).__name__})"
        ) from None
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyFileError((), f"the policy file is larger than {MAX_POLICY_BYTES} bytes")
    return parse_policy(_load_json(data), base_dir=path.parent)


def parse_policy(document: Any, *, base_dir: Path | None = None) -> Policy:
    """Validate a policy document (already parsed JSON). `base_dir` resolves manifest paths."""
    if not isinstance(document, dict):
        raise PolicyFileError((), "must be an object")
    unknown = sorted(document.keys() - {"schema", "default", "thingTypes"})
    if unknown:
        raise PolicyFileError((unknown[0],), "unknown key (expected schema, default, thingTypes)")
    if document.get("schema") != SCHEMA:
        raise PolicyFileError(("schema",), f"must be {SCHEMA!r}")
    if "default" not in document:
        raise PolicyFileError(("default",), "is required")
    raw_default = _object(document["default"], ("default",))
    missing = sorted(RULE_KEYS - raw_default.keys())
    if missing:
        raise PolicyFileError(("default", missing[0]), "is required in default (decide every rule)")
    default = _rules("default", raw_default, ("default",), base=None, base_dir=base_dir)
    thing_types: dict[str, RuleSet] = {}
    raw_types = _object(document.get("thingTypes", {}), ("thingTypes",))
    for name, raw in raw_types.items():
        path: tuple[str | int, ...] = ("thingTypes", name)
        if not THING_TYPE.fullmatch(name):
            raise PolicyFileError(path, "is not a valid thing type name ([a-zA-Z0-9:_-]{1,128})")
        thing_types[name] = _rules(name, _object(raw, path), path, base=default, base_dir=base_dir)
    return Policy(default=default, thing_types=thing_types)


def _rules(
    name: str,
    raw: dict[str, Any],
    path: tuple[str | int, ...],
    *,
    base: RuleSet | None,
    base_dir: Path | None,
) -> RuleSet:
    unknown = sorted(raw.keys() - RULE_KEYS)
    if unknown:
        raise PolicyFileError((*path, unknown[0]), "unknown rule key")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = (*path, key)
        values[_KEYS[key]] = _PARSERS[key](value, where, base_dir)
    if base is None:
        return RuleSet(name=name, **values)
    return replace(base, name=name, **values)


def _string_set(value: Any, path: tuple[str | int, ...], _base: Path | None) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise PolicyFileError(path, "must be a non-empty list of strings, or null for any")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise PolicyFileError((*path, index), "must be a non-empty string")
    return frozenset(item.strip() for item in value)


def _models(value: Any, path: tuple[str | int, ...], _base: Path | None) -> frozenset[Model] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise PolicyFileError(path, "must be a non-empty list of {vendor, model}, or null for any")
    models = set()
    for index, item in enumerate(value):
        where = (*path, index)
        entry = _object(item, where)
        if entry.keys() != {"vendor", "model"}:
            raise PolicyFileError(where, "must have exactly the keys vendor and model")
        for key in ("vendor", "model"):
            if not isinstance(entry[key], str) or not entry[key].strip():
                raise PolicyFileError((*where, key), "must be a non-empty string")
        models.add(Model(entry["vendor"].strip(), entry["model"].strip()))
    return frozenset(models)


def _serials(value: Any, path: tuple[str | int, ...], base_dir: Path | None) -> frozenset[str] | None:
    if value is None:
        return None
    entry = _object(value, path)
    sources = entry.keys() & {"serials", "path"}
    if len(sources) != 1 or not entry.keys() <= {"serials", "path", "pseudonymSalt"}:
        raise PolicyFileError(
            path, 'must be null, {"serials": [...]} or {"path": "manifest"}, with an optional pseudonymSalt'
        )
    if "serials" in entry:
        listed = _string_set(entry["serials"], (*path, "serials"), base_dir)
        if listed is None:  # null would turn the rule off from inside an allowlist: say so instead
            raise PolicyFileError((*path, "serials"), "must be a non-empty list of strings")
        serials = listed
    else:
        where = (*path, "path")
        if not isinstance(entry["path"], str) or not entry["path"]:
            raise PolicyFileError(where, "must be a file path")
        manifest = Path(entry["path"])
        if not manifest.is_absolute() and base_dir is not None:
            manifest = base_dir / manifest
        serials = read_manifest(manifest, where)
    if "pseudonymSalt" not in entry:
        return serials
    salt = _salt(entry["pseudonymSalt"], (*path, "pseudonymSalt"))
    # Devices that redact their serial report hmac-sha256(fleet salt, serial); devices that do not, the
    # serial itself: both match the same manifest entry.
    return serials | frozenset(pseudonym(salt, serial) for serial in serials)


def pseudonym(salt: bytes, value: str) -> str:
    """The reporter's redaction of `value` (device_agent/facts/redaction.py): HMAC-SHA256 keyed with the
    fleet salt, lowercase hex, prefixed. Computed here on its own so that a test can hold both to one
    answer."""
    return PSEUDONYM_PREFIX + hmac.new(salt, value.encode("utf-8"), hashlib.sha256).hexdigest()


def _salt(value: Any, path: tuple[str | int, ...]) -> bytes:
    """The fleet salt from where the policy says it is; errors name the source, never the salt."""
    entry = _object(value, path)
    if entry.keys() != {"env"}:
        raise PolicyFileError(path, 'must be {"env": "NAME"}, the variable that holds the fleet salt')
    name = entry["env"]
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        raise PolicyFileError((*path, "env"), "must be an environment variable name")
    salt = os.environ.get(name)
    if salt is None:
        raise PolicyFileError((*path, "env"), f"the environment variable {name} is not set")
    if len(salt) < MIN_SALT_CHARS:
        raise PolicyFileError(
            (*path, "env"), f"the fleet salt in {name} is shorter than {MIN_SALT_CHARS} characters"
        )
    return salt.encode("utf-8")


def read_manifest(path: Path, key_path: tuple[str | int, ...] = ()) -> frozenset[str]:
    """Serials from a manufacturing manifest: one per line, or CSV (a `serial` column, else the first).

    Blank lines and lines starting with `#` are skipped. An empty manifest is an error: it would reject
    every device, which is never what a manifest is for.
    """
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise PolicyFileError(key_path, f"cannot read the manifest {path.name} ({error.strerror})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise PolicyFileError(key_path, f"the manifest {path.name} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PolicyFileError(key_path, f"the manifest {path.name} is not UTF-8") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    column = 0
    if rows:
        header = [cell.strip().lower() for cell in rows[0]]
        if "serial" in header:  # a header row, also in a one-column file: never a serial itself
            column = header.index("serial")
            rows = rows[1:]
    serials = frozenset(row[column].strip() for row in rows if len(row) > column and row[column].strip())
    if not serials:
        raise PolicyFileError(key_path, f"the manifest {path.name} lists no serial")
    return serials


def _boolean(value: Any, path: tuple[str | int, ...], _base: Path | None) -> bool:
    if not isinstance(value, bool):
        raise PolicyFileError(path, "must be true or false")
    return value


def _version(value: Any, path: tuple[str | int, ...], _base: Path | None) -> SemVer | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PolicyFileError(path, "must be a semantic version string, or null for any")
    try:
        return SemVer.parse(value)
    except ValueError as error:
        raise PolicyFileError(path, str(error)) from None


def _seconds(value: Any, path: tuple[str | int, ...], _base: Path | None) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise PolicyFileError(path, "must be a positive number of seconds")
    return float(value)


def _unavailable(value: Any, path: tuple[str | int, ...], _base: Path | None) -> Unavailable:
    if value == "reject":
        return "reject"
    if value == "pending":
        return "pending"
    raise PolicyFileError(path, 'must be "reject" or "pending"')


_PARSERS: Final = {
    "allowedArchitectures": _string_set,
    "allowedModels": _models,
    "serialAllowlist": _serials,
    "requireRootEncryption": _boolean,
    "requireSecureBoot": _boolean,
    "requireTpm": _boolean,
    "minimumNucleusVersion": _version,
    "maxReportAgeSeconds": _seconds,
    "maxClockSkewSeconds": _seconds,
    "whenFactUnavailable": _unavailable,
    "reverifyIntervalSeconds": _seconds,
}


def _object(value: Any, path: tuple[str | int, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyFileError(path, "must be an object")
    return value


def _load_json(data: bytes) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise PolicyFileError((key,), "appears twice in one object")
            result[key] = value
        return result

    try:
        return json.loads(data.decode("utf-8-sig"), object_pairs_hook=no_duplicates)
    except PolicyFileError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        where = (
            f" (line {error.lineno}, column {error.colno})" if isinstance(error, json.JSONDecodeError) else ""
        )
        raise PolicyFileError((), f"the policy file is not valid UTF-8 JSON{where}") from None
