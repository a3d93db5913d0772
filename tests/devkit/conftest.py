"""Fixtures for tests that need a real mosquitto broker, a test PKI, bridges and MQTT peers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from device_agent.devkit.iot_bridge import MqttBridge
from device_agent.devkit.mosquitto import AclRule, MosquittoBroker, TlsListener, write_acl
from device_agent.devkit.pki import IssuedIdentity, LocalCa
from tests.devkit.mqtt_support import WAIT_S, BridgeFactory, Peer, Pki, Recorder


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = LocalCa.create(tmp_path / "pki")
    stranger = LocalCa.create(tmp_path / "other-pki").issue_client("thing-a")  # same name, wrong CA
    return Pki(
        ca=ca,
        server=ca.issue_server(),
        thing_a=ca.issue_client("thing-a"),
        thing_b=ca.issue_client("thing-b"),
        observer=ca.issue_client("observer"),
        stranger=stranger,
    )


@pytest.fixture
async def plain_broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture
async def tls_broker(tmp_path: Path, pki: Pki) -> AsyncIterator[MosquittoBroker]:
    acl = write_acl(tmp_path / "acl.conf", users={"observer": [AclRule("readwrite", "#")]})
    tls = TlsListener(
        ca_file=pki.ca.paths.cert,
        cert_file=pki.server.cert,
        key_file=pki.server.key,
        crl_file=pki.ca.paths.crl,
    )
    async with MosquittoBroker(tmp_path / "tls-broker", tls=tls, acl_file=acl) as broker:
        yield broker


@pytest.fixture
async def make_bridge() -> AsyncIterator[BridgeFactory]:
    """Start bridges; every one is stopped at teardown, even when the test failed."""
    bridges: list[MqttBridge] = []

    async def make(
        endpoint: str,
        *,
        identity: IssuedIdentity | None = None,
        client_id: str = "bridge",
        wait_connected: float | None = WAIT_S,
        stop_timeout_s: float = 5.0,
    ) -> tuple[MqttBridge, Recorder]:
        recorder = Recorder()
        bridge = MqttBridge(
            endpoint=endpoint,
            client_id=client_id,
            ca_file=identity.ca_cert if identity else None,
            cert_file=identity.cert if identity else None,
            key_file=identity.key if identity else None,
            on_message=recorder.on_message,
            on_connection_change=recorder.on_connection_change,
            stop_timeout_s=stop_timeout_s,
        )
        bridges.append(bridge)
        await bridge.start(wait_connected=wait_connected)
        return bridge, recorder

    yield make
    for bridge in bridges:
        await bridge.stop()


@pytest.fixture
async def make_peer() -> AsyncIterator[Callable[..., Awaitable[Peer]]]:
    peers: list[Peer] = []

    async def make(endpoint: str, client_id: str = "peer", identity: IssuedIdentity | None = None) -> Peer:
        peer = Peer(endpoint, client_id, identity)
        peers.append(peer)
        await peer.start()
        return peer

    yield make
    for peer in peers:
        await peer.stop()
