"""The client library's transport (`device_agent.store_client`): resending, timeouts, answers and errors.

The IPC session is replaced at its seam by `FakeBus`, an in-memory local pub/sub with a scripted store
behind it; everything above the seam is the real `StoreClient`: its resend schedule, its timeout, its
matching of answers to requests and its translation of error codes. (The end-to-end tests run the same
client against the real nucleus and store: tests/store_component/test_store_component_e2e.py.)
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Callable
from typing import Any, cast

import pytest

from device_agent import store_client
from device_agent import store_protocol as protocol
from device_agent.errors import (
    IntegrityError,
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
    QuotaExceededError,
    UnavailableError,
)
from device_agent.ipc import IpcSession
from device_agent.ipc_types import LocalMessage
from device_agent.store_client import StoreClient

# The resend schedule, scaled down 10 times so that a test takes a fraction of a second; the client reads
# both constants at every call.
FIRST, CAP = 0.025, 0.2
Answer = Callable[[dict[str, Any]], dict[str, Any] | None]


class FakeSubscription:
    def __init__(self, bus: FakeBus, topic: str) -> None:
        self.bus, self.topic = bus, topic

    async def close(self) -> None:
        self.bus.handlers.pop(self.topic, None)


class FakeBus:
    """Local pub/sub at the IPC seam: `publish` and `subscribe` as `IpcSession` offers them. A request is
    recorded with the loop's time; `answer(request)` decides the store's reply (None: the request is lost,
    as one published before the store subscribed is), delivered on a later turn of the loop."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or (lambda _request: None)
        self.handlers: dict[str, Callable[[LocalMessage], Any]] = {}
        self.sent: list[tuple[float, str, dict[str, Any]]] = []
        self.subscribes = 0
        self.refuse: Exception | None = None

    async def subscribe(self, topic: str, handler: Callable[[LocalMessage], Any]) -> FakeSubscription:
        self.subscribes += 1
        await asyncio.sleep(0)  # a real subscription takes a round trip: callers may overlap here
        self.handlers[topic] = handler
        return FakeSubscription(self, topic)

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        if self.refuse is not None:
            raise self.refuse
        loop = asyncio.get_running_loop()
        self.sent.append((loop.time(), topic, dict(message)))
        reply = self.answer(dict(message))
        if reply is not None:
            namespace = protocol.namespace_of(topic)
            assert namespace is not None
            loop.call_soon(self.deliver, protocol.response_topic(namespace), reply)

    def deliver(self, topic: str, payload: Any) -> None:
        handler = self.handlers.get(topic)
        if handler is not None:
            result = handler(LocalMessage(topic, payload, binary=False))
            assert not inspect.isawaitable(result)

    def ids(self) -> list[str]:
        return [message["id"] for _, _, message in self.sent]

    def gaps(self) -> list[float]:
        times = [at for at, _, _ in self.sent]
        return [later - earlier for earlier, later in itertools.pairwise(times)]


def client_on(bus: FakeBus, namespace: str = "alpha", timeout: float = 2.0) -> StoreClient:
    return StoreClient(cast("IpcSession", bus), namespace, timeout=timeout)


def answer_after(lost: int, result: dict[str, Any] | None = None) -> Answer:
    """A store that misses the first `lost` publishes (it was starting), then answers every one."""
    seen = [0]

    def answer(request: dict[str, Any]) -> dict[str, Any] | None:
        seen[0] += 1
        return None if seen[0] <= lost else protocol.ok_document(request["id"], result)

    return answer


@pytest.fixture(autouse=True)
def fast_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_client, "RESEND_FIRST_SECONDS", FIRST)
    monkeypatch.setattr(store_client, "RESEND_MAX_SECONDS", CAP)


