"""The virtual device with IoT Core bridged to a real mosquitto on loopback: plain, and mutual TLS.

A component publishes through the nucleus and an independent MQTT client sees it at the broker; the client
publishes a command and the component receives it; the component's connection-status stream follows the
real connection when the broker restarts.
"""

from __future__ import annotations

import json

import pytest

from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.mosquitto import AclRule, MosquittoBroker, TlsListener, write_acl
from device_agent.devkit.nucleus import IotBridgeSettings
from tests.conftest import probe_events, probe_results
from tests.devkit.mqtt_support import Pki
from tests.devkit.probe import write_probe

pytestmark = pytest.mark.mosquitto

MQTT = "aws.greengrass.ipc.mqttproxy"


def bridged_probe(tmp_path, name: str) -> None:
    write_probe(
        tmp_path,
        name,
        [
            {"op": "subscribe_to_connection_status"},
            {"op": "subscribe_to_iot_core", "args": {"topic": "cmd/device-agent/thing-a/#"}, "key": "cmd"},
            {
                "op": "publish_to_iot_core",
                "args": {"topic": "dt/device-agent/thing-a/hello", "payload": '{"hi": 1}'},
            },
        ],
        access_control={
            MQTT: {
                "p": {
                    "operations": ["aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"],
                    "resources": ["dt/device-agent/thing-a/*", "cmd/device-agent/thing-a/#"],
                }
            }
        },
    )


async def exercise(device, peer, broker: MosquittoBroker, name: str) -> None:
    packet = await peer.next_packet(timeout=30)
    assert packet.topic == "dt/device-agent/thing-a/hello"
    assert json.loads(packet.payload) == {"hi": 1}
    results = await probe_results(device, name)
    assert all(r["ok"] for r in results), results
    await peer.publish("cmd/device-agent/thing-a/reboot", b'{"now": true}')
    for _ in range(50):
        events = await probe_events(device, name)
        if events.get("cmd"):
            break
    assert events["cmd"] == [
        {"kind": "iot", "topic": "cmd/device-agent/thing-a/reboot", "payload": '{"now": true}'}
    ]
    await broker.restart()
    for _ in range(100):
        events = await probe_events(device, name)
        statuses = [e["status"] for e in events.get("status", [])]
        if statuses[-2:] == ["DISCONNECTED", "CONNECTED"]:
            break
    assert statuses[0] == "CONNECTED"
    assert statuses[-2:] == ["DISCONNECTED", "CONNECTED"]
    # Subscriptions survive the restart: a command after it still arrives.
    await peer.publish("cmd/device-agent/thing-a/again", b"{}")
    for _ in range(50):
        events = await probe_events(device, name)
        if len(events["cmd"]) == 2:
            break
    assert events["cmd"][-1]["topic"] == "cmd/device-agent/thing-a/again"


async def test_a_message_the_broker_refuses_is_dropped_not_retried_forever(
    tmp_path, start_device, device_broker, make_peer, pki: Pki
):
    # thing-a may publish only under dt/device-agent/thing-a/ (and probe/): another thing's topic is refused
    # by the broker's ACL. The nucleus drops that message and the next one still goes through.
    peer = await make_peer(device_broker.url, client_id="observer", identity=pki.observer)
    await peer.subscribe("dt/#")
    write_probe(
        tmp_path,
        "com.test.Nosy",
        [
            {"op": "publish_to_iot_core", "args": {"topic": "dt/device-agent/thing-b/spoof"}},
            {"op": "publish_to_iot_core", "args": {"topic": "dt/device-agent/thing-a/ok"}},
        ],
        access_control={
            MQTT: {"p": {"operations": ["aws.greengrass#PublishToIoTCore"], "resources": ["dt/*"]}}
        },
    )
    bridge = IotBridgeSettings(
        endpoint=device_broker.url,
        client_id="thing-a",
        ca_file=pki.thing_a.ca_cert,
        cert_file=pki.thing_a.cert,
        key_file=pki.thing_a.key,
    )
    async with start_device(tmp_path, thing_name="thing-a", iot_bridge=bridge) as device:
        results = await probe_results(device, "com.test.Nosy")
        assert all(r["ok"] for r in results)  # accepted into the spool, as the nucleus accepts them
        packet = await peer.next_packet(timeout=30)
        assert packet.topic == "dt/device-agent/thing-a/ok"
        assert device.nucleus.iot.refused == 1
        assert [r.topic for r in device.published("dt/#")] == ["dt/device-agent/thing-a/ok"]


async def test_bridged_to_plain_mosquitto(tmp_path, start_device, plain_broker, make_peer):
    peer = await make_peer(plain_broker.url, client_id="cloud")
    await peer.subscribe("dt/#")
    bridged_probe(tmp_path, "com.test.Bridged")
    bridge = IotBridgeSettings(endpoint=plain_broker.url, client_id="thing-a")
    async with start_device(tmp_path, thing_name="thing-a", iot_bridge=bridge) as device:
        await device.wait_for_state("com.test.Bridged", ComponentState.RUNNING)
        await exercise(device, peer, plain_broker, "com.test.Bridged")


@pytest.fixture
async def device_broker(tmp_path, pki: Pki):
    """TLS with client certificates and the fleet ACL; the probe may also report on probe/#."""
    acl = write_acl(
        tmp_path / "acl.conf",
        users={"observer": [AclRule("readwrite", "#")], "thing-a": [AclRule("write", "probe/#")]},
    )
    tls = TlsListener(ca_file=pki.ca.paths.cert, cert_file=pki.server.cert, key_file=pki.server.key)
    async with MosquittoBroker(tmp_path / "tls-broker", tls=tls, acl_file=acl) as broker:
        yield broker


async def test_bridged_to_mosquitto_with_mutual_tls(
    tmp_path, start_device, device_broker, make_peer, pki: Pki
):
    tls_broker = device_broker
    peer = await make_peer(tls_broker.url, client_id="observer", identity=pki.observer)
    await peer.subscribe("dt/#")
    bridged_probe(tmp_path, "com.test.Secure")
    bridge = IotBridgeSettings(
        endpoint=tls_broker.url,
        client_id="thing-a",
        ca_file=pki.thing_a.ca_cert,
        cert_file=pki.thing_a.cert,
        key_file=pki.thing_a.key,
    )
    async with start_device(tmp_path, thing_name="thing-a", iot_bridge=bridge) as device:
        await device.wait_for_state("com.test.Secure", ComponentState.RUNNING)
        await exercise(device, peer, tls_broker, "com.test.Secure")
