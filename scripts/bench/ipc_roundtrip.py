"""Benchmark: request round trips per second through the local nucleus, with the real awsiotsdk client.

A component process (launched from a recipe, as on a device) measures, in one run:
- PublishToTopic to its own subscription: publish, then wait for the event to come back (one round trip);
- GetConfiguration: request and response;
- the baseline: the same JSON request/response over a bare Unix socket to an echo server in this process,
  the floor any local IPC pays. Results are ratios against it, because machines here are shared and noisy.

Usage: python scripts/bench/ipc_roundtrip.py [--seconds 5]   (prints one result line)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import textwrap
from pathlib import Path

from device_agent.devkit.deployment import DeploymentRequest
from device_agent.devkit.nucleus import Nucleus, NucleusOptions

COMPONENT = "com.deviceagent.bench.IpcRoundTrip"

RECIPE = {
    "RecipeFormatVersion": "2020-01-25",
    "ComponentName": COMPONENT,
    "ComponentVersion": "1.0.0",
    "ComponentConfiguration": {
        "DefaultConfiguration": {
            "seconds": 5,
            "accessControl": {
                "aws.greengrass.ipc.pubsub": {
                    f"{COMPONENT}:pubsub:1": {
                        "operations": ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"],
                        "resources": ["bench/echo"],
                    }
                },
                "aws.greengrass.ipc.mqttproxy": {
                    f"{COMPONENT}:mqttproxy:1": {
                        "operations": ["aws.greengrass#PublishToIoTCore"],
                        "resources": ["bench/result"],
                    }
                },
            },
        }
    },
    "Manifests": [
        {
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": "python3 -u {artifacts:path}/bench.py"},
            "Artifacts": [{"URI": f"s3://bench/{COMPONENT}/1.0.0/bench.py"}],
        }
    ],
}

CODE = textwrap.dedent(
    """
    import json, os, socket, threading, time
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage, QOS

    client = GreengrassCoreIPCClientV2()
    seconds = float(client.get_configuration(key_path=["seconds"]).value["seconds"])
    body = {"sample": "x" * 64, "n": 0}

    def rate(step):
        for _ in range(50):
            step()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step(); count += 1
        return count / (time.perf_counter() - start)

    got = threading.Event()
    client.subscribe_to_topic(topic="bench/echo", on_stream_event=lambda e: got.set())
    message = PublishMessage(json_message=JsonMessage(message=body))
    def pubsub():
        got.clear()
        client.publish_to_topic(topic="bench/echo", publish_message=message)
        got.wait(5)

    def get_config():
        client.get_configuration(key_path=["seconds"])

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["BENCH_ECHO_SOCKET"])
    reader = sock.makefile("rb")
    line = (json.dumps(body) + "\\n").encode()
    def echo():
        sock.sendall(line)
        reader.readline()

    result = {
        "baseline_echo_rps": rate(echo),
        "publish_subscribe_rps": rate(pubsub),
        "get_configuration_rps": rate(get_config),
    }
    payload = json.dumps(result).encode()
    client.publish_to_iot_core(topic_name="bench/result", qos=QOS.AT_LEAST_ONCE, payload=payload)
    time.sleep(3600)
    """
)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


async def run(seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        base = Path(tmp)
        recipes = base / "recipes"
        artifacts = base / "artifacts" / COMPONENT / "1.0.0"
        recipes.mkdir()
        artifacts.mkdir(parents=True)
        RECIPE["ComponentConfiguration"]["DefaultConfiguration"]["seconds"] = seconds  # type: ignore[index]
        (recipes / f"{COMPONENT}.json").write_text(json.dumps(RECIPE))
        (artifacts / "bench.py").write_text(CODE)
        echo_path = base / "echo.socket"
        echo = await asyncio.start_unix_server(_echo, path=str(echo_path))
        options = NucleusOptions(root=base / "root", extra_env={"BENCH_ECHO_SOCKET": str(echo_path)})
        try:
            async with Nucleus(options) as nucleus:
                result = await nucleus.deploy(
                    DeploymentRequest(
                        recipe_dir=recipes, artifact_dir=base / "artifacts", merge={COMPONENT: "1.0.0"}
                    )
                )
                if not result.succeeded:
                    raise SystemExit(f"deployment failed: {result.reason}")
                deadline = asyncio.get_running_loop().time() + seconds * 3 + 60
                while not nucleus.iot.published:
                    if asyncio.get_running_loop().time() > deadline:
                        raise SystemExit("benchmark component did not report")
                    await asyncio.sleep(0.1)
                return dict(json.loads(nucleus.iot.published[0].payload))
        finally:
            echo.close()
            await echo.wait_closed()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per case")
    args = parser.parse_args()
    r = asyncio.run(run(args.seconds))
    base = r["baseline_echo_rps"]
    print(
        f"ipc_roundtrip: publish_subscribe {r['publish_subscribe_rps']:.0f}/s "
        f"({r['publish_subscribe_rps'] / base:.3f} of bare socket), "
        f"get_configuration {r['get_configuration_rps']:.0f}/s "
        f"({r['get_configuration_rps'] / base:.3f} of bare socket), "
        f"bare socket echo {base:.0f}/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
