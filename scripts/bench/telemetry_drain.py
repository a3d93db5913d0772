"""Benchmark: how long a day of telemetry backlog takes to deliver once connected, and its bytes per sample.

On a virtual device (built as it ships, `interpolateComponentConfiguration` on), with the link offline:
- the store's `telemetry-spool` namespace is filled through the store's own protocol (local pub/sub, as the
  publisher does) with `--samples` real sample records (default 8,640: a day at 10 s): real
  `device_agent.metrics.Sampler` samples at the default configuration (taken in this process while the
  store runs, so `processes` finds the store but not the publisher), encoded with
  `telemetry_publisher.payload.encode_sample`, stamped 10 s apart over the past day. Their `seq` starts at
  `SEQ_BASE`, far above the publisher's own numbers, so the last one is unambiguous;
- the telemetry publisher is deployed at its default configuration (4 messages/s drain) and starts with
  that backlog; then the device goes online and the clock runs until the last pre-filled `seq` is in the
  IoT Core log.
The baseline, in the same run: a bare component with the real `GreengrassCoreIPCClientV2` publishes as many
messages of the same mean size (QoS 1, one after another) to IoT Core through the same nucleus.

Usage: python scripts/bench/telemetry_drain.py [--samples 8640]   (prints one result line per figure)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from device_agent import store_protocol as protocol
from device_agent.devkit.build import build_components
from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.services.iotcore import PublishedRecord
from device_agent.devkit.testing import VirtualDevice, virtual_device
from device_agent.metrics import Sampler

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "components" / "telemetry_publisher"))

from telemetry_publisher.config import TelemetryConfig  # noqa: E402 - the component's package, as in tests
from telemetry_publisher.payload import encode_sample  # noqa: E402

STORE = "com.deviceagent.EncryptedStore"
TELEMETRY = "com.deviceagent.TelemetryPublisher"
BARE = "com.deviceagent.bench.BarePublisher"
SPOOL = "telemetry-spool"
TOPIC = "dt/device-agent/+/telemetry"
BARE_TOPIC = "bench/drain"
SEQ_BASE = 1_000_000_000
INTERVAL = 10.0
APPEND_CHUNK = 100  # records per store request
GOAL_SECONDS = 60.0

BARE_RECIPE = {
    "RecipeFormatVersion": "2020-01-25",
    "ComponentName": BARE,
    "ComponentVersion": "1.0.0",
    "ComponentConfiguration": {
        "DefaultConfiguration": {
            "messages": 1,
            "bytes": 1,
            "accessControl": {
                "aws.greengrass.ipc.mqttproxy": {
                    f"{BARE}:mqttproxy:1": {
                        "operations": ["aws.greengrass#PublishToIoTCore"],
                        "resources": [BARE_TOPIC, f"{BARE_TOPIC}/done"],
                    }
                }
            },
        }
    },
    "Manifests": [
        {
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": "exec python3 -u {artifacts:path}/bare.py"},
            "Artifacts": [{"URI": f"s3://bench/{BARE}/1.0.0/bare.py"}],
        }
    ],
}

BARE_CODE = textwrap.dedent(
    """
    import json, time
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import QOS

    client = GreengrassCoreIPCClientV2()
    config = client.get_configuration(key_path=[]).value
    payload = b"x" * int(config["bytes"])
    start = time.perf_counter()
    for _ in range(int(config["messages"])):
        client.publish_to_iot_core(topic_name="bench/drain", qos=QOS.AT_LEAST_ONCE, payload=payload)
    elapsed = time.perf_counter() - start
    done = json.dumps({"seconds": elapsed}).encode()
    client.publish_to_iot_core(topic_name="bench/drain/done", qos=QOS.AT_LEAST_ONCE, payload=done)
    time.sleep(3600)
    """
)


def _stage(base: Path) -> tuple[Path, Path, Path]:
    """The store and the publisher as built from this tree; the bare publisher in a folder of its own."""
    built = base / "greengrass-build"
    build_components(PROJECT, built, [STORE, TELEMETRY])
    recipes, bare_recipes, artifacts = base / "recipes", base / "bare-recipes", base / "artifacts"
    recipes.mkdir()
    bare_recipes.mkdir()
    for name in (STORE, TELEMETRY):
        shutil.copy(built / "recipes" / f"{name}.yaml", recipes / f"{name}.yaml")
        shutil.copytree(built / "artifacts" / name, artifacts / name)
    (bare_recipes / f"{BARE}.json").write_text(json.dumps(BARE_RECIPE))
    (artifacts / BARE / "1.0.0").mkdir(parents=True)
    (artifacts / BARE / "1.0.0" / "bare.py").write_text(BARE_CODE)
    return recipes, bare_recipes, artifacts


def day_of_samples(count: int) -> list[bytes]:
    """`count` real sample records, 10 s apart, ending now."""
    sampler = Sampler(TelemetryConfig().sampler_settings())
    now = time.time()
    records = []
    for index in range(count):
        sample = sampler.sample()
        sample["at"] = round(now - (count - index) * INTERVAL, 3)
        records.append(encode_sample(SEQ_BASE + index + 1, sample))
    return records


class SpoolWriter:
    """Appends to the store's `telemetry-spool` queue over local pub/sub, as `StoreClient` would."""

    def __init__(self, device: VirtualDevice) -> None:
        self.device = device
        self.ids = itertools.count(1)
        self.pending: dict[str, asyncio.Future[protocol.Response]] = {}
        device.nucleus.pubsub.listeners.append(self._on_message)

    def _on_message(self, topic: str, event: dict[str, Any], _publisher: str | None) -> None:
        if topic != protocol.response_topic(SPOOL):
            return
        message = event.get("jsonMessage", {}).get("message")
        response = protocol.parse_response(message)
        if response is not None and (future := self.pending.get(response.id)) and not future.done():
            future.set_result(response)

    async def append(self, records: list[bytes]) -> None:
        request_id = f"bench-{next(self.ids)}"
        future: asyncio.Future[protocol.Response] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        values = [protocol.encode_value(r) for r in records]
        document = protocol.request_document(request_id, protocol.Op.APPEND, values=values)
        while not future.done():  # resent until answered: the store answers a repeat from its replay cache
            self.device.publish_local(protocol.request_topic(SPOOL), document)
            await asyncio.wait({future}, timeout=2.0)
        response = future.result()
        if not response.ok:
            msg = f"the store refused an append: {response.code}: {response.message}"
            raise SystemExit(msg)


