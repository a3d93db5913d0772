"""The store component's request handling on a real engine (no nucleus): every outcome is a response."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from encrypted_store.service import StoreService

from device_agent import store_protocol as protocol
from device_agent.errors import UnavailableError
from device_agent.store import NamespacePolicy, StoreEvent
from device_agent.store_protocol import ErrorCode, Op

POLICIES = {
    "alpha": NamespacePolicy(max_records=2, overflow="reject"),
    "queue": NamespacePolicy(max_records=3, overflow="drop_oldest"),
}
_ids = iter(range(1, 10**6))


async def no_kek():
    return None


def req(op: Op, **fields) -> protocol.Request:
    document = protocol.request_document(f"t-{next(_ids)}", op, **fields)
    return protocol.parse_request(document, max_value_bytes=1024, max_read_bytes=65536)


def value(text: str) -> str:
    return protocol.encode_value(text.encode())


@pytest.fixture
async def service(tmp_path: Path):
    events: list[StoreEvent] = []
    svc = StoreService(
        tmp_path / "store", no_kek, policies=POLICIES, max_value_bytes=1024, on_event=events.append
    )
    assert await svc.open()
    svc.events = events  # type: ignore[attr-defined]
    yield svc
    await svc.close()


async def test_keyed_records_and_queue_through_requests(service: StoreService):
    assert (await service.handle("alpha", req(Op.PUT, key="k", value=value("v"))))["ok"]
    got = await service.handle("alpha", req(Op.GET, key="k"))
    assert protocol.decode_value(got["result"]["value"], "value") == b"v"
    assert (await service.handle("alpha", req(Op.KEYS)))["result"] == {"keys": ["k"]}
    appended = await service.handle("queue", req(Op.APPEND, values=[value("a"), value("b")]))
    seqs = appended["result"]["seqs"]
    read = await service.handle("queue", req(Op.READ, maxRecords=10))
    assert [r["seq"] for r in read["result"]["records"]] == seqs
    assert (await service.handle("queue", req(Op.ACK, upTo=seqs[0])))["result"] == {"removed": 1}
    assert (await service.handle("alpha", req(Op.DELETE, key="k")))["result"] == {"deleted": True}
    missing = await service.handle("alpha", req(Op.GET, key="k"))
    assert missing["error"]["code"] == ErrorCode.NOT_FOUND


async def test_a_resent_request_is_answered_from_the_replay_cache_not_done_twice(service: StoreService):
    request = req(Op.APPEND, values=[value("once")])
    first = await service.handle("queue", request)
    again = await service.handle("queue", request)
    assert again == first
    records = (await service.handle("queue", req(Op.READ)))["result"]["records"]
    assert len(records) == 1


async def test_quota_and_overflow_become_codes_and_counters(service: StoreService):
    for key in ("a", "b"):
        assert (await service.handle("alpha", req(Op.PUT, key=key, value=value("v"))))["ok"]
    full = await service.handle("alpha", req(Op.PUT, key="c", value=value("v")))
    assert full["error"]["code"] == ErrorCode.QUOTA_EXCEEDED
    await service.handle("queue", req(Op.APPEND, values=[value(str(n)) for n in range(5)]))
    stats = (await service.handle("queue", req(Op.STATS)))["result"]
    assert (stats["records"], stats["droppedRecords"], stats["maxRecords"]) == (3, 2, 3)
    assert any(e.name == "store.records_dropped" for e in service.events)  # type: ignore[attr-defined]


async def test_undeclared_namespaces_and_admin_only_ops(service: StoreService):
    unknown = await service.handle("other", req(Op.KEYS))
    assert unknown["error"]["code"] == ErrorCode.UNKNOWN_NAMESPACE
    not_admin = await service.handle(protocol.ADMIN_NAMESPACE, req(Op.PUT, key="k", value=value("v")))
    assert not_admin["error"]["code"] == ErrorCode.INVALID_REQUEST
    summary = (await service.handle(protocol.ADMIN_NAMESPACE, req(Op.STATS)))["result"]
    assert set(summary["namespaces"]) == {"alpha", "queue"}


async def test_wiping_everything_destroys_the_key_and_keeps_serving(service: StoreService, tmp_path: Path):
    await service.handle("alpha", req(Op.PUT, key="k", value=value("secret")))
    key_before = (tmp_path / "store" / "store.key").read_bytes()
    wiped = await service.handle(protocol.ADMIN_NAMESPACE, req(Op.WIPE))
    assert wiped["ok"], wiped
    assert (tmp_path / "store" / "store.key").read_bytes() != key_before
    assert (await service.handle("alpha", req(Op.KEYS)))["result"] == {"keys": []}
    assert (await service.handle("alpha", req(Op.PUT, key="k2", value=value("v"))))["ok"]


async def test_a_tampered_record_is_an_integrity_error_and_an_event(service: StoreService, tmp_path: Path):
    await service.handle("alpha", req(Op.PUT, key="k", value=value("the secret plaintext")))
    database = next(p for p in (tmp_path / "store").iterdir() if p.suffix == ".db")
    with sqlite3.connect(database) as db:
        db.execute(  # the tag's last byte changed (`||` makes text: CAST makes it a blob again)
            "UPDATE records SET sealed = CAST(substr(sealed, 1, length(sealed) - 1)"
            " || (CASE WHEN substr(sealed, -1) = x'00' THEN x'01' ELSE x'00' END) AS BLOB) WHERE key = 'k'"
        )
    answer = await service.handle("alpha", req(Op.GET, key="k"))
    assert answer["error"]["code"] == ErrorCode.INTEGRITY
    assert "failed authentication" in answer["error"]["message"]
    assert "secret" not in answer["error"]["message"]
    assert any(e.name == "store.integrity_failed" for e in service.events)  # type: ignore[attr-defined]


async def test_a_store_that_cannot_open_answers_unavailable_and_opens_later(tmp_path: Path):
    attempts = []

    async def flaky_kek():
        attempts.append(1)
        if len(attempts) == 1:
            raise UnavailableError("secret manager not ready")

    svc = StoreService(tmp_path / "store", flaky_kek, policies=POLICIES, max_value_bytes=1024, on_event=print)
    try:
        assert not await svc.open()
        assert svc.last_open_error is not None
        assert "UnavailableError" in svc.last_open_error
        answer = await svc.handle("alpha", req(Op.KEYS))
        assert answer["error"]["code"] == ErrorCode.UNAVAILABLE
        assert await svc.open()
        assert (await svc.handle("alpha", req(Op.KEYS)))["ok"]
    finally:
        await svc.close()


async def test_storage_that_fails_is_unavailable_not_a_crash(tmp_path: Path):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directory should be")
    svc = StoreService(blocker, no_kek, policies=POLICIES, max_value_bytes=1024, on_event=print)
    try:
        assert not await svc.open()
        assert (await svc.handle("alpha", req(Op.KEYS)))["error"]["code"] == ErrorCode.UNAVAILABLE
        blocker.unlink()
        assert await svc.open()
    finally:
        await svc.close()


SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def validator(name: str):
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


async def test_every_request_and_answer_matches_the_documented_schemas(service: StoreService):
    requests = validator("store-request.schema.json")
    responses = validator("store-response.schema.json")
    script: list[tuple[str, Op, dict[str, Any]]] = [
        ("alpha", Op.PUT, {"key": "k", "value": value("v"), "ttlSeconds": 60}),
        ("alpha", Op.GET, {"key": "k"}),
        ("alpha", Op.GET, {"key": "absent"}),
        ("alpha", Op.KEYS, {}),
        ("alpha", Op.DELETE, {"key": "k"}),
        ("queue", Op.APPEND, {"values": [value("a"), value("b")]}),
        ("queue", Op.READ, {"maxRecords": 5, "maxBytes": 1024}),
        ("queue", Op.ACK, {"upTo": 1}),
        ("queue", Op.STATS, {}),
        ("nowhere", Op.KEYS, {}),
        ("queue", Op.WIPE, {}),
    ]
    for namespace, op, fields in script:
        document = protocol.request_document(f"s-{next(_ids)}", op, **fields)
        requests.validate(document)
        answer = await service.handle(
            namespace, protocol.parse_request(document, max_value_bytes=1024, max_read_bytes=65536)
        )
        responses.validate(answer)
    summary = await service.stats_document()
    assert summary is not None
    stats = {
        "schema": protocol.STATS_SCHEMA,
        "component": "com.deviceagent.EncryptedStore",
        "thing": "t",
        "time": "2026-11-24T12:00:00.000Z",
        **summary,
        "refusedRequests": 0,
    }
    validator("store-stats.schema.json").validate(stats)
