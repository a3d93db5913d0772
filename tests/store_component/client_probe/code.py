"""A test client of the store, written as the suite's components are: the runtime and `StoreClient`.

Commands arrive on the local topic `storeclient/<name>/do` ({"id", "op", "namespace"?, "key"?, "value"?,
"values"?, "ttl"?, "maxRecords"?, "upTo"?, "timeout"?}); each result goes to IoT Core on
`storeclient/<name>/result` as {"id", "ok", "result"} or {"id", "ok": false, "error": <exception class>,
"cause": <class of its cause, e.g. the nucleus's error>, "message"}. The op `publish_raw` publishes
"document" on "topic" as it is, past the client library (a component that writes its own requests).
Values are UTF-8 text in commands and results, to keep the tests readable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from device_agent.component import Component, Context, run_component
from device_agent.config import setting
from device_agent.errors import DeviceAgentError
from device_agent.ipc_types import LocalMessage
from device_agent.store_client import StoreClient

NAME = os.environ["CLIENT_NAME"]
NAMESPACE = os.environ["CLIENT_NAMESPACE"]


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    heartbeat_interval_seconds: float = setting(default=30.0, minimum=0.1)


class ClientProbe(Component[ClientConfig]):
    name = NAME
    config_model = ClientConfig

    def __init__(self) -> None:
        self.clients: dict[tuple[str, float], StoreClient] = {}

    async def run(self, ctx: Context[ClientConfig]) -> None:
        async def on_command(message: LocalMessage) -> None:
            command = message.payload
            try:
                result = await self.execute(ctx, command)
                answer: dict[str, Any] = {"id": command.get("id"), "ok": True, "result": result}
            except DeviceAgentError as exc:
                answer = {
                    "id": command.get("id"),
                    "ok": False,
                    "error": type(exc).__name__,
                    "cause": type(exc.__cause__).__name__ if exc.__cause__ is not None else None,
                    "message": str(exc),
                }
            await ctx.ipc.publish_to_iot_core(f"storeclient/{NAME}/result", json.dumps(answer).encode())

        await ctx.ipc.subscribe(f"storeclient/{NAME}/do", on_command)
        ready = json.dumps({"id": "ready", "ok": True}).encode()
        await ctx.ipc.publish_to_iot_core(f"storeclient/{NAME}/result", ready)
        await ctx.stopping.wait()

    async def execute(self, ctx: Context[ClientConfig], command: dict[str, Any]) -> Any:
        if command["op"] == "publish_raw":  # a request of its own making, past the client library
            await ctx.ipc.publish(command["topic"], command["document"])
            return None
        namespace = command.get("namespace", NAMESPACE)
        timeout = float(command.get("timeout", 3.0))
        client = self.clients.get((namespace, timeout))
        if client is None:
            client = StoreClient(ctx.ipc, namespace, timeout=timeout)
            await client.open()
            self.clients[(namespace, timeout)] = client
        op = command["op"]
        ttl = command.get("ttl")
        if op == "put":
            await client.put(command["key"], command["value"].encode(), ttl=ttl)
            return None
        if op == "get":
            return (await client.get(command["key"])).decode()
        if op == "delete":
            return await client.delete(command["key"])
        if op == "keys":
            return await client.keys()
        if op == "append":
            return await client.append([v.encode() for v in command["values"]], ttl=ttl)
        if op == "read":
            entries = await client.read_batch(max_records=command.get("maxRecords", 100))
            return [[e.seq, e.value.decode()] for e in entries]
        if op == "ack":
            return await client.ack(command["upTo"])
        if op == "stats":
            usage = await client.stats()
            return usage.__dict__
        if op == "wipe":
            await client.wipe()
            return None
        raise ValueError(op)


if __name__ == "__main__":
    run_component(ClientProbe)
