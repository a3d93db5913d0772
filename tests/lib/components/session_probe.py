"""A test component built on `device_agent.ipc.IpcSession`: runs the checks in its configuration and reports.

Results go to IoT Core on `probe/<name>/result`; what its stream handlers received is echoed on
`probe/<name>/echo`. Commands arrive on local pub/sub `probe/<name>/ask`: {"cmd": "report"} re-publishes the
results, {"cmd": "exit"} closes the session and exits. The log is configured without the library's redaction
filter, so a token that reached any message would show in the component log.
"""

import asyncio
import base64
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from device_agent.ipc import IpcSession, Qos, ReceiveMode, ReportedState
from device_agent.log import LineFormatter

NAME = os.environ["PROBE_NAME"]
RESULT = f"probe/{NAME}/result"
ECHO = f"probe/{NAME}/echo"


def configure_logging():
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("device_agent").setLevel(logging.DEBUG)


def outcome(op, started, result=None, error=None):
    entry = {"op": op, "ok": error is None, "elapsed_s": round(time.monotonic() - started, 3)}
    if error is None:
        entry["result"] = result
        return entry
    cause = error.__cause__
    entry.update(
        error=type(error).__name__,
        families=[c.__name__ for c in type(error).__mro__],
        message=str(error),
        cause=type(cause).__name__ if cause is not None else None,
    )
    logging.getLogger("probe").info(
        "probe.check_failed",
        extra={"op": op, "error": type(error).__name__, "detail": str(error), "cause": repr(cause)},
    )
    return entry


class Probe:
    def __init__(self, ipc):
        self.ipc = ipc
        self.echoes = []
        self.timeouts_while_down = []
        self.config_events = []
        self.status_events = []
        self.tasks = set()

    async def echo(self, via, payload):
        await self.ipc.publish_to_iot_core(
            ECHO, json.dumps({"via": via, "payload": payload}), qos=Qos.AT_MOST_ONCE
        )

    def on_local(self, message):
        # A sync handler; it raises on purpose for {"boom": true}: the stream must survive it.
        if isinstance(message.payload, dict) and message.payload.get("boom"):
            raise RuntimeError("handler failure on purpose")
        payload = (
            {"binary": base64.b64encode(message.payload).decode()} if message.binary else message.payload
        )
        self.echoes.append(("local", payload))
        task = asyncio.get_running_loop().create_task(self.echo("local", payload))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def on_iot(self, message):
        # An async handler, awaited by the session's task for this stream.
        payload = message.payload.decode()
        if payload == "boom":
            raise RuntimeError("async handler failure on purpose")
        await self.echo("iot", payload)

    def on_config(self, update):
        self.config_events.append(list(update.key_path))

    def on_status(self, status):
        self.status_events.append(status.connected)

    async def watch_for_downtime(self, timeout):
        # When the connection is down, a call with a short timeout must end in TimedOutError.
        while True:
            if not self.ipc.connected:
                started = time.monotonic()
                try:
                    await self.ipc.get_configuration(["steps"], timeout=timeout)
                    self.timeouts_while_down.append(outcome("call_while_down", started, "answered"))
                except Exception as exc:
                    self.timeouts_while_down.append(outcome("call_while_down", started, error=exc))
                while not self.ipc.connected:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.02)


async def run_check(probe, check):
    ipc = probe.ipc
    op = check["op"]
    args = check.get("args", {})
    started = time.monotonic()
    try:
        result = None
        if op == "publish":
            await ipc.publish(args["topic"], args.get("message", {}))
        elif op == "publish_binary":
            await ipc.publish_binary(args["topic"], base64.b64decode(args["binary"]))
        elif op == "publish_to_iot_core":
            await ipc.publish_to_iot_core(
                args["topic"], args.get("payload", "{}"), qos=Qos(args.get("qos", 1))
            )
        elif op == "get_configuration":
            result = await ipc.get_configuration(args.get("key_path", []), component=args.get("component"))
        elif op == "update_configuration":
            await ipc.update_configuration(args["value"], key_path=args.get("key_path", []))
        elif op == "update_state":
            await ipc.update_state(ReportedState(args["state"]))
        elif op == "subscribe_to_connection_status":
            await ipc.subscribe_to_connection_status(probe.on_status)
        elif op == "subscribe":
            await ipc.subscribe(
                args["topic"],
                probe.on_local,
                receive_mode=ReceiveMode(args.get("mode", "RECEIVE_ALL_MESSAGES")),
            )
        elif op == "get_secret":
            secret = await ipc.get_secret(args["secret_id"])
            result = {"repr": repr(secret), "str": str(secret), "text_length": len(secret.text or "")}
        elif op == "list_components":
            result = sorted(c.name for c in await ipc.list_components())
        elif op == "restart_component":
            result = await ipc.restart_component(args["component"])
        elif op == "sleep":
            await asyncio.sleep(args["seconds"])
        else:
            raise ValueError(f"unknown check {op}")
        entry = outcome(op, started, result)
    except Exception as exc:
        entry = outcome(op, started, error=exc)
    entry["label"] = check.get("label", op)
    return entry


async def main():
    configure_logging()
    ask = asyncio.Event()
    commands = []
    started = time.monotonic()
    async with IpcSession(timeout=5.0) as ipc:
        opened_s = round(time.monotonic() - started, 3)
        probe = Probe(ipc)
        config = await ipc.get_configuration()
        await ipc.subscribe(f"probe/{NAME}/in", probe.on_local)
        await ipc.subscribe_to_iot_core(f"probe/{NAME}/cloud", probe.on_iot)
        await ipc.subscribe_to_configuration_updates(probe.on_config, key_path=["watched"])

        def on_ask(message):
            commands.append(message.payload)
            ask.set()

        await ipc.subscribe(f"probe/{NAME}/ask", on_ask)
        results = [await run_check(probe, check) for check in config.get("checks", [])]
        watcher = asyncio.get_running_loop().create_task(
            probe.watch_for_downtime(config.get("down_timeout", 0.3))
        )

        async def report():
            await ipc.publish_to_iot_core(
                RESULT,
                json.dumps(
                    {
                        "results": results,
                        "opened_s": opened_s,
                        "thing": ipc.thing_name,
                        "echoes": probe.echoes,
                        "config_events": probe.config_events,
                        "status_events": probe.status_events,
                        "timeouts_while_down": probe.timeouts_while_down,
                    }
                ),
            )

        await report()
        while True:
            await ask.wait()
            ask.clear()
            while commands:
                command = commands.pop(0)
                if command.get("cmd") == "report":
                    await report()
                elif command.get("cmd") == "exit":
                    watcher.cancel()
                    break
            else:
                continue
            break
        closing = time.monotonic()
    close_s = round(time.monotonic() - closing, 3)
    # A last line for the test: how long close took, and the threads left. The OS's list is the truth:
    # `threading` keeps a "Dummy" entry for a native thread that once called into Python, even after it ended.
    threads = list(Path("/proc/self/task").iterdir())
    print(
        json.dumps(
            {"close_s": close_s, "os_threads": len(threads), "python_threads": threading.active_count()}
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
