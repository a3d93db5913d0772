"""MqttBridge against a real mosquitto on loopback; the other side is a raw awscrt MQTT5 client (no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest
from awscrt import mqtt5

from device_agent.devkit.errors import IotBridgeError
from device_agent.devkit.iot_bridge import AckRefusedError, IotMessage, MqttBridge, parse_endpoint
from device_agent.devkit.mosquitto import MosquittoBroker, free_port
from device_agent.devkit.pki import IssuedIdentity
from tests.devkit.mqtt_support import WAIT_S, BridgeFactory, Peer, Pki, eventually

# -- endpoint and argument checks (no broker) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "match"),
    [
        ("http://127.0.0.1:1883", "unsupported endpoint scheme"),
        ("ws://127.0.0.1:80", "unsupported endpoint scheme"),
        ("127.0.0.1:1883", "unsupported endpoint scheme"),
        ("mqtt://example.com:1883", "only allowed to a loopback host"),
        ("mqtt://10.0.0.1:1883", "only allowed to a loopback host"),
        ("mqtt://127.0.0.1:notaport", "invalid endpoint"),
        ("mqtt://127.0.0.1:1883/path", "invalid endpoint"),
    ],
)
def test_endpoints_are_checked(endpoint: str, match: str) -> None:
    with pytest.raises(IotBridgeError, match=match):
        MqttBridge(endpoint=endpoint, client_id="x", on_message=print, on_connection_change=print)


def test_endpoint_defaults_and_loopback_names() -> None:
    assert str(parse_endpoint("mqtt://127.0.0.1")) == "mqtt://127.0.0.1:1883"
    assert str(parse_endpoint("mqtt://localhost:1")) == "mqtt://localhost:1"
    assert str(parse_endpoint("mqtt://[::1]:1884")) == "mqtt://[::1]:1884"
    assert (
        str(parse_endpoint("mqtts://iot.example.com")) == "mqtts://iot.example.com:8883"
    )  # parsed, not contacted


def test_tls_arguments_are_checked(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    with pytest.raises(IotBridgeError, match="both cert_file and key_file"):
        MqttBridge(
            endpoint="mqtts://127.0.0.1:1",
            client_id="x",
            cert_file=pem,
            on_message=print,
            on_connection_change=print,
        )
    with pytest.raises(IotBridgeError, match="plain mqtt://"):
        MqttBridge(
            endpoint="mqtt://127.0.0.1:1",
            client_id="x",
            ca_file=pem,
            on_message=print,
            on_connection_change=print,
        )


async def test_unreadable_tls_files_fail_without_contents(tmp_path: Path) -> None:
    secret = tmp_path / "not-a-key.pem"
    secret.write_text("TOP-SECRET-MATERIAL\n")
    bridge = MqttBridge(
        endpoint=f"mqtts://127.0.0.1:{free_port()}",
        client_id="x",
        cert_file=secret,
        key_file=secret,
        on_message=print,
        on_connection_change=print,
    )
    with pytest.raises(IotBridgeError, match="cannot load TLS credentials") as caught:
        await bridge.start(wait_connected=1)
    assert "TOP-SECRET" not in str(caught.value)
    assert caught.value.__cause__ is not None
    assert not bridge.connected


# -- plain broker -----------------------------------------------------------------------------------------


@pytest.mark.mosquitto
async def test_publish_reaches_another_client_with_properties(
    plain_broker: MosquittoBroker, make_bridge: BridgeFactory, make_peer: Callable[..., Awaitable[Peer]]
) -> None:
    peer = await make_peer(plain_broker.url)
    await peer.subscribe("dt/#")
    bridge, recorder = await make_bridge(plain_broker.url)
    assert bridge.connected
    assert recorder.events == [True]
    message = IotMessage(
        topic="dt/device-agent/thing-a/telemetry",
        payload=b'{"t": 21.5}',
        qos=1,
        user_properties=(("k", "v"), ("k", "v2")),
        message_expiry_interval_seconds=300,
        correlation_data=b"\x00\x01corr",
        response_topic="dt/reply",
        payload_format=1,
        content_type="application/json",
    )
    await bridge.publish(message)
    packet = await peer.next_packet()
    assert packet.topic == message.topic
    assert packet.payload == message.payload
    assert [(p.name, p.value) for p in packet.user_properties] == [("k", "v"), ("k", "v2")]
    assert 0 < packet.message_expiry_interval_sec <= 300
    assert packet.correlation_data_bytes == b"\x00\x01corr"
    assert packet.response_topic == "dt/reply"
    assert int(packet.payload_format_indicator) == 1
    assert packet.content_type == "application/json"
    await bridge.publish(IotMessage(topic="dt/q0", payload=b"zero", qos=0))
    packet = await peer.next_packet()
    assert (packet.topic, packet.payload, int(packet.qos)) == ("dt/q0", b"zero", 0)


@pytest.mark.mosquitto
async def test_subscribe_receives_on_the_loop_with_properties(
    plain_broker: MosquittoBroker, make_bridge: BridgeFactory, make_peer: Callable[..., Awaitable[Peer]]
) -> None:
    bridge, recorder = await make_bridge(plain_broker.url)
    await bridge.subscribe("cmd/device-agent/thing-a/#", 1)
    assert bridge.subscriptions == {"cmd/device-agent/thing-a/#": 1}
    peer = await make_peer(plain_broker.url)
    await peer.publish(
        "cmd/device-agent/thing-a/reboot",
        b"\xffbinary",
        qos=1,
        user_properties=[mqtt5.UserProperty(name="who", value="ops")],
        correlation_data_bytes=b"c-1",
        response_topic="cmd/reply",
        payload_format_indicator=mqtt5.PayloadFormatIndicator.AWS_MQTT5_PFI_BYTES,
        content_type="application/octet-stream",
        message_expiry_interval_sec=60,
    )
    message = await recorder.next_message()
    assert message.topic == "cmd/device-agent/thing-a/reboot"
    assert message.payload == b"\xffbinary"
    assert message.qos == 1
    assert message.retain is False
    assert message.user_properties == (("who", "ops"),)
    assert message.correlation_data == b"c-1"
    assert message.response_topic == "cmd/reply"
    assert message.payload_format == 0
    assert message.content_type == "application/octet-stream"
    assert message.message_expiry_interval_seconds is not None
    assert 0 < message.message_expiry_interval_seconds <= 60
    # Retained messages keep their flag; callbacks all ran on the loop's thread.
    await peer.publish("cmd/device-agent/thing-a/state", b"r", qos=1, retain=True)
    assert (await recorder.next_message()).topic == "cmd/device-agent/thing-a/state"
    await bridge.subscribe("cmd/device-agent/thing-a/state", 0)  # a new subscription gets the retained copy
    retained = await recorder.next_message()
    assert retained.retain is True
    assert retained.qos == 0
    assert recorder.threads == {threading.get_ident()}


@pytest.mark.mosquitto
async def test_unsubscribe_stops_delivery(
    plain_broker: MosquittoBroker, make_bridge: BridgeFactory, make_peer: Callable[..., Awaitable[Peer]]
) -> None:
    bridge, recorder = await make_bridge(plain_broker.url)
    await bridge.subscribe("a/#", 1)
    await bridge.subscribe("b/#", 1)
    await bridge.unsubscribe("a/#")
    await bridge.unsubscribe("never/subscribed")  # nothing to do
    assert bridge.subscriptions == {"b/#": 1}
    peer = await make_peer(plain_broker.url)
    await peer.publish("a/1", b"dropped")
    await peer.publish("b/1", b"marker")  # same publisher, so ordered after a/1
    assert (await recorder.next_message()).topic == "b/1"
    assert recorder.messages.empty()


@pytest.mark.mosquitto
async def test_qos1_publish_waits_for_the_puback(
    plain_broker: MosquittoBroker, make_bridge: BridgeFactory, make_peer: Callable[..., Awaitable[Peer]]
) -> None:
    peer = await make_peer(plain_broker.url)
    await peer.subscribe("dt/#")
    bridge, _ = await make_bridge(plain_broker.url)
    pid = plain_broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the TCP link stays up, but nobody answers
    try:
        started = time.monotonic()
        with pytest.raises(IotBridgeError, match=r"no acknowledgement within 0\.5s"):
            await bridge.publish(IotMessage(topic="dt/held", payload=b"1", qos=1), timeout=0.5)
        assert time.monotonic() - started >= 0.5
        assert bridge.connected
    finally:
        os.kill(pid, signal.SIGCONT)
    # QoS 1 is at least once: the broker, once back, still delivers what it was sent.
    assert (await peer.next_packet()).topic == "dt/held"
    await bridge.publish(IotMessage(topic="dt/next", payload=b"2", qos=1), timeout=WAIT_S)
    assert (await peer.next_packet()).topic == "dt/next"


@pytest.mark.mosquitto
async def test_offline_and_back_online(
    plain_broker: MosquittoBroker, make_bridge: BridgeFactory, make_peer: Callable[..., Awaitable[Peer]]
) -> None:
    bridge, recorder = await make_bridge(plain_broker.url)
    await bridge.subscribe("cmd/#", 1)
    await bridge.set_offline(True)
    assert not bridge.connected
    assert recorder.events == [True, False]
    with pytest.raises(IotBridgeError, match="not connected"):
        await bridge.publish(IotMessage(topic="dt/x", payload=b"", qos=1))
    with pytest.raises(IotBridgeError, match="not connected"):
        await bridge.publish(IotMessage(topic="dt/x", payload=b"", qos=0))
    await bridge.subscribe("other/#", 0)  # remembered while offline
    await bridge.set_offline(False)
    await recorder.wait_events([True, False, True])
    peer = await make_peer(plain_broker.url)
    await peer.publish("cmd/1", b"a")
    await peer.publish("other/1", b"b")
    assert {(await recorder.next_message()).topic for _ in range(2)} == {"cmd/1", "other/1"}


@pytest.mark.mosquitto
async def test_broker_restart_reconnects_and_restores_subscriptions(
    plain_broker: MosquittoBroker, make_bridge: BridgeFactory, make_peer: Callable[..., Awaitable[Peer]]
) -> None:
    bridge, recorder = await make_bridge(plain_broker.url)
    await bridge.subscribe("cmd/device-agent/thing-a/#", 1)
    started = time.monotonic()
    await plain_broker.restart()  # no persistence: the broker forgets every subscription
    await recorder.wait_events([True, False, True])
    reconnect_s = time.monotonic() - started
    print(f"reconnected {reconnect_s:.3f}s after the broker restart began")
    assert reconnect_s < 3.0  # first retry after 0.25 s with full jitter
    peer = await make_peer(plain_broker.url)
    await peer.publish("cmd/device-agent/thing-a/after-restart", b"hello again")
    message = await recorder.next_message()
    assert (message.topic, message.payload) == ("cmd/device-agent/thing-a/after-restart", b"hello again")


@pytest.mark.mosquitto
async def test_start_times_out_with_the_cause_chained(make_bridge: BridgeFactory) -> None:
    endpoint = f"mqtt://127.0.0.1:{free_port()}"  # nobody listens
    started = time.monotonic()
    with pytest.raises(IotBridgeError, match=r"not connected to .* within 1.0s") as caught:
        await make_bridge(endpoint, wait_connected=1.0)
    assert time.monotonic() - started < 3
    assert caught.value.__cause__ is not None
    assert "CONNECTION_REFUSED" in str(caught.value)


@pytest.mark.mosquitto
async def test_start_without_waiting_connects_in_the_background(
    tmp_path: Path, make_bridge: BridgeFactory
) -> None:
    port = free_port()
    bridge, recorder = await make_bridge(f"mqtt://127.0.0.1:{port}", wait_connected=None)
    assert not bridge.connected
    async with MosquittoBroker(tmp_path / "late", port=port):
        await recorder.wait_events([True])
        await bridge.stop()
        assert recorder.events == [True, False]


@pytest.mark.mosquitto
async def test_a_failing_callback_does_not_break_the_bridge(
    plain_broker: MosquittoBroker, make_peer: Callable[..., Awaitable[Peer]], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def on_message(message: IotMessage) -> None:
        seen.append(message.topic)
        if message.topic == "t/boom":
            raise RuntimeError("component bug")

    bridge = MqttBridge(
        endpoint=plain_broker.url, client_id="b", on_message=on_message, on_connection_change=lambda _c: None
    )
    await bridge.start()
    try:
        await bridge.subscribe("t/#", 1)
        peer = await make_peer(plain_broker.url)
        await peer.publish("t/boom", b"")
        await peer.publish("t/fine", b"")
        await eventually(lambda: seen == ["t/boom", "t/fine"], "both messages")
        assert "iot_bridge.callback_failed" in caplog.text
    finally:
        await bridge.stop()


@pytest.mark.mosquitto
async def test_stop_reports_disconnected_and_is_idempotent(
    plain_broker: MosquittoBroker, make_bridge: BridgeFactory
) -> None:
    bridge, recorder = await make_bridge(plain_broker.url)
    await bridge.stop()
    await bridge.stop()
    assert recorder.events == [True, False]
    assert not bridge.connected
    with pytest.raises(IotBridgeError, match="not started"):
        await bridge.publish(IotMessage(topic="x", payload=b"", qos=0))
    with pytest.raises(IotBridgeError, match="not started"):
        await bridge.set_offline(True)
    non_daemon = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    assert non_daemon == []
    # Started again after a stop, it works like new.
    await bridge.start()
    assert recorder.events == [True, False, True]


@pytest.mark.mosquitto
def test_a_process_using_the_bridge_exits_promptly(tmp_path: Path) -> None:
    """Broker and bridge started, used and stopped: the interpreter exits at once and leaves no broker."""
    script = textwrap.dedent(
        """
        import asyncio, sys, threading
        from pathlib import Path
        from device_agent.devkit.iot_bridge import IotMessage, MqttBridge
        from device_agent.devkit.mosquitto import MosquittoBroker

        async def main():
            broker = MosquittoBroker(Path(sys.argv[1]))
            await broker.start()
            print("pid", broker.pid, flush=True)
            bridge = MqttBridge(endpoint=broker.url, client_id="exit-check",
                                on_message=lambda m: None, on_connection_change=lambda c: None)
            await bridge.start()
            await bridge.subscribe("x/#", 1)
            await bridge.publish(IotMessage(topic="x/1", payload=b"1", qos=1))
            await bridge.stop()
            await broker.stop()
            print("threads", [t.name for t in threading.enumerate() if not t.daemon], flush=True)

        asyncio.run(main())
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, str(tmp_path / "broker")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "threads ['MainThread']" in done.stdout
    pid = int(done.stdout.split("pid ", 1)[1].split()[0])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert elapsed < 10, f"exit took {elapsed:.1f}s"


