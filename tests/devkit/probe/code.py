"""A test component: performs the IPC calls listed in its configuration with the real client, and reports.

Each call's outcome ("ok" plus a result, or the error class name and message) is published to IoT Core on
`probe/<component>/result`, so a test sees exactly what a component on a device would see.
"""

import base64
import contextlib
import datetime as dt
import json
import os
import sys
import threading
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import (
    QOS,
    BinaryMessage,
    ConfigurationValidityReport,
    JsonMessage,
    PublishMessage,
)

NAME = os.environ["PROBE_NAME"]
client = GreengrassCoreIPCClientV2()
events: dict = {}  # type: ignore[type-arg]


def record(key):
    def on_event(event):
        events.setdefault(key, []).append(describe(event))

    return on_event


def describe(event):
    for attr in ("json_message", "binary_message"):
        value = getattr(event, attr, None)
        if value is not None:
            message = value.message
            if isinstance(message, bytes):
                message = {"binary": base64.b64encode(message).decode()}
            return {"kind": attr, "message": message, "topic": value.context.topic if value.context else None}
    if getattr(event, "message", None) is not None and hasattr(event.message, "payload"):
        return {"kind": "iot", "topic": event.message.topic_name, "payload": event.message.payload.decode()}
    if getattr(event, "connection_status_event", None) is not None:
        return {"kind": "status", "status": event.connection_status_event.status}
    if getattr(event, "configuration_update_event", None) is not None:
        return {"kind": "config", "keyPath": event.configuration_update_event.key_path}
    if getattr(event, "validate_configuration_update_event", None) is not None:
        e = event.validate_configuration_update_event
        return {"kind": "validate", "deploymentId": e.deployment_id, "configuration": e.configuration}
    if getattr(event, "pre_update_event", None) is not None:
        return {"kind": "pre_update", "deploymentId": event.pre_update_event.deployment_id}
    if getattr(event, "post_update_event", None) is not None:
        return {"kind": "post_update", "deploymentId": event.post_update_event.deployment_id}
    return {"kind": type(event).__name__}


def call(step):
    op = step["op"]
    args = step.get("args", {})
    if op == "publish_to_topic":
        if "binary" in args:
            message = PublishMessage(binary_message=BinaryMessage(message=base64.b64decode(args["binary"])))
        else:
            message = PublishMessage(json_message=JsonMessage(message=args.get("message", {})))
        client.publish_to_topic(topic=args["topic"], publish_message=message)
        return None
    if op == "subscribe_to_topic":
        client.subscribe_to_topic(
            topic=args["topic"],
            receive_mode=args.get("receive_mode"),
            on_stream_event=record(step.get("key", args["topic"])),
        )
        return None
    if op == "publish_to_iot_core":
        client.publish_to_iot_core(
            topic_name=args["topic"],
            qos=args.get("qos", QOS.AT_LEAST_ONCE),
            payload=args.get("payload", "{}").encode(),
        )
        return None
    if op == "subscribe_to_iot_core":
        client.subscribe_to_iot_core(
            topic_name=args["topic"],
            qos=args.get("qos", QOS.AT_LEAST_ONCE),
            on_stream_event=record(step.get("key", args["topic"])),
        )
        return None
    if op == "subscribe_to_connection_status":
        client.subscribe_to_iot_core_connection_status(on_stream_event=record("status"))
        return None
    if op == "get_configuration":
        response = client.get_configuration(
            component_name=args.get("component"), key_path=args.get("key_path")
        )
        return {"componentName": response.component_name, "value": response.value}
    if op == "update_configuration":
        stamp = dt.datetime.fromtimestamp(args.get("timestamp", time.time()), tz=dt.UTC)
        client.update_configuration(
            key_path=args.get("key_path"),
            timestamp=stamp,
            value_to_merge=args["value"],
        )
        return None
    if op == "subscribe_to_configuration_update":
        client.subscribe_to_configuration_update(
            component_name=args.get("component"),
            key_path=args.get("key_path"),
            on_stream_event=record("config"),
        )
        return None
    if op == "validate_configuration":
        verdict = args.get("verdict", "ACCEPTED")

        def on_validate(event):
            e = event.validate_configuration_update_event
            events.setdefault("validate", []).append({"configuration": e.configuration})
            status = verdict
            if "reject_if_key" in args and args["reject_if_key"] in e.configuration:
                status = "REJECTED"
            client.send_configuration_validity_report(
                configuration_validity_report=ConfigurationValidityReport(
                    status=status,
                    deployment_id=e.deployment_id,
                    message=args.get("message", "probe says " + status),
                )
            )

        client.subscribe_to_validate_configuration_updates(on_stream_event=on_validate)
        return None
    if op == "component_updates":
        defer_ms = args.get("defer_ms", 0)
        deferred = {"done": False}

        def on_update(event):
            events.setdefault("updates", []).append(describe(event))
            if event.pre_update_event is not None:
                recheck = 0 if deferred["done"] else defer_ms
                deferred["done"] = True
                client.defer_component_update(
                    deployment_id=event.pre_update_event.deployment_id,
                    recheck_after_ms=recheck,
                    message="probe",
                )

        client.subscribe_to_component_updates(on_stream_event=on_update)
        return None
    if op == "defer_component_update":
        client.defer_component_update(deployment_id=args["deployment_id"], recheck_after_ms=0)
        return None
    if op == "update_state":
        client.update_state(state=args["state"])
        return None
    if op == "get_secret_value":
        response = client.get_secret_value(secret_id=args["secret_id"])
        value = response.secret_value
        return {
            "secretId": response.secret_id,
            "string": value.secret_string,
            "binary": base64.b64encode(value.secret_binary).decode() if value.secret_binary else None,
        }
    if op == "list_components":
        return sorted((c.component_name, c.state) for c in client.list_components().components)
    if op == "get_component_details":
        d = client.get_component_details(component_name=args["component"]).component_details
        return {"name": d.component_name, "version": d.version, "state": d.state}
    if op == "restart_component":
        return client.restart_component(component_name=args["component"]).restart_status
    if op == "stop_component":
        return client.stop_component(component_name=args["component"]).stop_status
    if op == "get_thing_shadow":
        client.get_thing_shadow(thing_name="x")
        return None
    if op == "sleep":
        time.sleep(args["seconds"])
        return None
    if op == "exit":
        sys.exit(args.get("code", 0))
    raise ValueError(f"unknown probe op {op}")


def report(results):
    client.publish_to_iot_core(
        topic_name=f"probe/{NAME}/result", qos=QOS.AT_LEAST_ONCE, payload=json.dumps(results).encode()
    )


def main():
    steps = client.get_configuration(key_path=["steps"]).value["steps"]
    results = []
    for step in steps:
        try:
            results.append({"op": step["op"], "ok": True, "result": call(step)})
        except SystemExit:
            raise
        except Exception as exc:
            results.append(
                {
                    "op": step["op"],
                    "ok": False,
                    "error": type(exc).__name__,
                    "message": getattr(exc, "message", None) or str(exc),
                }
            )
    report({"results": results})
    # Then keep reporting the events streams delivered, whenever asked through a local command topic.
    asked = threading.Event()
    with contextlib.suppress(Exception):
        client.subscribe_to_topic(topic=f"probe/{NAME}/ask", on_stream_event=lambda e: asked.set())
    while True:
        if asked.wait(0.2):
            asked.clear()
            report({"events": events})


if __name__ == "__main__":
    main()
