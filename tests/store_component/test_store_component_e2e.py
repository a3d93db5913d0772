"""The store component end to end: built as it ships, run on the local nucleus, used by real clients.

Two client components each use their own namespace; one that reaches for another's namespace is refused
by the nucleus (its recipe does not grant the topic); quotas, overflow and time-to-live behave as the
store's configuration says; the store survives restarts of itself and of its clients; bad configuration
fails the deployment and leaves the last good one in force.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from device_agent import store_protocol as protocol
from device_agent.devkit.lifecycle import ComponentState
from tests.conftest import component_pid
from tests.store_component.client_probe import write_client
from tests.store_component.conftest import STORE, ClientHandle

pytestmark = pytest.mark.slow

ALPHA, BETA = "com.example.AlphaClient", "com.example.BetaClient"
# Namespaces for the tests, merged into the store's configuration by the deployment, as an operator would.
NAMESPACES = {
    "alpha": {"maxRecords": 3, "overflow": "reject"},
    "beta": {"maxRecords": 4, "overflow": "drop_oldest"},
    "short": {"ttlSeconds": 5.0},  # long enough for a put and a get on a busy machine
    "durable": {},
}
OVERWRITE = protocol.encode_value(b"overwritten by beta")
STORE_CONFIG = {"namespaces": NAMESPACES, "statsIntervalSeconds": 1.0, "maintenanceIntervalSeconds": 1.0}


def store_update(**extra: Any) -> dict[str, dict[str, Any]]:
    return {STORE: {"MERGE": {**STORE_CONFIG, **extra}}}


@pytest.fixture
def two_clients(store_base: Path) -> Path:
    write_client(store_base, ALPHA, "alpha")
    write_client(store_base, BETA, "beta")
    return store_base


async def test_each_client_uses_its_own_namespace_and_the_nucleus_refuses_the_other(
    start_device, two_clients: Path, client: Callable[..., ClientHandle]
):
    async with start_device(two_clients, update_config=store_update()) as device:
        alpha, beta = client(device, ALPHA), client(device, BETA)
        await alpha.ready()
        await beta.ready()
        assert await alpha.ok("put", key="greeting", value="hello from alpha") is None
        assert await beta.ok("put", key="greeting", value="hello from beta") is None
        assert await alpha.ok("get", key="greeting") == "hello from alpha"
        assert await beta.ok("get", key="greeting") == "hello from beta"
        assert await alpha.ok("keys") == ["greeting"]

        # Beta reaches for alpha's namespace: the nucleus refuses the subscription to alpha's answers.
        stolen = await beta.do("get", namespace="alpha", key="greeting")
        assert stolen["ok"] is False
        assert stolen["error"] == "NotAuthorizedError"
        assert "hello from alpha" not in json.dumps(
            device.published(f"storeclient/{BETA}/result")[-1].payload.decode()
        )

        # Beta writes raw requests of its own onto alpha's request topic (and the whole-store one): the
        # nucleus refuses each publish, so the store never hears them.
        foreign = [
            ("alpha", protocol.request_document("beta-1", protocol.Op.PUT, key="greeting", value=OVERWRITE)),
            ("alpha", protocol.request_document("beta-2", protocol.Op.WIPE)),
            ("alpha", protocol.request_document("beta-3", protocol.Op.DELETE, key="greeting")),
            (protocol.ADMIN_NAMESPACE, protocol.request_document("beta-4", protocol.Op.WIPE)),
        ]
        for namespace, document in foreign:
            topic = protocol.request_topic(namespace)
            refused = await beta.do("publish_raw", topic=topic, document=document)
            assert (refused["ok"], refused["error"], refused["cause"]) == (
                False,
                "NotAuthorizedError",
                "UnauthorizedError",
            ), refused
        assert not [
            r
            for r in device.local_messages("device-agent/store/+/request")
            if r.publisher == BETA and r.topic != protocol.request_topic("beta")
        ]
        # The same raw path to beta's own namespace is served: the refusals were the nucleus's, for the topic.
        own = protocol.request_document("beta-5", protocol.Op.PUT, key="raw", value=OVERWRITE)
        assert await beta.ok("publish_raw", topic=protocol.request_topic("beta"), document=own) is None
        deadline = time.monotonic() + 10
        while not (raw := await beta.do("get", key="raw"))["ok"]:
            assert time.monotonic() < deadline, raw
            await asyncio.sleep(0.1)
        assert raw["result"] == "overwritten by beta"
        # Alpha's data is as alpha left it.
        assert await alpha.ok("get", key="greeting") == "hello from alpha"
        assert await alpha.ok("keys") == ["greeting"]
        assert (await alpha.ok("stats"))["records"] == 1

        missing = await alpha.do("get", key="nothing-here")
        assert (missing["ok"], missing["error"]) == (False, "NotFoundError")
        assert await alpha.ok("delete", key="greeting") is True
        assert await alpha.ok("keys") == []

        # Nothing the clients stored appears in plain text in the store's files.
        store_dir = device.root / "work" / STORE / "store"
        blobs = b"".join(p.read_bytes() for p in store_dir.iterdir() if p.is_file())
        assert b"hello from" not in blobs
        assert {oct(p.stat().st_mode & 0o777) for p in store_dir.iterdir() if p.is_file()} <= {"0o600"}
        assert oct(store_dir.stat().st_mode & 0o777) == "0o700"


async def test_quota_reject_and_drop_oldest_as_configured(
    start_device, two_clients: Path, client: Callable[..., ClientHandle]
):
    async with start_device(two_clients, update_config=store_update()) as device:
        alpha, beta = client(device, ALPHA), client(device, BETA)
        await alpha.ready()
        await beta.ready()
        for n in range(3):
            await alpha.ok("put", key=f"k{n}", value=f"v{n}")
        refused = await alpha.do("put", key="k3", value="v3")
        assert (refused["ok"], refused["error"]) == (False, "QuotaExceededError")
        assert await alpha.ok("keys") == ["k0", "k1", "k2"]  # the refused record changed nothing

        seqs = await beta.ok("append", values=[f"s{n}" for n in range(6)])
        assert seqs == sorted(seqs)
        entries = await beta.ok("read", maxRecords=10)
        assert [value for _, value in entries] == ["s2", "s3", "s4", "s5"]  # the two oldest were dropped
        stats = await beta.ok("stats")
        assert (stats["records"], stats["dropped_records"], stats["max_records"]) == (4, 2, 4)
        assert stats["overflow"] == "drop_oldest"
        assert await beta.ok("ack", upTo=entries[1][0]) == 2
        assert [value for _, value in await beta.ok("read")] == ["s4", "s5"]

        # The drops were reported as an event, and stats reach the stats topic.
        await device.wait_for_local("device-agent/store/stats")
        events = [r.message for r in device.local_messages("device-agent/events")]
        assert any(
            e["event"] == "store.records_dropped" and e["details"]["namespace"] == "beta" for e in events
        )


async def test_time_to_live_from_configuration_and_per_record(
    start_device, store_base: Path, client: Callable[..., ClientHandle]
):
    write_client(store_base, ALPHA, "short")
    async with start_device(store_base, update_config=store_update()) as device:
        alpha = client(device, ALPHA)
        await alpha.ready()
        await alpha.ok("put", key="own-ttl", value="kept", ttl=600)
        await alpha.ok("put", key="default-ttl", value="gone soon")  # the namespace's 5 s
        assert await alpha.ok("get", key="default-ttl") == "gone soon"
        deadline = time.monotonic() + 15
        while (answer := await alpha.do("get", key="default-ttl"))["ok"]:
            assert time.monotonic() < deadline, "the record outlived its time-to-live"
            await asyncio.sleep(0.2)
        assert answer["error"] == "NotFoundError"
        assert await alpha.ok("get", key="own-ttl") == "kept"
        assert await alpha.ok("keys") == ["own-ttl"]


async def test_undeclared_namespace_is_refused_by_the_store(
    start_device, store_base: Path, client: Callable[..., ClientHandle]
):
    write_client(store_base, ALPHA, "undeclared")
    async with start_device(store_base, update_config=store_update()) as device:
        alpha = client(device, ALPHA)
        await alpha.ready()
        answer = await alpha.do("put", key="k", value="v")
        assert (answer["ok"], answer["error"]) == (False, "InvalidInputError")
        assert "not in this store's configuration" in answer["message"]


async def test_store_and_client_restarts_lose_nothing(
    start_device, two_clients: Path, client: Callable[..., ClientHandle]
):
    async with start_device(two_clients, update_config=store_update()) as device:
        alpha = client(device, ALPHA)
        await alpha.ready()
        await alpha.ok("put", key="kept", value="across restarts")
        await device.nucleus.lifecycle.restart(STORE)
        await device.wait_for_state(STORE, ComponentState.RUNNING)
        deadline = time.monotonic() + 30
        while not (answer := await alpha.do("get", key="kept", timeout=1.0))["ok"]:
            # While the store restarts, the client gets a clear "unavailable", never a hang.
            assert answer["error"] == "UnavailableError", answer
            assert time.monotonic() < deadline
        assert answer["result"] == "across restarts"

        await device.nucleus.lifecycle.restart(ALPHA)
        await alpha.ready(starts=2)
        assert await alpha.ok("get", key="kept") == "across restarts"


async def test_client_gets_unavailable_when_the_store_is_not_running(
    start_device, store_base: Path, client: Callable[..., ClientHandle]
):
    write_client(store_base, ALPHA, "alpha")
    async with start_device(store_base, merge=[ALPHA]) as device:  # the store is not deployed
        alpha = client(device, ALPHA)
        await alpha.ready()
        started = time.monotonic()
        answer = await alpha.do("put", key="k", value="v", timeout=0.5)
        assert (answer["ok"], answer["error"]) == (False, "UnavailableError")
        assert "is com.deviceagent.EncryptedStore running?" in answer["message"]
        assert time.monotonic() - started < 10


async def test_invalid_configuration_fails_the_deployment_and_the_last_good_stays(
    start_device, two_clients: Path, client: Callable[..., ClientHandle]
):
    async with start_device(two_clients, update_config=store_update()) as device:
        alpha = client(device, ALPHA)
        await alpha.ready()
        await alpha.ok("put", key="k0", value="v")  # the store is serving, so it has subscribed to validation
        result = await device.deploy(
            merge={STORE: ""},
            update_config={STORE: {"MERGE": {"namespaces": {"alpha": {"maxRecords": -1}}}}},
        )
        assert not result.succeeded
        assert "namespaces.alpha.maxRecords" in result.reason
        for n in (1, 2):
            await alpha.ok("put", key=f"k{n}", value="v")
        answer = await alpha.do("put", key="k3", value="v")
        assert answer["error"] == "QuotaExceededError"  # still the good limit of 3


async def test_wipe_crypto_erases_the_namespace_only(
    start_device, two_clients: Path, client: Callable[..., ClientHandle]
):
    async with start_device(two_clients, update_config=store_update()) as device:
        alpha, beta = client(device, ALPHA), client(device, BETA)
        await alpha.ready()
        await beta.ready()
        await alpha.ok("put", key="a", value="alpha data")
        await beta.ok("append", values=["beta data"])
        await alpha.ok("wipe")
        assert await alpha.ok("keys") == []
        assert [v for _, v in await beta.ok("read")] == ["beta data"]
        events = [r.message for r in device.local_messages("device-agent/events")]
        assert any(e["event"] == "store.erased" and e["details"]["namespace"] == "alpha" for e in events)


SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:device-agent/store-kek-AbCdEf"
SECRET_VALUE = "kek-material-for-the-test-0123456789abcdef"


def secret_grant() -> dict[str, Any]:
    return {
        "aws.greengrass.SecretManager": {
            f"{STORE}:secrets:1": {
                "policyDescription": "Read the store's key-encryption secret.",
                "operations": ["aws.greengrass#GetSecretValue"],
                "resources": [SECRET_ARN],
            }
        }
    }


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.json"
    path.write_text(
        json.dumps({"secrets": [{"arn": SECRET_ARN, "name": "store-kek", "secretString": SECRET_VALUE}]})
    )
    return path


async def test_the_key_can_come_from_a_greengrass_secret(
    start_device, store_base: Path, secrets_file: Path, client: Callable[..., ClientHandle]
):
    write_client(store_base, ALPHA, "alpha")
    update = store_update(keySource="secret", secretId=SECRET_ARN, accessControl=secret_grant())
    async with start_device(store_base, update_config=update, secrets_file=secrets_file) as device:
        alpha = client(device, ALPHA)
        await alpha.ready()
        await alpha.ok("put", key="k", value="sealed under a key from the secret")
        assert await alpha.ok("get", key="k") == "sealed under a key from the secret"
        store_dir = device.root / "work" / STORE / "store"
        assert not (store_dir / "store.key").exists()  # no key file when the key comes from a secret
        everything = device.log() + device.log(STORE)
        assert SECRET_VALUE not in everything


async def test_a_secret_not_granted_degrades_the_store_without_a_crash_loop_until_granted(
    start_device, store_base: Path, secrets_file: Path, client: Callable[..., ClientHandle]
):
    write_client(store_base, ALPHA, "alpha")
    update = store_update(keySource="secret", secretId=SECRET_ARN)
    async with start_device(store_base, update_config=update, secrets_file=secrets_file) as device:
        alpha = client(device, ALPHA)
        await alpha.ready()
        answer = await alpha.do("put", key="k", value="v", timeout=2.0)
        assert (answer["ok"], answer["error"]) == (False, "UnavailableError")
        assert "not open" in answer["message"]
        assert "NotAuthorizedError" in answer["message"]
        beats = await device.wait_for_local(f"device-agent/heartbeat/{STORE}")
        assert beats[-1].message["state"] == "DEGRADED"
        assert device.state(STORE) is ComponentState.RUNNING  # degraded, serving errors, not restarting

        result = await device.deploy(
            merge={STORE: ""}, update_config={STORE: {"MERGE": {"accessControl": secret_grant()}}}
        )
        assert result.succeeded, result.reason
        deadline = time.monotonic() + 30
        while not (answer := await alpha.do("put", key="k", value="v", timeout=2.0))["ok"]:
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.5)


async def test_kill_9_of_the_store_loses_no_acknowledged_record(
    start_device, store_base: Path, client: Callable[..., ClientHandle]
):
    write_client(store_base, ALPHA, "durable")
    async with start_device(store_base, update_config=store_update()) as device:
        alpha = client(device, ALPHA)
        await alpha.ready()
        acknowledged: list[str] = []
        killed: list[int] = []
        for n in range(120):
            if n in (30, 75):  # SIGKILL, twice: the nucleus restarts it (a third error would make it BROKEN)
                victim = component_pid(device, "encrypted_store")
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            # The client resends while the store restarts; a request may still time out, and is then lost.
            answer = await alpha.do("append", values=[f"record-{n}"], timeout=1.0)
            if answer["ok"]:
                acknowledged.append(f"record-{n}")
            else:
                assert answer["error"] == "UnavailableError", answer
        deadline = time.monotonic() + 30
        while not (read := await alpha.do("read", maxRecords=1000, timeout=2.0))["ok"]:
            assert time.monotonic() < deadline
        stored = [value for _, value in read["result"]]
        assert set(acknowledged) <= set(stored)  # every acknowledged record survived
        assert stored == sorted(stored, key=lambda v: int(v.split("-")[1]))  # and the queue kept its order
        assert device.state(STORE) is ComponentState.RUNNING
        assert component_pid(device, "encrypted_store") not in killed  # it really was killed and restarted
        assert len(acknowledged) >= 100


async def test_a_tampered_record_is_refused_and_reported_as_an_integrity_event(
    start_device, two_clients: Path, client: Callable[..., ClientHandle]
):
    async with start_device(two_clients, update_config=store_update()) as device:
        alpha = client(device, ALPHA)
        await alpha.ready()
        await alpha.ok("put", key="k", value="the original")
        database = next(p for p in (device.root / "work" / STORE / "store").iterdir() if p.suffix == ".db")
        with sqlite3.connect(database) as db:  # an attacker with file access, beside the running store
            # One byte of the record's time changed (`||` makes text: CAST makes it a blob again).
            db.execute(
                "UPDATE records SET sealed = CAST(substr(sealed, 1, 20)"
                " || (CASE WHEN substr(sealed, 21, 1) = x'55' THEN x'56' ELSE x'55' END)"
                " || substr(sealed, 22) AS BLOB) WHERE key = 'k'"
            )
        answer = await alpha.do("get", key="k")
        assert (answer["ok"], answer["error"]) == (False, "IntegrityError")
        assert "the original" not in json.dumps(answer)
        events = await device.wait_for_local("device-agent/events")
        deadline = time.monotonic() + 15
        while not any(r.message["event"] == "store.integrity_failed" for r in events):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
            events = device.local_messages("device-agent/events")
        failure = next(r.message for r in events if r.message["event"] == "store.integrity_failed")
        assert (failure["category"], failure["severity"], failure["details"]["namespace"]) == (
            "integrity",
            "critical",
            "alpha",
        )