def test_the_schedule_resends_after_a_quarter_second_doubling_to_two_seconds() -> None:
    # The real constants (the tests use them scaled): 0.25 s, then 0.5, 1, 2, 2...
    assert (store_client.RESEND_FIRST_SECONDS, store_client.RESEND_MAX_SECONDS) == (FIRST, CAP)
    assert (FIRST * 10, CAP * 10) == (0.25, 2.0)


async def test_an_answered_request_is_sent_once() -> None:
    bus = FakeBus(answer_after(0, {"value": protocol.encode_value(b"v")}))
    async with client_on(bus) as client:
        assert await client.get("k") == b"v"
    assert len(bus.sent) == 1
    (_, topic, request) = bus.sent[0]
    assert topic == "device-agent/store/alpha/request"
    assert (request["schema"], request["op"], request["key"]) == (protocol.REQUEST_SCHEMA, "get", "k")


async def test_an_unanswered_request_is_resent_with_the_same_id_doubling_the_wait_up_to_the_cap() -> None:
    bus = FakeBus(answer_after(5))
    async with client_on(bus) as client:
        await client.put("k", b"v")
    assert len(bus.sent) == 6
    assert len(set(bus.ids())) == 1  # the same id every time: the store's replay cache answers a repeat
    assert [message for _, _, message in bus.sent] == [bus.sent[0][2]] * 6
    nominal = [FIRST, FIRST * 2, FIRST * 4, CAP, CAP]
    for gap, wait in zip(bus.gaps(), nominal, strict=True):
        # Never before its time; a loaded machine may only make it late.
        assert gap >= wait * 0.95, (bus.gaps(), nominal)
        assert gap < wait + 1.0, (bus.gaps(), nominal)


async def test_a_store_that_never_answers_gives_unavailable_at_the_timeout_not_a_hang() -> None:
    bus = FakeBus()
    client = client_on(bus, timeout=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UnavailableError, match=r"did not answer a put request .* within 0.5 s") as failure:
        await client.put("k", b"v")
    elapsed = loop.time() - started
    assert 0.5 * 0.95 <= elapsed < 2.0
    assert "is com.deviceagent.EncryptedStore running?" in str(failure.value)
    assert failure.value.__cause__ is None
    # Resent while it waited (0, 0.025, 0.075, 0.175, 0.375 s), never after the timeout.
    assert 4 <= len(bus.sent) <= 6
    assert all(at - started < 0.5 for at, _, _ in bus.sent)
    assert client._pending == {}  # nothing left waiting
    await client.close()


async def test_an_answer_after_the_timeout_is_ignored_and_the_next_call_works() -> None:
    bus = FakeBus()
    client = client_on(bus, timeout=0.1)
    with pytest.raises(UnavailableError):
        await client.delete("k")
    late = bus.ids()[0]
    bus.deliver("device-agent/store/alpha/response", protocol.ok_document(late, {"deleted": True}))
    bus.answer = answer_after(0, {"deleted": False})
    assert await client.delete("k") is False
    assert bus.ids()[-1] != late  # a new call has a new id
    await client.close()


