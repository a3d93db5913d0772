"""The loopback mosquitto runner, against the real broker: config, loopback only, start/stop/restart, TLS."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from device_agent.devkit import mosquitto
from device_agent.devkit.mosquitto import (
    AclRule,
    MosquittoBroker,
    MosquittoError,
    MosquittoNotFoundError,
    TlsListener,
    find_mosquitto,
    mosquitto_version,
    write_acl,
)
from device_agent.devkit.pki import LocalCa


def _listening(pid: int) -> set[tuple[str, int]]:
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker(tmp_path / "broker") as running:
        yield running


def test_not_installed_names_the_install_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr(mosquitto, "FALLBACK_BINARY", tmp_path / "no-mosquitto")
    with pytest.raises(MosquittoNotFoundError, match="scripts/ensure-mosquitto"):
        find_mosquitto()


@pytest.mark.mosquitto
def test_version_is_2_x() -> None:
    assert mosquitto_version() >= (2, 0, 0)


@pytest.mark.mosquitto
async def test_plain_broker_listens_on_loopback_only(broker: MosquittoBroker, tmp_path: Path) -> None:
    assert broker.running
    assert broker.pid is not None
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert _listening(broker.pid) == {("127.0.0.1", broker.port)}
    config = broker.config_path.read_text()
    assert broker.config_path.parent == tmp_path / "broker"
    for line in (
        "per_listener_settings true",
        "persistence false",
        f"listener {broker.port} 127.0.0.1",
        "allow_anonymous true",
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
    ):
        assert line in config.splitlines()
    assert "cafile" not in config
    # The broker runs as us (as root too), so it can read our 0600 keys.
    assert psutil.Process(broker.pid).uids().effective == os.getuid()
    # It accepts MQTT clients; its log is in its directory.
    _, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.close()
    await writer.wait_closed()
    assert "running" in broker.log_text()
    assert broker.log_path.parent == tmp_path / "broker"


@pytest.mark.mosquitto
async def test_stop_reaps_and_restart_keeps_the_port(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "broker")
    await broker.start()
    first_pid, port = broker.pid, broker.port
    assert first_pid is not None
    await broker.restart()
    assert broker.port == port
    assert broker.pid != first_pid
    assert _gone(first_pid)
    second_pid = broker.pid
    assert second_pid is not None
    await broker.stop()
    assert not broker.running
    assert _gone(second_pid)
    await broker.stop()  # idempotent
    with pytest.raises(OSError):  # noqa: PT012 - the connect is the assertion
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()


@pytest.mark.mosquitto
async def test_given_port_is_used_and_a_taken_one_is_reported(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(MosquittoError, match=f"port {taken}"):
            await MosquittoBroker(tmp_path / "taken", port=taken).start()
    port = mosquitto.free_port()
    async with MosquittoBroker(tmp_path / "given", port=port) as broker:
        assert broker.port == port
        assert broker.pid is not None
        assert _listening(broker.pid) == {("127.0.0.1", port)}


@pytest.mark.mosquitto
async def test_bad_configuration_fails_with_the_log_tail_and_leaves_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    tls = TlsListener(ca_file=missing, cert_file=missing, key_file=missing)
    broker = MosquittoBroker(tmp_path / "broker", tls=tls, start_timeout=5)
    with pytest.raises(MosquittoError, match="exited") as caught:
        await broker.start()
    assert "log tail" in str(caught.value)
    assert not broker.running
    assert broker.pid is None


@pytest.mark.mosquitto
async def test_stop_kills_a_broker_that_ignores_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MosquittoBroker(tmp_path / "broker", stop_timeout=0.3)
    await broker.start()
    pid = broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM; SIGKILL still works
    await broker.stop()
    assert _gone(pid)
    assert "mosquitto.kill" in caplog.text


@pytest.mark.mosquitto
async def test_tls_listener_configuration(tmp_path: Path) -> None:
    ca = LocalCa.create(tmp_path / "pki")
    server = ca.issue_server()
    acl = write_acl(tmp_path / "acl.conf")
    tls = TlsListener(
        ca_file=ca.paths.cert, cert_file=server.cert, key_file=server.key, crl_file=ca.paths.crl
    )
    async with MosquittoBroker(tmp_path / "broker", tls=tls, acl_file=acl) as broker:
        assert broker.url.startswith("mqtts://127.0.0.1:")
        lines = broker.config_path.read_text().splitlines()
        for line in (
            "allow_anonymous false",
            f"cafile {ca.paths.cert}",
            f"certfile {server.cert}",
            f"keyfile {server.key}",  # 0600, readable because the broker keeps our user
            "require_certificate true",
            "use_identity_as_username true",
            f"crlfile {ca.paths.crl}",
            f"acl_file {acl}",
        ):
            assert line in lines
        # The listener options follow the listener line (per_listener_settings).
        assert lines.index(f"listener {broker.port} 127.0.0.1") < lines.index("require_certificate true")
        assert broker.pid is not None
        assert _listening(broker.pid) == {("127.0.0.1", broker.port)}


def test_acl_file_contents(tmp_path: Path) -> None:
    path = write_acl(tmp_path / "acl.conf", users={"observer": [AclRule("readwrite", "#")]})
    lines = path.read_text().splitlines()
    assert "pattern write dt/device-agent/%u/#" in lines
    assert "pattern read cmd/device-agent/%u/#" in lines
    assert lines[-2:] == ["user observer", "topic readwrite #"]
    with pytest.raises(MosquittoError, match="line break"):
        write_acl(tmp_path / "bad.conf", patterns=[AclRule("read", "a\ntopic readwrite #")])
    with pytest.raises(MosquittoError, match="line break"):
        write_acl(tmp_path / "bad.conf", users={"x\nuser y": []})


async def test_url_needs_a_port_first(tmp_path: Path) -> None:
    with pytest.raises(MosquittoError, match="start it first"):
        _ = MosquittoBroker(tmp_path / "broker").url
