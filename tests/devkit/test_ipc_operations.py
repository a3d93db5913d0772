"""Every IPC operation the local nucleus serves, exercised by real component processes with the real client.

Each test deploys probe components (tests/devkit/probe) whose steps are IPC calls; the probe reports each
call's outcome (result, or the typed error the SDK raised) to IoT Core, where the test reads it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from device_agent.devkit.errors import DevkitError
from device_agent.devkit.lifecycle import ComponentState
from tests.conftest import probe_events, probe_results
from tests.devkit.probe import write_probe

PUBSUB = "aws.greengrass.ipc.pubsub"
MQTT = "aws.greengrass.ipc.mqttproxy"


def grant(
    destination: str, operations: list[str], resources: list[str], policy: str = "p1"
) -> dict[str, Any]:
    return {
        destination: {
            policy: {"operations": [f"aws.greengrass#{op}" for op in operations], "resources": resources}
        }
    }


async def test_local_pubsub_json_binary_and_receive_modes(tmp_path, start_device):
    write_probe(
        tmp_path,
        "com.test.Chatty",
        [
            {"op": "subscribe_to_topic", "args": {"topic": "chat/+"}, "key": "wildcard"},
            {"op": "subscribe_to_topic", "args": {"topic": "chat/a"}, "key": "exact"},
            {"op": "sleep", "args": {"seconds": 1.5}},
            {"op": "publish_to_topic", "args": {"topic": "chat/a", "message": {"from": "chatty"}}},
            {
                "op": "publish_to_topic",
                "args": {"topic": "chat/a", "binary": base64.b64encode(b"\x00\x01hi").decode()},
            },
        ],
        access_control=grant(PUBSUB, ["SubscribeToTopic", "PublishToTopic"], ["chat/+", "chat/a"]),
    )
    write_probe(
        tmp_path,
        "com.test.Other",
        [
            {"op": "sleep", "args": {"seconds": 1}},
            {"op": "publish_to_topic", "args": {"topic": "chat/b", "message": {"from": "other"}}},
        ],
        access_control=grant(PUBSUB, ["PublishToTopic"], ["chat/*"]),
    )
    async with start_device(tmp_path) as device:
        assert all(r["ok"] for r in await probe_results(device, "com.test.Chatty"))
        assert all(r["ok"] for r in await probe_results(device, "com.test.Other"))
        events = await probe_events(device, "com.test.Chatty")
    # The wildcard subscription defaults to RECEIVE_MESSAGES_FROM_OTHERS: it hears Other, never itself.
    assert events["wildcard"] == [{"kind": "json_message", "message": {"from": "other"}, "topic": "chat/b"}]
    # The exact one defaults to RECEIVE_ALL_MESSAGES: it hears its own JSON and binary, each kept as it was.
    assert events["exact"] == [
        {"kind": "json_message", "message": {"from": "chatty"}, "topic": "chat/a"},
        {
            "kind": "binary_message",
            "message": {"binary": base64.b64encode(b"\x00\x01hi").decode()},
            "topic": "chat/a",
        },
    ]


async def test_pubsub_errors_are_typed(tmp_path, start_device):
    write_probe(
        tmp_path,
        "com.test.Bad",
        [
            {"op": "publish_to_topic", "args": {"topic": "chat/+", "message": {}}},
            {"op": "publish_to_topic", "args": {"topic": "secret/x", "message": {}}},
            {"op": "subscribe_to_topic", "args": {"topic": "chat/#"}},
            {"op": "subscribe_to_topic", "args": {"topic": "chat/+"}},
        ],
        # STANDARD matching: "chat/+" in a pubsub policy is the literal filter, not a wildcard.
        access_control=grant(PUBSUB, ["PublishToTopic", "SubscribeToTopic"], ["chat/+"]),
    )
    async with start_device(tmp_path) as device:
        results = await probe_results(device, "com.test.Bad")
    assert [(r["ok"], r.get("error")) for r in results] == [
        (False, "InvalidArgumentsError"),
        (False, "UnauthorizedError"),
        (False, "UnauthorizedError"),
        (True, None),
    ]
    assert "not authorized" in results[1]["message"]


async def test_iot_core_publish_subscribe_and_authorization(tmp_path, start_device):
    write_probe(
        tmp_path,
        "com.test.Cloudy",
        [
            {"op": "subscribe_to_iot_core", "args": {"topic": "cmd/dev/+"}, "key": "cmd"},
            {"op": "publish_to_iot_core", "args": {"topic": "dt/dev/data", "payload": '{"v": 1}'}},
            {"op": "publish_to_iot_core", "args": {"topic": "dt/other/data"}},
            {"op": "subscribe_to_iot_core", "args": {"topic": "cmd/other/x"}},
        ],
        # MQTT-style matching for IoT Core: "+" is a single-level wildcard here.
        access_control=grant(MQTT, ["PublishToIoTCore", "SubscribeToIoTCore"], ["dt/dev/#", "cmd/dev/+"]),
    )
    async with start_device(tmp_path) as device:
        results = await probe_results(device, "com.test.Cloudy")
        assert [(r["ok"], r.get("error")) for r in results] == [
            (True, None),
            (True, None),
            (False, "UnauthorizedError"),
            (False, "UnauthorizedError"),
        ]
        assert results[2]["message"] == "Not Authorized"
        [record] = device.published("dt/dev/data")
        assert json.loads(record.payload) == {"v": 1}
        assert record.component == "com.test.Cloudy"
        assert record.qos == 1
        lines = (device.root / "iot-core" / "published.jsonl").read_text().splitlines()
        assert {"topic": "dt/dev/data", "payload": {"v": 1}, "encoding": "json"}.items() <= json.loads(
            next(line for line in lines if "dt/dev/data" in line)
        ).items()
        device.inject("cmd/dev/reboot", {"now": True})
        events = await probe_events(device, "com.test.Cloudy")
    assert events["cmd"] == [{"kind": "iot", "topic": "cmd/dev/reboot", "payload": '{"now": true}'}]


async def test_offline_spools_qos1_drops_qos0_and_reports_connection_status(tmp_path, start_device):
    write_probe(
        tmp_path,
        "com.test.Offline",
        [
            {"op": "subscribe_to_connection_status"},
            {"op": "sleep", "args": {"seconds": 2.5}},
            {"op": "publish_to_iot_core", "args": {"topic": "dt/x/q1", "qos": "1", "payload": '{"n": 1}'}},
            {"op": "publish_to_iot_core", "args": {"topic": "dt/x/q0", "qos": "0", "payload": '{"n": 0}'}},
        ],
        access_control=grant(MQTT, ["PublishToIoTCore"], ["dt/x/*"]),
    )
    async with start_device(tmp_path) as device:
        await device.wait_for_state("com.test.Offline", ComponentState.RUNNING)
        await asyncio.sleep(1.0)
        await device.go_offline()
        # The report itself is spooled while offline, so wait for the spool rather than the report.
        for _ in range(100):
            if device.nucleus.iot.spooled >= 2:
                break
            await asyncio.sleep(0.1)
        assert device.published("dt/x/#") == []
        await device.go_online()
        results = await probe_results(device, "com.test.Offline")
        assert [(r["ok"], r.get("error")) for r in results] == [
            (True, None),
            (True, None),
            (True, None),
            (False, "ServiceError"),
        ]
        assert "offline" in results[3]["message"].lower()
        assert [r.topic for r in device.published("dt/x/#")] == ["dt/x/q1"]
        events = await probe_events(device, "com.test.Offline")
    assert [e["status"] for e in events["status"]] == ["CONNECTED", "DISCONNECTED", "CONNECTED"]


async def test_configuration_get_update_subscribe(tmp_path, start_device):
    write_probe(
        tmp_path,
        "com.test.Config",
        [
            {"op": "subscribe_to_configuration_update", "args": {"key_path": ["tuning"]}},
            {"op": "get_configuration", "args": {"key_path": ["tuning", "rate"]}},
            {"op": "get_configuration", "args": {"key_path": ["tuning"]}},
            {"op": "get_configuration", "args": {"key_path": ["missing"]}},
            {"op": "update_configuration", "args": {"key_path": ["tuning"], "value": {"rate": 7}}},
            {"op": "get_configuration", "args": {"key_path": ["tuning", "rate"]}},
            {
                "op": "update_configuration",
                "args": {"key_path": ["tuning"], "value": {"rate": 9}, "timestamp": 1.0},
            },
            {"op": "update_configuration", "args": {"value": {"accessControl": {}}}},
        ],
        extra_config={"tuning": {"rate": 5, "mode": "fast"}},
    )
    async with start_device(tmp_path) as device:
        results = await probe_results(device, "com.test.Config")
        events = await probe_events(device, "com.test.Config")
    assert results[1]["result"] == {"componentName": "com.test.Config", "value": {"rate": 5}}
    assert results[2]["result"]["value"] == {"rate": 5, "mode": "fast"}
    assert results[3]["error"] == "ResourceNotFoundError"
    assert results[4]["ok"]
    assert results[5]["result"]["value"] == {"rate": 7}
    assert results[6]["error"] == "FailedUpdateConditionCheckError"
    assert results[7]["error"] == "InvalidArgumentsError"
    assert "accessControl" in results[7]["message"]
    assert events["config"] == [{"kind": "config", "keyPath": ["tuning", "rate"]}]


async def test_not_supported_operation_and_cli_absent(tmp_path, start_device):
    write_probe(
        tmp_path,
        "com.test.Lonely",
        [
            {"op": "get_thing_shadow"},
            {"op": "list_components"},
            {"op": "get_secret_value", "args": {"secret_id": "x"}},
        ],
    )
    async with start_device(tmp_path) as device:
        results = await probe_results(device, "com.test.Lonely")
    assert [r["error"] for r in results] == ["ServiceError"] * 3
    assert "not supported" in results[0]["message"]


async def test_an_operation_made_unsupported_answers_as_an_older_nucleus_would(tmp_path, start_device):
    write_probe(
        tmp_path,
        "com.test.Old",
        [{"op": "subscribe_to_connection_status"}, {"op": "get_configuration", "args": {"key_path": []}}],
    )
    connection_status = "aws.greengrass#SubscribeToIoTCoreConnectionStatus"
    async with start_device(tmp_path, unsupported_operations=frozenset({connection_status})) as device:
        results = await probe_results(device, "com.test.Old")
    assert results[0]["error"] == "ServiceError"
    assert "not supported" in results[0]["message"]
    assert "error" not in results[1]  # the others are still served


async def test_unsupported_operations_must_name_served_operations(tmp_path, start_device):
    with pytest.raises(DevkitError, match="SubscribeToIoTCoreConnectionStatu"):
        async with start_device(
            tmp_path, unsupported_operations=frozenset({"aws.greengrass#SubscribeToIoTCoreConnectionStatu"})
        ):
            pass


async def test_cli_operations_with_greengrass_cli(tmp_path, start_device):
    write_probe(tmp_path, "com.test.Target", [{"op": "sleep", "args": {"seconds": 3600}}], report=False)
    write_probe(
        tmp_path,
        "com.test.Operator",
        [
            {"op": "sleep", "args": {"seconds": 1}},
            {"op": "list_components"},
            {"op": "get_component_details", "args": {"component": "com.test.Target"}},
            {"op": "restart_component", "args": {"component": "com.test.Target"}},
            {"op": "get_component_details", "args": {"component": "com.test.Nope"}},
            {"op": "stop_component", "args": {"component": "com.test.Operator"}},
            {"op": "sleep", "args": {"seconds": 1}},
            {"op": "stop_component", "args": {"component": "com.test.Target"}},
        ],
        access_control={
            "aws.greengrass.Cli": {
                "operator": {
                    "operations": [
                        "aws.greengrass#ListComponents",
                        "aws.greengrass#GetComponentDetails",
                        "aws.greengrass#RestartComponent",
                    ],
                    "resources": ["*"],
                },
                # StopComponent only for the target: the resource is the component's name.
                "stopper": {"operations": ["aws.greengrass#StopComponent"], "resources": ["com.test.Target"]},
            }
        },
    )
    async with start_device(tmp_path, with_cli=True) as device:
        results = await probe_results(device, "com.test.Operator")
        assert ("com.test.Target", "RUNNING") in [tuple(x) for x in results[1]["result"]]
        assert results[2]["result"] == {"name": "com.test.Target", "version": "1.0.0", "state": "RUNNING"}
        assert results[3]["result"] == "SUCCEEDED"
        assert results[4]["error"] == "ResourceNotFoundError"
        assert results[5]["error"] == "UnauthorizedError"  # StopComponent is granted for the target only
        assert results[7]["result"] == "SUCCEEDED"
        assert device.state("com.test.Target") is ComponentState.FINISHED
        assert device.log().count("component=com.test.Target from=STARTING to=RUNNING") == 2


async def test_secrets_are_authorized_by_arn(tmp_path, start_device):
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"
    other = "arn:aws:secretsmanager:us-east-1:123456789012:secret:other-XyZ"
    secrets = tmp_path / "secrets.json"
    secrets.write_text(
        json.dumps(
            {
                "secrets": [
                    {"arn": arn, "name": "db", "secretString": "s3cret-value"},
                    {"arn": other, "name": "other", "secretBinary": base64.b64encode(b"\x01\x02").decode()},
                ]
            }
        )
    )
    write_probe(
        tmp_path,
        "com.test.Secretive",
        [
            {"op": "get_secret_value", "args": {"secret_id": arn}},
            {"op": "get_secret_value", "args": {"secret_id": "other"}},
            {"op": "get_secret_value", "args": {"secret_id": "missing"}},
        ],
        access_control=grant("aws.greengrass.SecretManager", ["GetSecretValue"], [arn]),
    )
    async with start_device(tmp_path, secrets_file=secrets) as device:
        results = await probe_results(device, "com.test.Secretive")
        assert results[0]["result"] == {"secretId": arn, "string": "s3cret-value", "binary": None}
        assert results[1]["error"] == "UnauthorizedError"
        assert results[2]["error"] == "ResourceNotFoundError"
        assert "s3cret-value" not in device.log()


async def test_unknown_token_is_refused_as_access_denied(tmp_path, start_device):
    async with start_device() as device:
        env = dict(os.environ)
        env["SVCUID"] = "NOT-A-TOKEN"
        env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] = str(device.nucleus.socket_path)
        code = (
            "from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2\n"
            "try:\n    GreengrassCoreIPCClientV2()\nexcept Exception as e:\n    print(type(e).__name__)\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, env=env, stdout=subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert out.decode().strip() == "AccessDeniedError"


async def test_update_state_errored_restarts_the_component(tmp_path, start_device):
    # The nucleus restarts the component as soon as it reports ERRORED, so the probe may never get to report
    # back: watch the nucleus's own record of the transitions instead.
    write_probe(
        tmp_path,
        "com.test.Flaky",
        [{"op": "sleep", "args": {"seconds": 0.5}}, {"op": "update_state", "args": {"state": "ERRORED"}}],
        report=False,
    )
    async with start_device(tmp_path) as device:
        deadline = time.monotonic() + 30
        while device.log().count("component=com.test.Flaky from=RUNNING to=ERRORED") < 1:
            assert time.monotonic() < deadline, "UpdateState(ERRORED) was not applied"
            await asyncio.sleep(0.1)
        # ERRORED from RUNNING means a restart, and after the third error in an hour, BROKEN.
        assert (
            await device.wait_for_state("com.test.Flaky", ComponentState.BROKEN, timeout=60)
            is ComponentState.BROKEN
        )
        log = device.log()
        assert log.count("component=com.test.Flaky from=RUNNING to=ERRORED") == 2
        assert log.count("component=com.test.Flaky from=INSTALLED to=STARTING") == 3


async def test_crashing_component_goes_broken_after_three_errors(tmp_path, start_device):
    write_probe(tmp_path, "com.test.Crasher", [{"op": "exit", "args": {"code": 3}}], report=False)
    async with start_device(tmp_path) as device:
        assert (
            await device.wait_for_state("com.test.Crasher", ComponentState.BROKEN, timeout=60)
            is ComponentState.BROKEN
        )
        assert device.log().count("component=com.test.Crasher from=RUNNING to=ERRORED") == 2


async def test_no_token_appears_in_any_log(tmp_path, start_device):
    write_probe(tmp_path, "com.test.Quiet", [{"op": "get_configuration", "args": {}}])
    async with start_device(tmp_path) as device:
        await probe_results(device, "com.test.Quiet")
        tokens = list(device.nucleus._component_tokens.values())
        assert tokens
        for log in (device.root / "logs").iterdir():
            text = log.read_text()
            assert not any(token in text for token in tokens), log.name


@pytest.mark.parametrize("verdict", ["ACCEPTED", "REJECTED"])
async def test_configuration_deployment_validated(tmp_path, start_device, verdict):
    write_probe(
        tmp_path,
        "com.test.Validator",
        [
            {
                "op": "validate_configuration",
                "args": {"verdict": verdict, "message": "rate must be below 100"},
            },
            {"op": "subscribe_to_configuration_update", "args": {}},
        ],
        extra_config={"rate": 5},
    )
    async with start_device(tmp_path) as device:
        await probe_results(device, "com.test.Validator")
        result = await device.deploy(update_config={"com.test.Validator": {"MERGE": {"rate": 500}}})
        events = await probe_events(device, "com.test.Validator")
        rate = device.nucleus.config_store.get("com.test.Validator", ["rate"])
        assert events["validate"][0]["configuration"]["rate"] == 500
        if verdict == "ACCEPTED":
            assert result.succeeded
            assert rate == 500
            assert {"kind": "config", "keyPath": ["rate"]} in events["config"]
            # Applied without a restart.
            assert device.log().count("component=com.test.Validator from=STARTING to=RUNNING") == 1
        else:
            assert not result.succeeded
            assert "rate must be below 100" in result.reason
            assert rate == 5
            assert "config" not in events


async def test_component_update_can_be_deferred(tmp_path, start_device):
    write_probe(
        tmp_path,
        "com.test.Busy",
        [{"op": "component_updates", "args": {"defer_ms": 2000}}],
        extra_config={"rate": 1},
    )
    async with start_device(tmp_path) as device:
        await probe_results(device, "com.test.Busy")
        started = time.monotonic()
        result = await device.deploy(update_config={"com.test.Busy": {"MERGE": {"rate": 2}}})
        elapsed = time.monotonic() - started
        events = await probe_events(device, "com.test.Busy")
    assert result.succeeded
    assert elapsed >= 2.0  # the deferral held the deployment back
    kinds = [e["kind"] for e in events["updates"]]
    assert kinds == ["pre_update", "pre_update", "post_update"]
