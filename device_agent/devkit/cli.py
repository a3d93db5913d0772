"""`gg-virtual`: run a virtual device, and talk to a running one, with commands named like the Greengrass CLI.

    gg-virtual nucleus --root DIR --recipe-dir DIR --artifact-dir DIR [--merge NAME=VERSION ...]
                       [--update-config JSON] [--thing-name NAME] [--secrets FILE]
                       [--with-cli] [--skip-install]
                       [--iot-endpoint URL [--iot-ca F --iot-cert F --iot-key F]] [--duration SECONDS]
    gg-virtual component list|restart NAME|stop NAME      --root DIR
    gg-virtual deployment create [--recipe-dir DIR --artifact-dir DIR] [--merge NAME=VERSION ...]
                                 [--remove NAME ...] [--update-config JSON]   --root DIR
    gg-virtual iot publish TOPIC PAYLOAD | iot offline | iot online            --root DIR
    gg-virtual logs [--component NAME] [--follow] [--lines N]                   --root DIR
    gg-virtual fleet up|status|down|chaos ...      a virtual fleet (device_agent/devkit/fleet/cli.py)
    gg-virtual recipe lint FILE... [--no-models]   the recipe lint (device_agent/devkit/recipe_lint.py)

`--root` defaults to $GG_VIRTUAL_ROOT, then `.virtual-device` in the current directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from device_agent.devkit.errors import DevkitError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _default_root() -> Path:
    return Path(os.environ.get("GG_VIRTUAL_ROOT", ".virtual-device"))


def _merge_arg(value: str) -> tuple[str, str]:
    name, sep, version = value.partition("=")
    if not name or (sep and not version):
        msg = f"expected NAME=VERSION, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return name, version


def _json_arg(value: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(value[1:]).read_text() if value.startswith("@") else value)
    except (OSError, ValueError) as exc:
        msg = f"not valid JSON (or @file): {exc}"
        raise argparse.ArgumentTypeError(msg) from exc
    if not isinstance(document, dict):
        msg = "expected a JSON object"
        raise argparse.ArgumentTypeError(msg)
    return document


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gg-virtual", description="A virtual Greengrass v2 device.")
    parser.add_argument("--root", type=Path, default=None, help="the virtual device's root directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the nucleus log on stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    nucleus = commands.add_parser("nucleus", help="run a virtual device in the foreground")
    nucleus.add_argument("--recipe-dir", type=Path, required=True)
    nucleus.add_argument("--artifact-dir", type=Path, default=None)
    nucleus.add_argument("--merge", type=_merge_arg, action="append", default=[], metavar="NAME=VERSION")
    nucleus.add_argument("--update-config", type=_json_arg, default=None, metavar="JSON")
    nucleus.add_argument("--thing-name", default="virtual-device")
    nucleus.add_argument("--region", default="us-east-1")
    nucleus.add_argument("--secrets", type=Path, default=None, metavar="FILE")
    nucleus.add_argument("--with-cli", action="store_true", help="as if aws.greengrass.Cli were deployed")
    nucleus.add_argument("--skip-install", action="store_true", help="do not run Install steps")
    nucleus.add_argument(
        "--iot-endpoint", default=None, metavar="URL", help="mqtt://127.0.0.1:PORT or mqtts://HOST:PORT"
    )
    nucleus.add_argument("--iot-ca", type=Path, default=None)
    nucleus.add_argument("--iot-cert", type=Path, default=None)
    nucleus.add_argument("--iot-key", type=Path, default=None)
    nucleus.add_argument("--interpolate-component-configuration", action="store_true")
    nucleus.add_argument("--duration", type=float, default=None, help="stop by itself after SECONDS")

    component = commands.add_parser("component", help="list, restart or stop components")
    component_commands = component.add_subparsers(dest="action", required=True)
    component_commands.add_parser("list")
    for action in ("restart", "stop"):
        sub = component_commands.add_parser(action)
        sub.add_argument("name")

    deployment = commands.add_parser("deployment", help="create a local deployment")
    deployment_commands = deployment.add_subparsers(dest="action", required=True)
    create = deployment_commands.add_parser("create")
    create.add_argument("--recipe-dir", type=Path, default=None)
    create.add_argument("--artifact-dir", type=Path, default=None)
    create.add_argument("--merge", type=_merge_arg, action="append", default=[], metavar="NAME=VERSION")
    create.add_argument("--remove", action="append", default=[], metavar="NAME")
    create.add_argument("--update-config", type=_json_arg, default=None, metavar="JSON")

    iot = commands.add_parser("iot", help="the cloud side of the loopback")
    iot_commands = iot.add_subparsers(dest="action", required=True)
    publish = iot_commands.add_parser("publish", help="send a cloud-to-device message")
    publish.add_argument("topic")
    publish.add_argument("payload")
    publish.add_argument("--qos", type=int, choices=(0, 1), default=1)
    iot_commands.add_parser("offline")
    iot_commands.add_parser("online")

    logs = commands.add_parser("logs", help="show the nucleus and component logs")
    logs.add_argument("--component", default=None)
    logs.add_argument("--follow", action="store_true")
    logs.add_argument("--lines", type=int, default=50)

    from device_agent.devkit import recipe_lint  # noqa: PLC0415 - its imports only when parsing

    recipe_lint.add_parser(commands)
    from device_agent.devkit.fleet import cli as fleet_cli  # noqa: PLC0415 - its imports only when parsing

    fleet_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root: Path = args.root or _default_root()
    try:
        match args.command:
            case "nucleus":
                return _run_nucleus(args, root)
            case "logs":
                return _logs(root, args.component, follow=args.follow, lines=args.lines)
            case "recipe":
                from device_agent.devkit import recipe_lint  # noqa: PLC0415

                return recipe_lint.run(args)
            case "fleet":
                from device_agent.devkit.fleet import cli as fleet_cli  # noqa: PLC0415

                return fleet_cli.run(args)
            case _:
                return _remote(args, root)
    except DevkitError as exc:
        print(f"gg-virtual: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


def _remote(args: argparse.Namespace, root: Path) -> int:
    from device_agent.devkit.control import call  # noqa: PLC0415

    match (args.command, args.action):
        case ("component", "list"):
            status = call(root, "component.list")
            for item in status["components"]:
                print(f"{item['name']:<48} {item['version']:<12} {item['state']}")
            return EXIT_OK
        case ("component", action):
            print(call(root, f"component.{action}", name=args.name))
            return EXIT_OK
        case ("deployment", "create"):
            result = call(
                root,
                "deployment.create",
                recipeDir=str(args.recipe_dir.resolve()) if args.recipe_dir else None,
                artifactDir=str(args.artifact_dir.resolve()) if args.artifact_dir else None,
                merge=dict(args.merge),
                remove=args.remove,
                updateConfig=args.update_config or {},
            )
            print(json.dumps(result))
            return EXIT_OK if result["status"] == "SUCCEEDED" else EXIT_FAILED
        case ("iot", "publish"):
            print(call(root, "iot.publish", topic=args.topic, payload=args.payload, qos=args.qos))
            return EXIT_OK
        case ("iot", action):
            print(call(root, f"iot.{action}"))
            return EXIT_OK
    return EXIT_USAGE


def _run_nucleus(args: argparse.Namespace, root: Path) -> int:
    from device_agent.devkit.deployment import DeploymentRequest  # noqa: PLC0415
    from device_agent.devkit.nucleus import IotBridgeSettings, Nucleus, NucleusOptions  # noqa: PLC0415

    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bridge = None
    if args.iot_endpoint:
        bridge = IotBridgeSettings(
            endpoint=args.iot_endpoint, ca_file=args.iot_ca, cert_file=args.iot_cert, key_file=args.iot_key
        )
    options = NucleusOptions(
        root=root,
        thing_name=args.thing_name,
        region=args.region,
        with_cli=args.with_cli,
        skip_install=args.skip_install,
        secrets_file=args.secrets,
        iot_bridge=bridge,
        interpolate_component_configuration=args.interpolate_component_configuration,
    )
    request = DeploymentRequest(
        recipe_dir=args.recipe_dir.resolve(),
        artifact_dir=args.artifact_dir.resolve() if args.artifact_dir else None,
        merge=dict(args.merge),
        update_config=args.update_config or {},
    )

    async def run() -> int:
        async with Nucleus(options) as nucleus:
            if not request.merge:
                nucleus.deployer.add_recipes(args.recipe_dir.resolve(), request.artifact_dir)
                names = nucleus.deployer.catalog_names()
                request_all = DeploymentRequest(
                    merge=dict.fromkeys(names, ""),
                    update_config=request.update_config,
                    artifact_dir=request.artifact_dir,
                )
                result = await nucleus.deploy(request_all)
            else:
                result = await nucleus.deploy(request)
            print(f"gg-virtual: deployment {result.status.lower()} {result.reason}".rstrip(), file=sys.stderr)
            print(f"gg-virtual: running on {root}; logs in {root / 'logs'}; Ctrl-C to stop", file=sys.stderr)
            await _wait_for_stop(args.duration)
        return EXIT_OK

    return asyncio.run(run())


async def _wait_for_stop(duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        if duration is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=duration)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _logs(root: Path, component: str | None, *, follow: bool, lines: int) -> int:
    path = root / "logs" / (f"{component}.log" if component else "greengrass.log")
    if not path.exists():
        print(f"gg-virtual: no log at {path}", file=sys.stderr)
        return EXIT_FAILED
    with path.open(encoding="utf-8", errors="replace") as log:
        for line in log.readlines()[-lines:]:
            print(line, end="")
        while follow:
            line = log.readline()
            if line:
                print(line, end="", flush=True)
            else:
                time.sleep(0.25)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