class DrainLog:
    """What reaches IoT Core on the telemetry topic, each message read once as it arrives."""

    def __init__(self, last_seq: int) -> None:
        self.last_seq = last_seq
        self.backfill: list[tuple[int, dict[str, Any]]] = []  # (payload bytes, message with its seqs)
        self.times: list[float] = []  # arrival of each backfill message
        self.finished = asyncio.Event()

    def on_published(self, record: PublishedRecord) -> None:
        if not record.topic.startswith("dt/"):
            return
        message = json.loads(record.payload)
        if not message.get("backfill"):
            return  # a live sample
        seqs = [sample["seq"] for sample in message["samples"]]
        self.backfill.append((len(record.payload), {"samples": seqs}))
        self.times.append(time.monotonic())
        if self.last_seq in seqs:
            self.finished.set()


async def run(samples: int) -> dict[str, float]:
    last_seq = SEQ_BASE + samples
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        base = Path(tmp)
        recipes, bare_recipes, artifacts = _stage(base)
        async with virtual_device(
            base / "root",
            recipe_dir=recipes,
            artifact_dir=artifacts,
            merge={STORE: ""},
            interpolate_component_configuration=True,
        ) as device:
            await device.wait_for_state(STORE, ComponentState.RUNNING, timeout=60)
            records = day_of_samples(samples)  # now, so that the `processes` group finds the store running
            await device.go_offline()
            writer = SpoolWriter(device)
            for start in range(0, len(records), APPEND_CHUNK):
                await writer.append(records[start : start + APPEND_CHUNK])

            drain = DrainLog(last_seq)
            device.nucleus.iot.listeners.append(drain.on_published)
            result = await device.deploy(artifact_dir=artifacts, merge={TELEMETRY: ""})
            if not result.succeeded:
                raise SystemExit(f"deployment failed: {result.reason}")
            await device.wait_for_state(TELEMETRY, ComponentState.RUNNING, timeout=60)
            await asyncio.sleep(2.0)  # the publisher has opened its spool and learnt the backlog
            online_at = time.monotonic()
            await device.go_online()
            try:
                async with asyncio.timeout(20 * GOAL_SECONDS):
                    await drain.finished.wait()
            except TimeoutError:
                raise SystemExit("the backlog did not drain") from None
            backfill = drain.backfill
            carried = [s for _, m in backfill for s in m["samples"] if s > SEQ_BASE]
            payload_bytes = sum(size for size, _ in backfill)

            # The baseline: the same number of messages of the same mean size from a bare client.
            mean_bytes = payload_bytes // len(backfill)
            result = await device.deploy(
                recipe_dir=bare_recipes,
                artifact_dir=artifacts,
                merge={BARE: "1.0.0"},
                update_config={BARE: {"MERGE": {"messages": len(backfill), "bytes": mean_bytes}}},
            )
            if not result.succeeded:
                raise SystemExit(f"deployment failed: {result.reason}")
            report = await device.wait_for_published(f"{BARE_TOPIC}/done", timeout=300)
            bare_seconds = float(json.loads(report[0].payload)["seconds"])
            if len(device.published(BARE_TOPIC)) != len(backfill):
                raise SystemExit("the bare publisher's messages did not all arrive")
            return {
                "seconds": drain.times[-1] - online_at,
                "first_seconds": drain.times[0] - online_at,
                "messages": len(backfill),
                "samples": len(carried),
                "unique": len(set(carried)),
                "payload_bytes": payload_bytes,
                "record_bytes": sum(len(r) for r in records) / len(records),
                "bare_seconds": bare_seconds,
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8640, help="backlog to drain (a day at 10 s: 8640)")
    args = parser.parse_args()
    r = asyncio.run(run(args.samples))
    verdict = "met" if r["seconds"] < GOAL_SECONDS else "missed"
    print(
        f"telemetry_drain time: {r['unique']:.0f} samples in {r['messages']:.0f} messages delivered "
        f"{r['seconds']:.1f} s after going online (first backfill at {r['first_seconds']:.1f} s); "
        f"bare client, same messages and sizes: {r['bare_seconds']:.2f} s, "
        f"ratio {r['seconds'] / r['bare_seconds']:.0f}; goal < {GOAL_SECONDS:.0f} s: {verdict}"
    )
    print(
        f"telemetry_drain bytes: {r['payload_bytes'] / r['samples']:.0f} payload bytes per backfilled sample "
        f"(the record alone {r['record_bytes']:.0f}; {r['payload_bytes'] / r['messages']:.0f} per message)"
    )
    if r["samples"] != r["unique"]:
        print(f"telemetry_drain note: {r['samples'] - r['unique']:.0f} samples were delivered twice")
    return 0


if __name__ == "__main__":
    sys.exit(main())
