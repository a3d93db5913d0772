"""The hand-written report validator against the committed schema, and against hostile input."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent_cloud.errors import InvalidReportError
from device_agent_cloud.report import (
    MAX_REPORT_BYTES,
    compute_facts_hash,
    parse_report,
    thing_from_topic,
)
from tests.cloud.support import REPORT_SCHEMA, encode, make_report, ok, self_signed_pem, unavailable

_, FINGERPRINT = self_signed_pem()
SCHEMA = json.loads(REPORT_SCHEMA.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def schema_valid(document: Any) -> bool:
    return VALIDATOR.is_valid(document)


def refused(payload: bytes, **kwargs: Any) -> InvalidReportError:
    with pytest.raises(InvalidReportError) as caught:
        parse_report(payload, **kwargs)
    return caught.value


def test_a_device_report_is_valid_for_both_validators():
    report = make_report("thermostat-1", FINGERPRINT)
    assert schema_valid(report)
    parsed = parse_report(encode(report), topic_thing="thermostat-1")
    assert parsed.thing == "thermostat-1"
    assert parsed.report_id == report["reportId"]
    assert parsed.facts_hash == report["factsHash"]
    assert parsed.facts["secureBoot"].value is True
    assert parsed.facts["hardwareUuid"].status == "unavailable"
    assert parsed.time.tzinfo is not None


def test_facts_hash_is_the_documented_canonical_form():
    facts = {"b": ok("é"), "a": ok(1), "uptimeSeconds": ok(5)}
    expected = (
        __import__("hashlib")
        .sha256('{"a":{"status":"ok","value":1},"b":{"status":"ok","value":"é"}}'.encode())
        .hexdigest()
    )
    assert compute_facts_hash(facts) == "sha256:" + expected
    # uptime is outside the hash: a resend with a later uptime keeps its hash.
    assert compute_facts_hash({**facts, "uptimeSeconds": ok(99)}) == compute_facts_hash(facts)


def test_a_changed_fact_without_a_new_hash_is_refused():
    report = make_report("t", FINGERPRINT)
    report["facts"]["secureBoot"] = ok(False)
    assert schema_valid(report)  # the schema cannot see it; the verifier must
    assert refused(encode(report)).field == "factsHash"


def test_uptime_may_change_without_a_new_hash():
    report = make_report("t", FINGERPRINT)
    report["facts"]["uptimeSeconds"] = ok(99999)
    assert parse_report(encode(report)).facts["uptimeSeconds"].value == 99999


def test_topic_and_body_must_name_the_same_thing():
    report = encode(make_report("thing-a", FINGERPRINT))
    assert refused(report, topic_thing="thing-b").field == "thing"
    assert thing_from_topic("dt/device-agent/thing-a/bootstrap") == "thing-a"
    for topic in (
        "dt/device-agent/a/b/bootstrap",
        "dt/device-agent//bootstrap",
        "cmd/device-agent/a/verdict",
    ):
        with pytest.raises(InvalidReportError):
            thing_from_topic(topic)


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (b"x" * (MAX_REPORT_BYTES + 1), "payload", "larger than"),
        (b'{"schema": "\xff"}', "payload", "UTF-8"),
        (_nested(5000), "payload", "nests deeper"),
        (b"[" * 60000, "payload", "nests deeper"),
        (b'{"a": NaN}', "payload", "NaN"),
        (b'{"a": -Infinity}', "payload", "Infinity"),
        (b'{"a": 1e999}', "payload", "too large"),
        (b'{"a": ' + b"9" * 5000 + b"}", "payload", "digits"),
        (b'{"a": 1, "a": 2}', "payload", "duplicate key"),
        (b'{"a": "\\ud800"}', "payload", "surrogate"),
        (b"[" + b"1," * 5000 + b"1]", "payload", "elements"),
        (b"{", "payload", "not valid JSON"),
        (b"[]", "<root>", "not an object"),
        (b"", "payload", "not valid JSON"),
    ],
    ids=[
        "oversized",
        "not-utf8",
        "deep-objects",
        "deep-arrays",
        "nan",
        "infinity",
        "float-overflow",
        "huge-integer",
        "duplicate-key",
        "lone-surrogate",
        "too-many-elements",
        "truncated",
        "array",
        "empty",
    ],
)
def test_hostile_payloads_are_refused_with_a_reason(payload: bytes, field: str, words: str):
    error = refused(payload)
    assert error.field == field
    assert words in error.reason


def test_brackets_inside_strings_do_not_count_as_depth():
    report = make_report(
        "t", FINGERPRINT, change={"extra": ok({"note": "[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{"})}
    )
    assert parse_report(encode(report)).facts["extra"].ok


def _mutations(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(name, schema-invalid document, field the validator must name)."""
    cases: list[tuple[str, dict[str, Any], str]] = []

    def case(name: str, field: str, edit: Any) -> None:
        document = copy.deepcopy(report)
        edit(document)
        cases.append((name, document, field))

    case("wrong-schema", "schema", lambda d: d.update(schema="bootstrap-report/2"))
    case("short-id", "reportId", lambda d: d.update(reportId="abc"))
    case("upper-id", "reportId", lambda d: d.update(reportId="A" * 32))
    case("bad-thing", "thing", lambda d: d.update(thing="a/b"))
    case("long-thing", "thing", lambda d: d.update(thing="a" * 129))
    case("time-number", "time", lambda d: d.update(time=1764000000))
    case("bad-reason", "reason", lambda d: d.update(reason="because"))
    case("bad-hash", "factsHash", lambda d: d.update(factsHash="md5:00"))
    case("extra-key", "<root>", lambda d: d.update(more=1))
    case("missing-facts", "<root>", lambda d: d.pop("facts"))
    case("facts-array", "facts", lambda d: d.update(facts=[]))
    case("fact-name", "facts", lambda d: d["facts"].update({"1bad": ok(1)}))
    case("too-many-facts", "facts", lambda d: d["facts"].update({f"x{i}": ok(i) for i in range(64)}))
    case(
        "bad-status", "facts.tpm.status", lambda d: d["facts"].update(tpm={"status": "maybe", "reason": "x"})
    )
    case("status-bool", "facts.tpm.status", lambda d: d["facts"].update(tpm={"status": True}))
    case("ok-no-value", "facts.tpm", lambda d: d["facts"].update(tpm={"status": "ok"}))
    case(
        "ok-with-reason",
        "facts.tpm",
        lambda d: d["facts"].update(tpm={"status": "ok", "value": 1, "reason": "r"}),
    )
    case("error-no-reason", "facts.tpm", lambda d: d["facts"].update(tpm={"status": "error"}))
    case("error-with-value", "facts.tpm", lambda d: d["facts"].update(tpm={**unavailable(), "value": 1}))
    case("fact-extra-key", "facts.tpm", lambda d: d["facts"].update(tpm={**ok(1), "why": "x"}))
    case("long-reason", "facts.tpm.reason", lambda d: d["facts"].update(tpm=unavailable("r" * 257)))
    case("long-source", "facts.tpm.source", lambda d: d["facts"].update(tpm=ok(1, "s" * 65)))
    case("reporter-extra", "reporter", lambda d: d["reporter"].update(pid=1))
    case("reporter-number", "reporter.version", lambda d: d["reporter"].update(version=1))
    case("reporter-long", "reporter.component", lambda d: d["reporter"].update(component="c" * 129))
    return cases


