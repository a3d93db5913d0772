"""A test component written on the shared runtime, the way the suite's components are.

It reports what it sees to IoT Core (`probe/<name>/...`): its configuration at start and on every change,
and, when stopping, whether its in-flight work finished. A local message on `probe/<name>/poke` makes it
write the given value into its own configuration (to deliver a bad value past deployment validation).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass

from device_agent.component import Component, Context, run_component
from device_agent.config import setting
from device_agent.errors import ConfigurationError
from device_agent.ipc_types import LocalMessage

NAME = os.environ["PROBE_NAME"]


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    interval_seconds: float = setting(1.0, minimum=0.05, maximum=60)
    heartbeat_interval_seconds: float = setting(0.5, minimum=0.1, maximum=600)
    work_seconds: float = setting(0.5, minimum=0, maximum=30)
    label: str = setting("first", max_length=32)
    low: int = setting(1, minimum=0, maximum=100)
    high: int = setting(10, minimum=0, maximum=100)


class Probe(Component[ProbeConfig]):
    name = NAME
    config_model = ProbeConfig

    def check(self, config: ProbeConfig) -> None:
        if config.low >= config.high:
            raise ConfigurationError(("low",), f"must be below high ({config.high}), got {config.low}")

    async def report(self, ctx: Context[ProbeConfig], kind: str, body: dict[str, object]) -> None:
        await ctx.ipc.publish_to_iot_core(f"probe/{NAME}/{kind}", json.dumps({"pid": os.getpid(), **body}))

    async def start(self, ctx: Context[ProbeConfig]) -> None:
        async def poke(message: LocalMessage) -> None:
            await ctx.ipc.update_configuration(message.payload)

        await ctx.ipc.subscribe(f"probe/{NAME}/poke", poke)
        await self.report(ctx, "config", {"label": ctx.config.label, "interval": ctx.config.interval_seconds})

    async def on_config(self, ctx: Context[ProbeConfig], old: ProbeConfig, new: ProbeConfig) -> None:
        await self.report(
            ctx, "config", {"label": new.label, "interval": new.interval_seconds, "was": old.label}
        )

    async def run(self, ctx: Context[ProbeConfig]) -> None:
        while not await ctx.sleep(ctx.config.interval_seconds):
            pass
        # In-flight work at shutdown: finish it inside the grace period, then say so.
        await asyncio.sleep(ctx.config.work_seconds)
        await self.report(ctx, "stopped", {"finished": True})


if __name__ == "__main__":
    run_component(Probe)
