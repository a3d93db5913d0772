"""Redaction with a fleet salt, and the facts hash as the schema defines it."""

from __future__ import annotations

import hashlib
import hmac
import json

from hypothesis import given
from hypothesis import strategies as st

from device_agent.facts.fact import Fact
from device_agent.facts.redaction import Redactor
from device_agent.facts.report import canonical_json, facts_document, facts_hash, shape

SALT = b"fleet-salt-0123456789"
FACTS = {
    "macAddresses": Fact.ok([{"interface": "eth0", "mac": "DC:A6:32:01:02:03"}], source="sysfs"),
    "serial": Fact.ok("SERIAL-9F2K", source="dmi"),
    "hardwareUuid": Fact.unavailable("needs root"),
    "model": Fact.ok("Pi"),
}


def expected(value: str) -> str:
    return "hmac-sha256:" + hmac.new(SALT, value.encode(), hashlib.sha256).hexdigest()


def test_only_the_chosen_fields_are_redacted():
    redacted = Redactor(SALT, frozenset({"macAddresses", "hardwareUuid"})).apply(FACTS)
    assert redacted["macAddresses"].value == [{"interface": "eth0", "mac": expected("dc:a6:32:01:02:03")}]
    assert redacted["serial"].value == "SERIAL-9F2K"
    assert redacted["hardwareUuid"] == FACTS["hardwareUuid"]  # nothing to redact in a reason
    assert redacted["model"] == FACTS["model"]
    assert FACTS["macAddresses"].value[0]["mac"] == "DC:A6:32:01:02:03"  # the input is left alone


def test_serial_redaction_and_the_salt_never_in_a_repr():
    redactor = Redactor(SALT, frozenset({"serial"}))
    assert redactor.apply(FACTS)["serial"].value == expected("SERIAL-9F2K")
    assert SALT.decode() not in repr(redactor)


def test_uptime_is_not_hashed_and_key_order_does_not_matter():
    one = facts_document({**FACTS, "uptimeSeconds": Fact.ok(1.0)})
    two = facts_document({"uptimeSeconds": Fact.ok(99.5), **dict(reversed(FACTS.items()))})
    assert facts_hash(one) == facts_hash(two)
    assert facts_hash(one) != facts_hash(facts_document({**FACTS, "model": Fact.ok("Pi 5")}))


def test_the_hash_is_sha256_of_the_documented_canonical_json():
    document = {"model": {"status": "ok", "value": "Pí"}, "a": {"status": "unavailable", "reason": "x"}}
    text = '{"a":{"reason":"x","status":"unavailable"},"model":{"status":"ok","value":"Pí"}}'
    assert canonical_json(document) == text.encode("utf-8")
    assert facts_hash(document) == "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.from_regex(r"[a-z][a-zA-Z0-9]{0,10}", fullmatch=True), json_values, max_size=8))
def test_canonical_json_round_trips_and_the_hash_has_the_schema_format(facts: dict[str, object]):
    assert json.loads(canonical_json(facts)) == facts
    digest = facts_hash(facts)
    assert digest.startswith("sha256:")
    assert len(digest) == len("sha256:") + 64


def test_shape_counts_depth_and_every_element():
    assert shape(7) == (0, 1)
    assert shape({"a": {"b": [1, 2]}}) == (3, 7)  # 3 containers deep; 3 containers, 2 keys, 2 scalars
