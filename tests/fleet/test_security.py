"""The fleet's broker against real certificates: each device confined to its own topics, and refused without
a valid certificate. Every negative check sits beside the allowed path it mirrors, so none passes vacuously.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from device_agent.devkit.fleet.mqtt import ConnectionRefusedByBrokerError, FleetMqttClient
from device_agent.devkit.mosquitto import MosquittoBroker
from device_agent.devkit.pki import IssuedIdentity, LocalCa
from tests.fleet.conftest import THING_A, THING_B, SecuredBroker

pytestmark = pytest.mark.mosquitto

QUIET_S = 1.0  # how long "nothing arrives" is watched, after a later message proves delivery works


@asynccontextmanager
async def client(
    secured: SecuredBroker, identity: IssuedIdentity | None, client_id: str
) -> AsyncIterator[FleetMqttClient]:
    peer = FleetMqttClient(
        secured.broker.port, identity, client_id=client_id, ca_file=str(secured.identities.ca.paths.cert)
    )
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


def device(secured: SecuredBroker, thing: str) -> IssuedIdentity:
    return secured.identities.devices[thing]


async def test_a_device_publishes_only_under_its_own_data_topic(secured: SecuredBroker) -> None:
    async with (
        client(secured, device(secured, THING_A), THING_A) as a,
        client(secured, secured.identities.observer, "observer") as observer,
    ):
        assert await observer.subscribe("dt/device-agent/#") < 0x80
        refused = await a.publish(f"dt/device-agent/{THING_B}/telemetry", b'{"forged": true}')
        allowed = await a.publish(f"dt/device-agent/{THING_A}/telemetry", b'{"own": true}')
        assert FleetMqttClient.refused(refused)
        assert not FleetMqttClient.refused(allowed)
        # The allowed message arrives; the forged one, published before it, never did.
        first = await asyncio.wait_for(observer.received.get(), 5.0)
        assert (first.topic, first.payload) == (f"dt/device-agent/{THING_A}/telemetry", b'{"own": true}')
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(observer.received.get(), QUIET_S)


async def test_b_never_receives_what_a_publishes_to_bs_command_topic(secured: SecuredBroker) -> None:
    async with (
        client(secured, device(secured, THING_A), THING_A) as a,
        client(secured, device(secured, THING_B), THING_B) as b,
        client(secured, secured.identities.verifier, "verifier") as verifier,
    ):
        assert await b.subscribe(f"cmd/device-agent/{THING_B}/#") < 0x80
        assert FleetMqttClient.refused(
            await a.publish(f"cmd/device-agent/{THING_B}/verdict", b'{"forged": 1}')
        )
        # The verifier may write there, and B receives that: the subscription works.
        assert not FleetMqttClient.refused(
            await verifier.publish(f"cmd/device-agent/{THING_B}/verdict", b"{}")
        )
        message = await asyncio.wait_for(b.received.get(), 5.0)
        assert message.payload == b"{}"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.received.get(), QUIET_S)


async def test_a_subscribed_to_bs_topics_receives_nothing_of_theirs(secured: SecuredBroker) -> None:
    async with (
        client(secured, device(secured, THING_A), THING_A) as a,
        client(secured, secured.identities.verifier, "verifier") as verifier,
    ):
        for topic_filter in (f"cmd/device-agent/{THING_B}/verdict", f"dt/device-agent/{THING_B}/#", "#"):
            # mosquitto 2.0 acknowledges the filter (0x01) and enforces `read` on every delivery instead.
            assert await a.subscribe(topic_filter) in {0x00, 0x01, 0x87}
        assert await a.subscribe(f"cmd/device-agent/{THING_A}/verdict") < 0x80
        await verifier.publish(f"cmd/device-agent/{THING_B}/verdict", b'{"for": "B"}')
        await verifier.publish(f"cmd/device-agent/{THING_A}/verdict", b'{"for": "A"}')
        received = [await asyncio.wait_for(a.received.get(), 5.0)]
        # A's own verdict arrives (once per matching filter: `#` overlaps); B's, published first, never does.
        with contextlib.suppress(TimeoutError):
            while True:
                received.append(await asyncio.wait_for(a.received.get(), QUIET_S))
        assert {(m.topic, m.payload) for m in received} == {
            (f"cmd/device-agent/{THING_A}/verdict", b'{"for": "A"}')
        }


async def test_a_device_cannot_write_verdicts_nor_outside_its_data_topics(secured: SecuredBroker) -> None:
    async with client(secured, device(secured, THING_A), THING_A) as a:
        assert FleetMqttClient.refused(await a.publish(f"cmd/device-agent/{THING_A}/verdict", b"{}"))
        assert FleetMqttClient.refused(await a.publish("dt/device-agent/elsewhere/telemetry", b"{}"))
        assert not FleetMqttClient.refused(await a.publish(f"dt/device-agent/{THING_A}/bootstrap", b"{}"))


async def test_the_observer_reads_but_cannot_write(secured: SecuredBroker) -> None:
    async with client(secured, secured.identities.observer, "observer") as observer:
        assert FleetMqttClient.refused(await observer.publish(f"dt/device-agent/{THING_A}/telemetry", b"{}"))
        assert FleetMqttClient.refused(await observer.publish(f"cmd/device-agent/{THING_A}/verdict", b"{}"))


async def test_no_client_certificate_is_refused(secured: SecuredBroker) -> None:
    with pytest.raises(ConnectionRefusedByBrokerError):
        async with client(secured, None, "anonymous"):
            pass
    async with client(secured, device(secured, THING_A), THING_A) as a:  # the same broker takes a good one
        assert a.connected


async def test_a_certificate_from_another_ca_is_refused(secured: SecuredBroker, tmp_path: Path) -> None:
    stranger_ca = LocalCa.create(tmp_path / "other-ca")
    stranger = stranger_ca.issue_client(THING_A)  # even with a fleet thing's name
    with pytest.raises(ConnectionRefusedByBrokerError):
        async with client(secured, stranger, THING_A):
            pass
    # The same client, trusting the same broker, connects with the fleet's certificate of that name.
    async with client(secured, device(secured, THING_A), THING_A) as good:
        assert good.connected


async def takes_over(broker: MosquittoBroker, a: IssuedIdentity, b: IssuedIdentity) -> bool:
    """Whether A, connecting with B's client id, pushes B off the broker (B watched for QUIET_S after)."""
    changes: list[bool] = []
    victim = FleetMqttClient(broker.port, b, client_id=b.name, on_connection_change=changes.append)
    await victim.start()
    try:
        assert changes == [True]
        intruder = FleetMqttClient(broker.port, a, client_id=b.name)
        await intruder.start()
        try:
            await asyncio.sleep(QUIET_S)
            return False in changes
        finally:
            await intruder.stop()
    finally:
        await victim.stop()