# -- TLS broker: identities, revocation, ACL -----------------------------------------------------------


@pytest.mark.mosquitto
async def test_mutual_tls_connects_with_a_device_certificate(
    tls_broker: MosquittoBroker,
    pki: Pki,
    make_bridge: BridgeFactory,
    make_peer: Callable[..., Awaitable[Peer]],
) -> None:
    observer = await make_peer(tls_broker.url, "observer", pki.observer)
    await observer.subscribe("dt/#")
    bridge, _ = await make_bridge(tls_broker.url, identity=pki.thing_a, client_id="thing-a")
    assert bridge.connected
    await bridge.publish(IotMessage(topic="dt/device-agent/thing-a/hello", payload=b"tls", qos=1))
    packet = await observer.next_packet()
    assert (packet.topic, packet.payload) == ("dt/device-agent/thing-a/hello", b"tls")
    # The broker took the certificate's CN as the username.
    assert "u'thing-a'" in tls_broker.log_text()


@pytest.mark.mosquitto
async def test_a_certificate_from_another_ca_is_refused(
    tls_broker: MosquittoBroker, pki: Pki, make_bridge: BridgeFactory
) -> None:
    # The stranger trusts our broker, but its own certificate comes from another CA.
    stranger = IssuedIdentity(
        name="thing-a", cert=pki.stranger.cert, key=pki.stranger.key, ca_cert=pki.ca.paths.cert
    )
    with pytest.raises(IotBridgeError, match="not connected"):
        await make_bridge(tls_broker.url, identity=stranger, client_id="thing-a", wait_connected=1.5)
    assert "certificate verify failed" in tls_broker.log_text()
    # And a bridge that does not trust the broker's CA refuses the broker. (s2n then holds the socket for
    # 10-30 s before closing it, so the bridge's stop gives up waiting for awscrt's "stopped" after 0.5 s.)
    distrustful = IssuedIdentity(
        name="thing-a", cert=pki.thing_a.cert, key=pki.thing_a.key, ca_cert=pki.stranger.ca_cert
    )
    with pytest.raises(IotBridgeError, match="not connected"):
        await make_bridge(
            tls_broker.url, identity=distrustful, client_id="thing-a", wait_connected=1.5, stop_timeout_s=0.5
        )
    # The same broker accepts a proper identity.
    bridge, _ = await make_bridge(tls_broker.url, identity=pki.thing_a, client_id="thing-a")
    assert bridge.connected


