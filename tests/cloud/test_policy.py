"""The policy file: every key parsed, overrides per thing type, manifests, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent_cloud.errors import PolicyFileError
from device_agent_cloud.policy import (
    RULE_KEYS,
    Model,
    SemVer,
    load_policy,
    parse_policy,
    pseudonym,
    read_manifest,
)
from tests.cloud.support import POLICY, policy_document


def write(tmp_path: Path, document: Any, name: str = "policy.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def test_default_and_overrides():
    policy = parse_policy(POLICY)
    default = policy.rules_for(None)
    assert default.name == "default"
    assert default.allowed_architectures == frozenset({"aarch64", "x86_64"})
    assert default.require_root_encryption is True
    assert default.minimum_nucleus_version == SemVer(2, 12, 0)
    thermostat = policy.rules_for("thermostat")
    assert thermostat.name == "thermostat"
    assert thermostat.allowed_models == frozenset({Model("Acme", "Thermo 3000")})
    assert thermostat.serial_allowlist == frozenset({"SN-0001", "SN-0002"})
    assert thermostat.require_tpm
    assert thermostat.require_secure_boot
    assert thermostat.when_fact_unavailable == "reject"
    assert thermostat.require_root_encryption is True  # inherited from default
    kiosk = policy.rules_for("kiosk")
    assert kiosk.allowed_architectures == frozenset({"x86_64"})
    assert kiosk.reverify_interval_seconds == 3600
    assert policy.rules_for("toaster") is policy.default
    assert "SN-0001" not in repr(thermostat)


@pytest.mark.parametrize(
    ("edit", "key_path"),
    [
        (lambda d: d.update(schema="verifier-policy/9"), "schema"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.pop("default"), "default"),
        (lambda d: d["default"].pop("requireTpm"), "default.requireTpm"),
        (lambda d: d["default"].update(requireTpm="yes"), "default.requireTpm"),
        (lambda d: d["default"].update(allowedArchitectures=[]), "default.allowedArchitectures"),
        (lambda d: d["default"].update(allowedArchitectures=["x", 3]), "default.allowedArchitectures[1]"),
        (lambda d: d["default"].update(minimumNucleusVersion="2.x"), "default.minimumNucleusVersion"),
        (lambda d: d["default"].update(maxReportAgeSeconds=0), "default.maxReportAgeSeconds"),
        (lambda d: d["default"].update(maxClockSkewSeconds=True), "default.maxClockSkewSeconds"),
        (lambda d: d["default"].update(whenFactUnavailable="ignore"), "default.whenFactUnavailable"),
        (lambda d: d["thingTypes"]["kiosk"].update(requireTmp=True), "thingTypes.kiosk.requireTmp"),
        (lambda d: d["thingTypes"]["kiosk"].update(requireTpm=1), "thingTypes.kiosk.requireTpm"),
        (lambda d: d["thingTypes"].update({"bad type": {}}), "thingTypes.bad type"),
        (lambda d: d["thingTypes"].update(kiosk=[]), "thingTypes.kiosk"),
        (
            lambda d: d["thingTypes"]["thermostat"].update(allowedModels=[{"vendor": "A"}]),
            "thingTypes.thermostat.allowedModels[0]",
        ),
        (
            lambda d: d["thingTypes"]["thermostat"].update(serialAllowlist={"serials": [], "path": "x"}),
            "thingTypes.thermostat.serialAllowlist",
        ),
        (
            lambda d: d["thingTypes"]["thermostat"].update(serialAllowlist={"path": "missing.csv"}),
            "thingTypes.thermostat.serialAllowlist.path",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, edit: Any, key_path: str):
    document = policy_document()
    edit(document)
    with pytest.raises(PolicyFileError) as caught:
        load_policy(write(tmp_path, document))
    assert str(caught.value).startswith(key_path + ":")


def test_file_errors(tmp_path: Path):
    with pytest.raises(PolicyFileError, match="cannot read"):
        load_policy(tmp_path / "none.json")
    with pytest.raises(PolicyFileError, match="line 1"):
        load_policy(write(tmp_path, "{"))
    with pytest.raises(PolicyFileError, match="appears twice"):
        load_policy(write(tmp_path, '{"schema": "verifier-policy/1", "schema": "x"}'))
    with pytest.raises(PolicyFileError, match="must be an object"):
        load_policy(write(tmp_path, "[]"))


def test_manifest_paths_are_relative_to_the_policy(tmp_path: Path):
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "thermostats.csv").write_text(
        "batch,serial,date\n# a comment\n7,SN-0001,2026-01-01\n\n7,SN-0002 ,2026-01-02\n"
    )
    document = policy_document()
    document["thingTypes"]["thermostat"]["serialAllowlist"] = {"path": "manifests/thermostats.csv"}
    policy = load_policy(write(tmp_path, document))
    assert policy.rules_for("thermostat").serial_allowlist == frozenset({"SN-0001", "SN-0002"})


def test_manifest_formats(tmp_path: Path):
    lines = tmp_path / "lines.txt"
    lines.write_text("\ufeffA1\nA2\n\n# old batch\nA3\n")
    assert read_manifest(lines) == {"A1", "A2", "A3"}
    one_column_with_header = tmp_path / "header.csv"
    one_column_with_header.write_text("Serial\nC1\nC2\n")
    assert read_manifest(one_column_with_header) == {"C1", "C2"}  # "Serial" is the header, not a unit
    first_column = tmp_path / "first.csv"
    first_column.write_text("B1,2026\nB2,2026\n")
    assert read_manifest(first_column) == {"B1", "B2"}
    empty = tmp_path / "empty.csv"
    empty.write_text("# nothing yet\n")
    with pytest.raises(PolicyFileError, match="no serial"):
        read_manifest(empty, ("x",))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyFileError, match="not UTF-8"):
        read_manifest(binary)


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("2.9.0", "2.10.0"),
        ("2.12.0-rc.1", "2.12.0"),
        ("2.12.0-alpha", "2.12.0-beta"),
        ("2.12.0-1", "2.12.0-alpha"),
        ("2.12.0-alpha.1", "2.12.0-alpha.beta"),
        ("1.99.99", "2.0.0"),
    ],
)
def test_semantic_version_precedence(low: str, high: str):
    assert SemVer.parse(low) < SemVer.parse(high)
    assert not SemVer.parse(high) < SemVer.parse(low)
    assert SemVer.parse(low) <= SemVer.parse(low)
    assert SemVer.parse("2.12.0+build.7") == SemVer.parse("2.12.0")


@pytest.mark.parametrize("text", ["2.12", "v2.12.0", "02.1.0", "2.12.0-", "2.12.0 "])
def test_bad_versions(text: str):
    with pytest.raises(ValueError, match="semantic version"):
        SemVer.parse(text)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(sorted(RULE_KEYS)),
    value=st.none() | st.booleans() | st.integers() | st.text(max_size=8),
)
def test_any_value_is_accepted_or_refused_naming_its_key(key: str, value: Any):
    document = policy_document()
    document["thingTypes"]["kiosk"] = {key: value}
    error: PolicyFileError | None = None
    try:
        parse_policy(document)
    except PolicyFileError as caught:
        error = caught
    if error is not None:
        assert error.key_path[:3] == ("thingTypes", "kiosk", key)


# ---- serials the devices redact (pseudonyms) ------------------------------------------------------------

SALT_ENV = "DEVICE_AGENT_TEST_FLEET_SALT"
SALT = "fleet-salt-of-the-test-0123456789"


def thermostat_allowlist(tmp_path: Path, allowlist: dict[str, Any]) -> Any:
    document = policy_document()
    document["thingTypes"]["thermostat"]["serialAllowlist"] = allowlist
    return load_policy(write(tmp_path, document)).rules_for("thermostat").serial_allowlist


def test_a_pseudonym_salt_lets_the_manifest_match_redacted_serials_as_the_device_redacts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from device_agent.facts.redaction import Redactor  # noqa: PLC0415 - the device's side

    monkeypatch.setenv(SALT_ENV, SALT)
    (tmp_path / "thermostats.csv").write_text("serial\nSN-0001\nSN-0002\n")
    allowed = thermostat_allowlist(tmp_path, {"path": "thermostats.csv", "pseudonymSalt": {"env": SALT_ENV}})
    device = Redactor(SALT.encode("utf-8"), frozenset({"serial"}))
    assert allowed == {"SN-0001", "SN-0002", device.pseudonym("SN-0001"), device.pseudonym("SN-0002")}
    assert pseudonym(SALT.encode(), "SN-0001") == device.pseudonym("SN-0001")
    other_fleet = Redactor(b"another-fleet-salt-0123456789", frozenset({"serial"}))
    assert other_fleet.pseudonym("SN-0001") not in allowed
    inline = thermostat_allowlist(tmp_path, {"serials": ["SN-0009"], "pseudonymSalt": {"env": SALT_ENV}})
    assert inline == {"SN-0009", device.pseudonym("SN-0009")}


@pytest.mark.parametrize(
    ("salt_source", "environment", "message"),
    [
        ({"env": SALT_ENV}, None, f"the environment variable {SALT_ENV} is not set"),
        ({"env": SALT_ENV}, "short-salt", f"the fleet salt in {SALT_ENV} is shorter than 16 characters"),
        ({"env": "not a name"}, SALT, "must be an environment variable name"),
        ({"env": 7}, SALT, "must be an environment variable name"),
        ({"secret": "x"}, SALT, 'must be {"env": "NAME"}'),
        ("DEVICE_AGENT_TEST_FLEET_SALT", SALT, "must be an object"),
    ],
)
def test_a_bad_pseudonym_salt_is_refused_by_key_and_never_echoed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    salt_source: Any,
    environment: str | None,
    message: str,
):
    if environment is None:
        monkeypatch.delenv(SALT_ENV, raising=False)
    else:
        monkeypatch.setenv(SALT_ENV, environment)
    with pytest.raises(PolicyFileError) as caught:
        thermostat_allowlist(tmp_path, {"serials": ["SN-0001"], "pseudonymSalt": salt_source})
    text = str(caught.value)
    assert text.startswith("thingTypes.thermostat.serialAllowlist.pseudonymSalt")
    assert message in text
    assert SALT not in text
    assert "short-salt" not in text


@pytest.mark.parametrize(
    "allowlist",
    [
        {"serials": None},
        {"pseudonymSalt": {"env": SALT_ENV}},
        {"serials": ["SN-0001"], "other": 1},
    ],
    ids=["null serials", "salt without serials", "unknown key"],
)
def test_an_allowlist_without_serials_or_with_unknown_keys_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowlist: dict[str, Any]
):
    monkeypatch.setenv(SALT_ENV, SALT)
    with pytest.raises(PolicyFileError, match=r"^thingTypes\.thermostat\.serialAllowlist"):
        thermostat_allowlist(tmp_path, allowlist)
