"""`device_agent.ipc.IpcSession` in real component processes on the local nucleus (the virtual device).

The session probe (tests/lib/components/session_probe.py) opens a session, subscribes (local, IoT Core,
configuration), runs the checks of its configuration and reports to IoT Core; its handlers echo what they
receive. Nothing is mocked: the real SDK talks to the devkit nucleus over a Unix socket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest

from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.testing import VirtualDevice
from device_agent.errors import NotAuthorizedError, UnavailableError
from device_agent.ipc import IpcSession, ReportedState
from tests.lib.components import write_session_probe

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"
SECRET_TEXT = "s3cret-value-never-logged"


def grant(destination: str, operations: list[str], resources: list[str]) -> dict[str, Any]:
    return {
        destination: {
            f"test:{destination}": {
                "operations": [f"aws.greengrass#{op}" for op in operations],
                "resources": resources,
            }
        }
    }


async def report(
    device: VirtualDevice, name: str, *, count: int = 1, timeout: float = 30.0
) -> dict[str, Any]:
    records = await device.wait_for_published(f"probe/{name}/result", count=count, timeout=timeout)
    result: dict[str, Any] = json.loads(records[-1].payload)
    return result


async def ask(device: VirtualDevice, name: str, command: str) -> None:
    delivered = device.publish_local(f"probe/{name}/ask", {"cmd": command})
    assert delivered == 1


def echoes(device: VirtualDevice, name: str, via: str) -> list[Any]:
    found = [json.loads(r.payload) for r in device.published(f"probe/{name}/echo")]
    return [e["payload"] for e in found if e["via"] == via]


async def wait_for_echo(
    device: VirtualDevice, name: str, via: str, payload: Any, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while payload not in echoes(device, name, via):
        assert time.monotonic() < deadline, f"no {via} echo of {payload!r}: {echoes(device, name, via)}"
        await asyncio.sleep(0.02)


def by_op(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r.get("label", r["op"]): r for r in results}


def final_line(device: VirtualDevice, name: str) -> dict[str, Any]:
    for line in reversed(device.log(name).splitlines()):
        if '"close_s"' in line:
            start = line.index("{")
            parsed, _ = json.JSONDecoder().raw_decode(line[start:])
            return dict(parsed)
    raise AssertionError(f"no final line in the log of {name}")


async def test_connects_calls_and_streams(tmp_path, start_device):
    name = "com.test.SessionCalls"
    secrets = tmp_path / "secrets.json"
    secrets.write_text(
        json.dumps({"secrets": [{"arn": SECRET_ARN, "name": "db", "secretString": SECRET_TEXT}]})
    )
    write_session_probe(
        tmp_path,
        name,
        [
            {"op": "publish", "args": {"topic": f"probe/{name}/in", "message": {"n": 1}}},
            {"op": "publish_binary", "args": {"topic": f"probe/{name}/in", "binary": "AAFoaQ=="}},
            {"op": "publish_to_iot_core", "args": {"topic": f"probe/{name}/out", "payload": "q0", "qos": 0}},
            {"op": "publish_to_iot_core", "args": {"topic": f"probe/{name}/out", "payload": "q1", "qos": 1}},
            {"op": "get_configuration", "args": {"key_path": ["watched"]}},
            {"op": "update_configuration", "args": {"key_path": ["watched"], "value": {"level": 2}}},
            {"op": "update_state", "args": {"state": "RUNNING"}},
            {"op": "subscribe_to_connection_status"},
            {"op": "get_secret", "args": {"secret_id": SECRET_ARN}},
            {"op": "list_components"},
            {"op": "restart_component", "args": {"component": "com.test.NoSuchComponent"}},
        ],
        access_control={
            **grant("aws.greengrass.SecretManager", ["GetSecretValue"], [SECRET_ARN]),
            **grant("aws.greengrass.Cli", ["ListComponents", "RestartComponent"], ["*"]),
        },
    )
    async with start_device(tmp_path, with_cli=True, secrets_file=secrets) as device:
        first = await report(device, name)
        results = by_op(first["results"])
        assert first["thing"] == device.nucleus.thing_name
        for op in ("publish", "publish_binary", "update_configuration", "update_state"):
            assert results[op]["ok"], results[op]
        assert results["get_configuration"]["result"] == {"level": 1}
        assert [r.payload for r in device.published(f"probe/{name}/out")] == [b"q0", b"q1"]
        secret = results["get_secret"]["result"]
        assert secret["text_length"] == len(SECRET_TEXT)
        assert SECRET_TEXT not in secret["repr"]
        assert SECRET_TEXT not in secret["str"]
        assert results["list_components"]["result"] == [name]
        assert results["restart_component"]["families"][:2] == ["NotFoundError", "DeviceAgentError"]
        # Local JSON and binary messages reached the sync handler; the config change its stream.
        await wait_for_echo(device, name, "local", {"n": 1})
        await wait_for_echo(device, name, "local", {"binary": base64.b64encode(b"\x00\x01hi").decode()})
        await device.go_offline()
        await device.go_online()
        for attempt in range(2, 40):
            await ask(device, name, "report")
            later = await report(device, name, count=attempt)
            if later["status_events"][-2:] == [False, True]:
                break
            await asyncio.sleep(0.1)
        assert later["config_events"] == [["watched", "level"]]
        assert later["status_events"][-2:] == [
            False,
            True,
        ]  # after the current status, if the nucleus sent it
        assert SECRET_TEXT not in device.log(name)


async def test_errors_are_mapped_with_the_cause_and_without_the_token(tmp_path, start_device):
    name = "com.test.SessionErrors"
    write_session_probe(
        tmp_path,
        name,
        [
            {"op": "publish", "args": {"topic": "not/granted"}},
            {"op": "publish", "args": {"topic": "bad/+"}, "label": "bad_topic"},
            {"op": "update_configuration", "args": {"value": {"accessControl": {}}}},
            {"op": "get_configuration", "args": {"key_path": ["no", "such", "key"]}},
            {"op": "list_components"},
            {"op": "get_secret", "args": {"secret_id": SECRET_ARN}},
            {"op": "subscribe", "args": {"topic": "also/not/granted"}},
        ],
        access_control=grant("aws.greengrass.ipc.pubsub", ["PublishToTopic"], ["bad/+"]),
    )
    async with start_device(tmp_path) as device:
        results = by_op((await report(device, name))["results"])
        expected = {
            "publish": ("NotAuthorizedError", "UnauthorizedError"),
            "bad_topic": ("InvalidInputError", "InvalidArgumentsError"),
            "update_configuration": ("InvalidInputError", "InvalidArgumentsError"),
            "get_configuration": ("NotFoundError", "ResourceNotFoundError"),
            "list_components": ("OperationNotSupportedError", "ServiceError"),
            "get_secret": ("OperationNotSupportedError", "ServiceError"),
            "subscribe": ("NotAuthorizedError", "UnauthorizedError"),
        }
        for label, (error, cause) in expected.items():
            result = results[label]
            assert (result["ok"], result["error"], result["cause"]) == (False, error, cause), result
            assert "DeviceAgentError" in result["families"]
        assert "UnavailableError" in results["list_components"]["families"]
        assert "not supported" in results["list_components"]["message"]
        token = device.nucleus._component_tokens[name]
        log = device.log(name)
        assert "probe.check_failed" in log  # the failures were logged, with their causes...
        assert token not in log  # ...and the token is nowhere in the component's log
        assert all(token not in r.get("message", "") for r in results.values())


async def test_reconnects_and_resubscribes_after_a_nucleus_restart(tmp_path, start_device):
    name = "com.test.SessionRestart"
    write_session_probe(tmp_path, name, extra_config={"down_timeout": 0.3})
    async with start_device(tmp_path) as device:
        await report(device, name)
        started = time.monotonic()
        await device.restart_ipc(downtime=1.0)
        back = time.monotonic()
        # Keep offering a local and a cloud message until the component's old handlers echo both.
        local = iot = None
        seq = 0
        while local is None or iot is None:
            assert time.monotonic() - back < 10, "the session did not come back"
            seq += 1
            if local is None:
                device.publish_local(f"probe/{name}/in", {"seq": seq})
                if any(isinstance(e, dict) and "seq" in e for e in echoes(device, name, "local")):
                    local = time.monotonic() - back
            if iot is None:
                device.inject(f"probe/{name}/cloud", f"seq-{seq}")
                if echoes(device, name, "iot"):
                    iot = time.monotonic() - back
            await asyncio.sleep(0.05)
        print(f"restart took {back - started:.2f}s; local after {local:.2f}s, IoT Core after {iot:.2f}s")
        assert local < 5.0
        assert iot < 5.0
        # While the socket was away, a call with a 0.3 s timeout timed out instead of hanging.
        await ask(device, name, "report")
        later = await report(device, name, count=2)
        down = later["timeouts_while_down"]
        assert down, later
        assert down[0]["error"] == "TimedOutError"
        assert "TimeoutError" in down[0]["families"]
        assert 0.25 <= down[0]["elapsed_s"] < 1.0
        log = device.log(name)
        for event in ("ipc.disconnected", "ipc.reconnecting", "ipc.resubscribed", "ipc.reconnected"):
            assert event in log
        assert device.nucleus._component_tokens[name] not in log


async def test_failing_handlers_keep_their_streams_and_close_is_clean(tmp_path, start_device):
    name = "com.test.SessionClose"
    write_session_probe(tmp_path, name)
    async with start_device(tmp_path) as device:
        await report(device, name)
        device.publish_local(f"probe/{name}/in", {"boom": True})
        device.publish_local(f"probe/{name}/in", {"after": "boom"})
        device.inject(f"probe/{name}/cloud", "boom")
        device.inject(f"probe/{name}/cloud", "after-boom")
        await wait_for_echo(device, name, "local", {"after": "boom"})
        await wait_for_echo(device, name, "iot", "after-boom")
        # Order within a stream is preserved, across failures.
        for n in range(20):
            device.inject(f"probe/{name}/cloud", f"n{n}")
        await wait_for_echo(device, name, "iot", "n19")
        assert [e for e in echoes(device, name, "iot") if e.startswith("n")] == [f"n{n}" for n in range(20)]
        log = device.log(name)
        assert log.count("ipc.handler_failed") == 2
        started = time.monotonic()
        await ask(device, name, "exit")
        await device.wait_for_state(name, ComponentState.FINISHED, timeout=10)
        assert time.monotonic() - started < 5.0
        final = final_line(device, name)
        assert final["os_threads"] == 1  # the CRT's event-loop thread is gone
        assert final["close_s"] < 2.0


# ---- in the test's own process: cancellation and close, asserted directly --------------------------------


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_cancelled_call_leaves_the_session_usable(start_device):
    async with start_device() as device:
        token = device.nucleus.issue_token("com.test.InProcess")
        async with IpcSession(socket_path=str(device.nucleus.socket_path), token=token, timeout=5.0) as ipc:
            restart = asyncio.create_task(device.restart_ipc(downtime=0.5))
            await wait_until(lambda: not ipc.connected)
            waiting = asyncio.create_task(ipc.publish("not/granted", {"x": 1}))
            await asyncio.sleep(0.1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await restart
            # Back on its own, and calls go through (here: refused, which proves the round trip).
            with pytest.raises(NotAuthorizedError) as refused:
                await ipc.publish("not/granted", {"x": 1})
            assert type(refused.value.__cause__).__name__ == "UnauthorizedError"
            assert ipc.connected
            assert token not in str(refused.value)
            closing = time.monotonic()
        # The failed and cancelled calls kept nothing native alive: close returns at once.
        assert time.monotonic() - closing < 1.0


async def test_close_wakes_calls_waiting_for_the_connection(start_device):
    async with start_device() as device:
        token = device.nucleus.issue_token("com.test.InProcess")
        ipc = IpcSession(socket_path=str(device.nucleus.socket_path), token=token, timeout=30.0)
        await ipc.open()
        restart = asyncio.create_task(device.restart_ipc(downtime=1.0))
        await wait_until(lambda: not ipc.connected)
        waiting = asyncio.create_task(ipc.update_state(ReportedState.RUNNING))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await ipc.close()
        with pytest.raises(UnavailableError):
            await waiting
        assert time.monotonic() - started < 1.0
        await restart
        with pytest.raises(UnavailableError):
            await ipc.update_state(ReportedState.RUNNING)


async def test_open_gives_up_when_no_nucleus_answers(tmp_path):
    from device_agent.retry import set_testing  # noqa: PLC0415

    session = IpcSession(socket_path=str(tmp_path / "no.socket"), token="X" * 16, open_timeout=0.5)
    started = time.monotonic()
    with set_testing(True, attempts=3), pytest.raises(UnavailableError) as failed:
        await session.open()
    assert time.monotonic() - started < 1.0  # including the close of what the attempts built
    assert not session.connected
    assert "X" * 16 not in str(failed.value)