CASES = _mutations(make_report("thermostat-1", FINGERPRINT))


@pytest.mark.parametrize(("name", "document", "field"), CASES, ids=[c[0] for c in CASES])
def test_every_schema_invalid_example_is_refused_naming_the_field(
    name: str, document: dict[str, Any], field: str
):
    assert not schema_valid(document), name  # the example really is invalid by the committed schema
    # Keep the hash right where the facts changed, so the refusal is about the schema rule, not the hash.
    if isinstance(document.get("facts"), dict):
        with contextlib.suppress(TypeError, ValueError):
            document["factsHash"] = (
                compute_facts_hash(document["facts"]) if name != "bad-hash" else document["factsHash"]
            )
    assert refused(encode(document)).field == field


_json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=20)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_field_names = st.sampled_from(
    ["schema", "reportId", "thing", "time", "reason", "factsHash", "facts", "reporter", "unknown"]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(field=_field_names, value=_json_values)
def test_any_top_level_change_the_schema_refuses_is_refused(field: str, value: Any):
    document = make_report("thermostat-1", FINGERPRINT, report_id="0" * 32)
    document[field] = value
    if schema_valid(document):
        return  # the change happened to be valid (or, for facts, is judged by the hash below)
    with pytest.raises(InvalidReportError):
        parse_report(encode(document))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    name=st.sampled_from(["tpm", "serial", "extra"]),
    fact=st.dictionaries(
        st.sampled_from(["status", "value", "source", "reason", "other"]),
        st.sampled_from(["ok", "unavailable", "error", "x"]) | _json_values,
        max_size=4,
    ),
)
def test_any_fact_the_schema_refuses_is_refused(name: str, fact: dict[str, Any]):
    document = make_report("thermostat-1", FINGERPRINT, change={name: fact}, report_id="0" * 32)
    if schema_valid(document):
        parse_report(encode(document))  # and what the schema accepts, we accept
        return
    with pytest.raises(InvalidReportError):
        parse_report(encode(document))


@pytest.mark.parametrize(
    "when",
    ["2026-11-24T12:00:00", "yesterday", "2026-11-24 12:00:00Z", "2026-13-24T12:00:00Z", "2026-11-24T12:00Z"],
)
def test_time_must_be_an_rfc3339_date_time_with_a_zone(when: str):
    # `format` is only an annotation in draft 2020-12 (and jsonschema checks date-time only with an extra
    # package), so the verifier checks what the schema means, not just what a default validator enforces.
    report = make_report("t", FINGERPRINT)
    report["time"] = when
    assert refused(encode(report)).field == "time"


def test_time_with_an_offset_is_read_as_utc():
    report = make_report("t", FINGERPRINT)
    report["time"] = "2026-11-24T14:00:00.250+02:00"
    assert parse_report(encode(report)).time.isoformat() == "2026-11-24T12:00:00.250000+00:00"


def test_the_hash_is_the_one_the_device_computes():
    """The contract: the reporter's own hash function and the verifier's agree on a device's facts."""
    device_report = pytest.importorskip("device_agent.facts.report")
    report = make_report(
        "t", FINGERPRINT, change={"extra": ok({"note": "ünïcode ✓", "n": 1.5, "big": 2**62})}
    )
    assert device_report.facts_hash(report["facts"]) == compute_facts_hash(report["facts"])
