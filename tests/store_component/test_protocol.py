"""The store's wire protocol: requests checked field by field, responses read defensively."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent import store_protocol as protocol
from device_agent.errors import InvalidInputError
from device_agent.store_protocol import ErrorCode, Op

LIMITS = {"max_value_bytes": 64, "max_read_bytes": 4096}


def request(**fields):
    return {"schema": protocol.REQUEST_SCHEMA, "id": "r-1", **fields}


def test_a_put_round_trips_through_the_documents():
    document = protocol.request_document(
        "c0ffee-7", Op.PUT, key="k", value=protocol.encode_value(b"\x00\xff"), ttlSeconds=5
    )
    parsed = protocol.parse_request(document, **LIMITS)
    assert (parsed.id, parsed.op, parsed.key, parsed.value, parsed.ttl) == (
        "c0ffee-7",
        Op.PUT,
        "k",
        b"\x00\xff",
        5.0,
    )
    assert "value" not in repr(parsed) or "\\xff" not in repr(parsed)  # values never in a repr


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"op": "explode"}, "op:"),
        ({"op": "put", "key": "", "value": "AA=="}, "key:"),
        ({"op": "put", "key": "k", "value": "not base64!"}, "value:"),
        ({"op": "put", "key": "k", "value": base64.b64encode(b"x" * 65).decode()}, "over this store's limit"),
        ({"op": "put", "key": "k", "value": "AA==", "ttlSeconds": 0}, "ttlSeconds:"),
        ({"op": "put", "key": "k", "value": "AA==", "ttlSeconds": True}, "ttlSeconds:"),
        ({"op": "append", "values": []}, "values:"),
        ({"op": "append", "values": ["AA==", 7]}, "values[1]:"),
        ({"op": "read", "maxRecords": 0}, "maxRecords:"),
        ({"op": "read", "maxBytes": 10**9}, "maxBytes:"),
        ({"op": "ack"}, "upTo:"),
        ({"op": "ack", "upTo": -1}, "upTo:"),
        ({"op": "get", "key": "a\x00b"}, "key:"),
    ],
)
def test_a_bad_request_names_the_field(fields, names):
    with pytest.raises(InvalidInputError, match=names.replace("[", r"\[")):
        protocol.parse_request(request(**fields), **LIMITS)


def test_schema_and_id_are_required():
    with pytest.raises(InvalidInputError, match="schema"):
        protocol.parse_request({"id": "x", "op": "keys"}, **LIMITS)
    with pytest.raises(InvalidInputError, match="id:"):
        protocol.parse_request({"schema": protocol.REQUEST_SCHEMA, "id": "a b", "op": "keys"}, **LIMITS)
    assert protocol.request_id_of({"id": "x" * 65}) is None
    assert protocol.request_id_of(["id"]) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    op=st.sampled_from([o.value for o in Op]) | st.text(max_size=8),
    extra=st.dictionaries(
        st.sampled_from(["key", "value", "values", "ttlSeconds", "maxRecords", "maxBytes", "upTo"]),
        json_values,
    ),
)
def test_hostile_requests_give_a_request_or_invalid_input_never_anything_else(op, extra):
    try:
        parsed = protocol.parse_request(request(op=op, **extra), **LIMITS)
    except InvalidInputError:
        return
    assert parsed.op.value == op
    assert all(len(v) <= LIMITS["max_value_bytes"] for v in parsed.values)


@given(json_values)
def test_any_payload_is_a_response_or_none(payload):
    response = protocol.parse_response(payload)
    assert response is None or isinstance(response.ok, bool)


def test_responses_carry_a_code_the_client_can_map():
    error = protocol.parse_response(protocol.error_document("r-1", ErrorCode.QUOTA_EXCEEDED, "full"))
    assert error is not None
    assert (error.ok, error.code, error.message) == (False, ErrorCode.QUOTA_EXCEEDED, "full")
    unknown = protocol.parse_response(
        {**protocol.error_document("r-1", ErrorCode.BUSY, "x"), "error": {"code": "??"}}
    )
    assert unknown is not None
    assert unknown.code is ErrorCode.INTERNAL
    ok = protocol.parse_response(protocol.ok_document("r-2", {"seqs": [1]}))
    assert ok is not None
    assert (ok.ok, ok.result) == (True, {"seqs": [1]})


@pytest.mark.parametrize(
    ("topic", "namespace"),
    [
        ("device-agent/store/telemetry/request", "telemetry"),
        ("device-agent/store/_admin/request", "_admin"),
        ("device-agent/store/a/b/request", None),
        ("device-agent/store//request", None),
        ("device-agent/store/telemetry/response", None),
        ("other/telemetry/request", None),
        (None, None),
    ],
)
def test_the_namespace_comes_from_the_topic(topic, namespace):
    assert protocol.namespace_of(topic) == namespace