async def test_a_device_cannot_take_another_devices_client_id(secured: SecuredBroker) -> None:
    """The broker names each client after its certificate (as the IoT policy pins iot:Connect to
    client/<thing name>): A connecting with B's client id does not push B off."""
    a, b = device(secured, THING_A), device(secured, THING_B)
    assert not await takes_over(secured.broker, a, b)
    async with (
        client(secured, a, THING_B) as intruder,
        client(secured, secured.identities.verifier, "verifier") as verifier,
    ):
        # A keeps its own rights under B's id: B's command topic is still out of its reach.
        assert await intruder.subscribe(f"cmd/device-agent/{THING_B}/#") in {0x00, 0x01, 0x87}
        assert await intruder.subscribe(f"cmd/device-agent/{THING_A}/#") < 0x80
        await verifier.publish(f"cmd/device-agent/{THING_B}/verdict", b'{"for": "B"}')
        await verifier.publish(f"cmd/device-agent/{THING_A}/verdict", b'{"for": "A"}')
        message = await asyncio.wait_for(intruder.received.get(), 5.0)
        assert message.topic == f"cmd/device-agent/{THING_A}/verdict"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(intruder.received.get(), QUIET_S)


async def test_without_the_pinned_client_id_a_device_could_push_another_off(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    """The control for the test above: the same broker without `use_username_as_clientid` lets A do it."""
    assert secured.broker.tls is not None
    unpinned = MosquittoBroker(
        tmp_path / "unpinned",
        tls=dataclasses.replace(secured.broker.tls, client_id_from_certificate=False),
        acl_file=secured.layout.acl_file,
    )
    async with unpinned:
        assert await takes_over(unpinned, device(secured, THING_A), device(secured, THING_B))


async def test_a_revoked_certificate_is_refused_after_the_broker_restarts(secured: SecuredBroker) -> None:
    async with client(secured, device(secured, THING_A), THING_A) as before:
        assert before.connected
    secured.identities.ca.revoke(device(secured, THING_A).cert)
    await secured.broker.restart()  # mosquitto reads its crlfile when the listener starts
    with pytest.raises(ConnectionRefusedByBrokerError):
        async with client(secured, device(secured, THING_A), THING_A):
            pass
    async with client(secured, device(secured, THING_B), THING_B) as b:
        assert b.connected