@pytest.mark.mosquitto
async def test_a_revoked_certificate_is_refused(
    tls_broker: MosquittoBroker, pki: Pki, make_bridge: BridgeFactory
) -> None:
    bridge_b, recorder_b = await make_bridge(tls_broker.url, identity=pki.thing_b, client_id="thing-b")
    assert bridge_b.connected
    await bridge_b.stop()
    pki.ca.revoke(pki.thing_b.cert)
    log_before = len(tls_broker.log_text())
    await tls_broker.restart()  # mosquitto reads the CRL when it starts
    with pytest.raises(IotBridgeError, match="not connected"):
        await make_bridge(tls_broker.url, identity=pki.thing_b, client_id="thing-b", wait_connected=1.5)
    # The same certificate was accepted before; only the CRL changed. (2.0.11 logs no finer reason.)
    assert "certificate verify failed" in tls_broker.log_text()[log_before:]
    bridge_a, _ = await make_bridge(tls_broker.url, identity=pki.thing_a, client_id="thing-a")
    assert bridge_a.connected
    assert recorder_b.events == [True, False]


@pytest.mark.mosquitto
async def test_acl_confines_a_device_to_its_own_topics(
    tls_broker: MosquittoBroker,
    pki: Pki,
    make_bridge: BridgeFactory,
    make_peer: Callable[..., Awaitable[Peer]],
) -> None:
    observer = await make_peer(tls_broker.url, "observer", pki.observer)
    await observer.subscribe("dt/#")
    bridge, recorder = await make_bridge(tls_broker.url, identity=pki.thing_a, client_id="thing-a")
    # Publishing under another thing's prefix: mosquitto 2.x answers the QoS 1 PUBLISH with NOT_AUTHORIZED.
    with pytest.raises(AckRefusedError, match="NOT_AUTHORIZED") as caught:
        await bridge.publish(IotMessage(topic="dt/device-agent/thing-b/spoof", payload=b"x", qos=1))
    assert caught.value.reason_code == 135
    await bridge.publish(IotMessage(topic="dt/device-agent/thing-a/ok", payload=b"y", qos=1))
    assert (await observer.next_packet()).topic == "dt/device-agent/thing-a/ok"  # the spoof never arrived
    assert bridge.connected  # a refused publish does not cost the connection
    # Subscribing: mosquitto 2.0 grants any SUBSCRIBE but delivers only what "read" allows.
    await bridge.subscribe("cmd/device-agent/+/#", 1)
    await observer.publish("cmd/device-agent/thing-b/x", b"not for a")
    await observer.publish("cmd/device-agent/thing-a/x", b"for a")
    message = await recorder.next_message()
    assert (message.topic, message.payload) == ("cmd/device-agent/thing-a/x", b"for a")
    assert recorder.messages.empty()


@pytest.mark.mosquitto
async def test_tls_broker_restart_reconnects_with_the_same_identity(
    tls_broker: MosquittoBroker,
    pki: Pki,
    make_bridge: BridgeFactory,
    make_peer: Callable[..., Awaitable[Peer]],
) -> None:
    bridge, recorder = await make_bridge(tls_broker.url, identity=pki.thing_a, client_id="thing-a")
    await bridge.subscribe("cmd/device-agent/thing-a/#", 1)
    started = time.monotonic()
    await tls_broker.restart()
    await recorder.wait_events([True, False, True])
    print(f"TLS reconnect {time.monotonic() - started:.3f}s after the broker restart began")
    observer = await make_peer(tls_broker.url, "observer", pki.observer)
    await observer.publish("cmd/device-agent/thing-a/go", b"1")
    assert (await recorder.next_message()).topic == "cmd/device-agent/thing-a/go"