async def test_answers_are_matched_by_id_and_foreign_or_malformed_ones_are_ignored() -> None:
    held: list[dict[str, Any]] = []

    def hold(request: dict[str, Any]) -> None:
        held.append(request)  # answered by hand below

    bus = FakeBus(hold)
    async with client_on(bus) as client:
        first = asyncio.create_task(client.get("first"))
        second = asyncio.create_task(client.get("second"))
        while len(held) < 2:
            await asyncio.sleep(0)
        by_key = {request["key"]: request["id"] for request in held}
        topic = "device-agent/store/alpha/response"
        for noise in (
            "not json",
            {"schema": "other/1", "id": by_key["first"], "ok": True, "result": {}},
            {"schema": protocol.RESPONSE_SCHEMA, "id": by_key["first"]},  # no ok
            protocol.ok_document("someone-else-1", {"value": protocol.encode_value(b"not mine")}),
        ):
            bus.deliver(topic, noise)
        await asyncio.sleep(FIRST / 2)
        assert not first.done()
        # Answered out of order, and twice (a resend answered from the replay cache): each call gets its own.
        for key in ("second", "first", "first"):
            bus.deliver(
                topic, protocol.ok_document(by_key[key], {"value": protocol.encode_value(key.encode())})
            )
        assert (await first, await second) == (b"first", b"second")
        assert client._pending == {}


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        (protocol.ErrorCode.INVALID_REQUEST, InvalidInputError),
        (protocol.ErrorCode.UNKNOWN_NAMESPACE, InvalidInputError),
        (protocol.ErrorCode.NOT_FOUND, NotFoundError),
        (protocol.ErrorCode.QUOTA_EXCEEDED, QuotaExceededError),
        (protocol.ErrorCode.INTEGRITY, IntegrityError),
        (protocol.ErrorCode.BUSY, UnavailableError),
        (protocol.ErrorCode.UNAVAILABLE, UnavailableError),
        (protocol.ErrorCode.INTERNAL, UnavailableError),
    ],
)
async def test_each_error_code_raises_its_error_without_a_resend(
    code: protocol.ErrorCode, raised: type[Exception]
) -> None:
    bus = FakeBus(lambda request: protocol.error_document(request["id"], code, "because"))
    async with client_on(bus) as client:
        with pytest.raises(raised, match=f"store put on namespace alpha: {code.value}: because"):
            await client.put("k", b"v")
    assert len(bus.sent) == 1  # an answer, even an error, ends the call


async def test_an_unknown_error_code_is_unavailable() -> None:
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        document = protocol.error_document(request["id"], protocol.ErrorCode.BUSY, "?")
        document["error"]["code"] = "from_a_newer_store"
        return document

    async with client_on(FakeBus(answer)) as client:
        with pytest.raises(UnavailableError, match="internal"):
            await client.keys()


async def test_get_or_none_maps_only_not_found() -> None:
    code = [protocol.ErrorCode.NOT_FOUND]
    bus = FakeBus(lambda request: protocol.error_document(request["id"], code[0], "x"))
    async with client_on(bus) as client:
        assert await client.get_or_none("k") is None
        code[0] = protocol.ErrorCode.INTEGRITY
        with pytest.raises(IntegrityError):
            await client.get_or_none("k")


async def test_a_refused_publish_fails_at_once_and_is_not_resent() -> None:
    bus = FakeBus()
    bus.refuse = NotAuthorizedError("not authorized to publish to device-agent/store/alpha/request")
    client = client_on(bus)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NotAuthorizedError):
        await client.put("k", b"v")
    assert loop.time() - started < FIRST  # no waiting out the timeout
    assert client._pending == {}
    await client.close()


async def test_append_with_a_caller_id_resends_that_id_and_checks_the_answer() -> None:
    bus = FakeBus(answer_after(1, {"seqs": [7, 8]}))
    async with client_on(bus) as client:
        assert await client.append([b"a", b"b"], request_id="spool-42") == [7, 8]
        assert bus.ids() == ["spool-42", "spool-42"]
        bus.answer = answer_after(0, {"seqs": [9]})  # one number for two values: not believed
        with pytest.raises(UnavailableError, match="one sequence number per value"):
            await client.append([b"a", b"b"])


async def test_concurrent_first_calls_subscribe_once_and_close_fails_what_waits() -> None:
    bus = FakeBus(answer_after(0))
    client = client_on(bus)
    await asyncio.gather(client.put("a", b"1"), client.put("b", b"2"))
    assert bus.subscribes == 1
    bus.answer = lambda _request: None
    waiting = asyncio.create_task(client.keys())
    while not client._pending:
        await asyncio.sleep(0)
    await client.close()
    with pytest.raises(UnavailableError, match="the store client of alpha was closed"):
        await waiting
    assert bus.handlers == {}  # unsubscribed
