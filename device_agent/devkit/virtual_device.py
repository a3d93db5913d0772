"""The main job: one virtual device running every component in `recipes/`, with a live status line each.

The components are built first (`device_agent.devkit.build`, into `greengrass-build/`) and deployed from
there, as `greengrass-cli deployment create --recipeDir --artifactDir` deploys them on a device. When
`recipes/` holds no recipe yet, it runs the example components in `examples/`. Without `--root` the device
lives in a temporary directory that is removed at the end; with `--root DIR` its files are kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from device_agent.devkit.build import BUILD_DIR, build_components
from device_agent.devkit.deployment import DeploymentRequest
from device_agent.devkit.errors import DevkitError
from device_agent.devkit.nucleus import Nucleus, NucleusOptions
from device_agent.devkit.recipes import RECIPE_SUFFIXES
from device_agent.errors import DeviceAgentError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class _Source:
    recipe_dir: Path
    artifact_dir: Path


def _source(project: Path) -> _Source:
    """The suite, built into greengrass-build/, when recipes/ has any recipe; else the examples."""
    suite = project / "recipes"
    if suite.is_dir() and any(p.suffix.lower() in RECIPE_SUFFIXES for p in suite.iterdir()):
        out = project / BUILD_DIR
        built = build_components(project, out)
        print(f"built {len(built)} component{'' if len(built) == 1 else 's'} into {BUILD_DIR}/", flush=True)
        return _Source(out / "recipes", out / "artifacts")
    return _Source(project / "examples" / "recipes", project / "examples" / "artifacts")


def _status_lines(nucleus: Nucleus, started: float) -> list[str]:
    published = nucleus.iot.published
    lines = [
        (
            f"virtual device {nucleus.thing_name}: up {time.monotonic() - started:5.0f}s, "
            f"IoT Core {'online' if nucleus.iot.online else 'OFFLINE'}, {len(published)} messages sent, "
            f"{nucleus.iot.spooled} spooled"
        )
    ]
    for info in nucleus.component_infos():
        sent = sum(1 for record in published if record.component == info.name)
        lines.append(f"  {info.name:<44} {info.version:<10} {info.state:<9} {sent:>6} sent")
    return lines


async def _run(args: argparse.Namespace, source: _Source, root: Path) -> int:
    recipe_dir, artifact_dir = source.recipe_dir, source.artifact_dir
    # As the suite's deployment templates configure the nucleus: `{iot:thingName}` in recipes' access control
    # pins each component to the device's own IoT Core topics (interpolateComponentConfiguration).
    options = NucleusOptions(
        root=root, thing_name=args.thing_name, with_cli=True, interpolate_component_configuration=True
    )
    async with Nucleus(options) as nucleus:
        nucleus.deployer.add_recipes(recipe_dir, artifact_dir)
        names = nucleus.deployer.catalog_names()
        print(f"deploying {len(names)} components from {recipe_dir.relative_to(args.project)}/", flush=True)
        result = await nucleus.deploy(
            DeploymentRequest(artifact_dir=artifact_dir, merge=dict.fromkeys(names, ""))
        )
        if not result.succeeded:
            print(f"deployment failed: {result.reason}", file=sys.stderr)
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        started = time.monotonic()
        deadline = None if args.duration is None else started + args.duration
        interactive = sys.stdout.isatty()
        drawn = 0
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            lines = _status_lines(nucleus, started)
            if interactive:
                sys.stdout.write(("\x1b[F\x1b[2K" * drawn) + "\n".join(lines) + "\n")
                drawn = len(lines)
            else:
                sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0 if interactive else 5.0)
        print(f"stopping; logs in {root / 'logs'}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="virtual-device", description=__doc__)
    parser.add_argument("--duration", type=float, default=None, help="stop by itself after SECONDS")
    parser.add_argument("--root", type=Path, default=None, help="keep the device's files in DIR")
    parser.add_argument("--thing-name", default="virtual-device-1")
    parser.add_argument("--project", type=Path, default=PROJECT_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        source = _source(args.project)
    except (DevkitError, DeviceAgentError) as e:
        print(f"build failed: {e}", file=sys.stderr)
        return 1
    if args.root is not None:
        return asyncio.run(_run(args, source, args.root))
    with tempfile.TemporaryDirectory(prefix="virtual-device-") as tmp:
        return asyncio.run(_run(args, source, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
