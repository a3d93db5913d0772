# ruff: noqa: T201 - a command-line entry point talks to people on stdout and stderr
"""`gg-virtual fleet up|status|down|chaos`: a virtual fleet from the command line (docs/virtual-fleet.md).

    gg-virtual fleet up --devices N [--reject K] [--root DIR] [--telemetry-interval S] [--health-interval S]
                        [--report-settle S] [--log-deliveries]
    gg-virtual fleet status [--json] [--root DIR]
    gg-virtual fleet chaos restart-broker | offline THING | online THING | kill-nucleus THING | revoke THING
    gg-virtual fleet down [--root DIR]

`--root` (after `fleet ACTION`, or gg-virtual's own before `fleet`) defaults to $GG_VIRTUAL_FLEET, then
`.virtual-fleet` in the current directory. `up` starts a detached
supervisor and returns once every device runs; the other commands find it through the root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from device_agent.devkit.fleet import processes
from device_agent.devkit.fleet.broker import ensure_mosquitto
from device_agent.devkit.fleet.control import fleet_call
from device_agent.devkit.fleet.layout import DEFAULT_ROOT, FleetLayout
from device_agent.devkit.fleet.spec import FleetError, FleetSpec
from device_agent.devkit.fleet.state import FleetState
from device_agent.devkit.fleet.status import fleet_status, render_table
from device_agent.devkit.fleet.verifier import verifier_installed
from device_agent.files import ensure_private_dir

EXIT_OK = 0
EXIT_FAILED = 1
_POLL_S = 0.2
CHAOS = ("restart-broker", "offline", "online", "kill-nucleus", "revoke")


def add_parser(commands: Any) -> None:
    """Register `fleet` and its subcommands on the gg-virtual parser's subcommands."""
    fleet = commands.add_parser("fleet", help="a virtual fleet: a broker with mutual TLS and N devices")
    actions = fleet.add_subparsers(dest="action", required=True)

    def with_root(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--root", dest="fleet_root", type=Path, default=None, help="the fleet's directory"
        )
        return parser

    up = with_root(actions.add_parser("up", help="create (or reuse) the fleet and start it"))
    up.add_argument("--devices", type=int, default=None, help="how many devices (a new fleet needs it)")
    up.add_argument(
        "--reject",
        type=int,
        default=0,
        help="how many devices present (and report) a certificate not registered for their thing",
    )
    up.add_argument("--telemetry-interval", type=float, default=None, metavar="S")
    up.add_argument("--health-interval", type=float, default=None, metavar="S")
    up.add_argument("--report-settle", type=float, default=None, metavar="S", help="reporter's first wait")
    up.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every device")
    up.add_argument(
        "--log-deliveries",
        action="store_true",
        help="the broker logs each message it delivers, and to whom (broker/mosquitto.log, which grows)",
    )

    status = with_root(actions.add_parser("status", help="a table per device (or --json)"))
    status.add_argument("--json", action="store_true")
    status.add_argument("--no-components", action="store_true", help="do not ask each nucleus")

    down = with_root(actions.add_parser("down", help="stop everything the fleet started"))
    down.add_argument("--timeout", type=float, default=120.0)

    chaos = with_root(actions.add_parser("chaos", help="fault drills"))
    chaos.add_argument("drill", choices=CHAOS)
    chaos.add_argument("thing", nargs="?", default=None)


def run(args: argparse.Namespace) -> int:
    # `gg-virtual --root DIR fleet ...` works too: the top-level option, when given, names the fleet's root.
    root = args.fleet_root or getattr(args, "root", None)
    layout = FleetLayout.at(root or Path(os.environ.get("GG_VIRTUAL_FLEET", DEFAULT_ROOT)))
    try:
        match args.action:
            case "up":
                return _up(layout, args)
            case "status":
                status = fleet_status(layout, components=not args.no_components)
                print(json.dumps(status, indent=1) if args.json else render_table(status))
                return EXIT_OK
            case "down":
                return _down(layout, args.timeout)
            case "chaos":
                return _chaos(layout, args.drill, args.thing)
    except FleetError as exc:
        print(f"gg-virtual fleet: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED


def _spec(layout: FleetLayout, args: argparse.Namespace) -> FleetSpec:
    """The saved specification of an existing fleet (never overwritten), or a new one from the options."""
    if layout.spec_file.exists():
        spec = FleetSpec.load(layout.spec_file)
        if args.devices is not None and args.devices != spec.devices:
            raise FleetError(
                f"the fleet at {layout.root} has {spec.devices} devices; "
                "`fleet down` and use another --root for a different size"
            )
        return spec
    if args.devices is None:
        raise FleetError("a new fleet needs --devices N")
    spec = FleetSpec(
        devices=args.devices,
        reject=args.reject,
        telemetry_interval=args.telemetry_interval,
        health_interval=args.health_interval,
        report_settle=args.report_settle,
        log_deliveries=args.log_deliveries,
    )
    ensure_private_dir(layout.root)
    spec.save(layout.spec_file)
    return spec


def _things(args: argparse.Namespace) -> tuple[str, ...]:
    return FleetSpec(devices=args.devices).things if args.devices is not None else ()


def supervisor_running(layout: FleetLayout) -> int | None:
    """The supervisor's pid when one runs for this root."""
    try:
        state = FleetState.load(layout.state_file)
    except FleetError:
        return None
    pid = state.supervisor_pid
    return (
        pid if pid is not None and processes.alive(pid) and processes.belongs_to(pid, layout.root) else None
    )


def _up(layout: FleetLayout, args: argparse.Namespace) -> int:
    problem = layout.socket_path_problem(
        FleetSpec.load(layout.spec_file).things if layout.spec_file.exists() else _things(args)
    )
    if problem:
        raise FleetError(problem)  # before anything is written under the root
    spec = _spec(layout, args)
    if supervisor_running(layout) is not None:
        print(f"gg-virtual fleet: already up on {layout.root}", file=sys.stderr)
        print(render_table(fleet_status(layout)))
        return EXIT_OK
    ensure_mosquitto()  # in the foreground: an installation shows its progress (and may ask for sudo)
    warn_without_verifier()
    ensure_private_dir(layout.logs)
    layout.state_file.unlink(missing_ok=True)  # the previous run's state: pids that are gone
    log = os.open(layout.supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        # The supervisor forks itself away (see supervisor._detach): this returns at once.
        launcher = subprocess.run(
            [sys.executable, "-m", "device_agent.devkit.fleet.supervisor", str(layout.root)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=False,
            timeout=60,
        )
    finally:
        os.close(log)
    if launcher.returncode != 0:
        raise FleetError(f"the supervisor did not start ({launcher.returncode}); {_log_tail(layout)}")
    print(f"gg-virtual fleet: starting {spec.devices} devices on {layout.root}")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        state = _try_state(layout)
        if state is not None and not processes.alive(state.supervisor_pid):
            raise FleetError(f"the supervisor exited; {_log_tail(layout)}")
        if state is not None:
            if state.phase == "running":
                print(render_table(fleet_status(layout)))
                return EXIT_OK
            if state.phase == "failed":
                _down(layout, 60.0)
                raise FleetError(f"the fleet failed to start: {state.error}")
        time.sleep(_POLL_S)
    _down(layout, 60.0)
    raise FleetError(f"the fleet was not up within {args.timeout:.0f}s; {_log_tail(layout)}")


def warn_without_verifier() -> bool:
    """Say on stderr, loudly, that the fleet will run without a verifier; True when it will."""
    if verifier_installed():
        return False
    print(
        "gg-virtual fleet: WARNING: the verifier (device_agent_cloud) is not installed, so the fleet runs "
        "WITHOUT A VERIFIER: no report is checked and every device stays in quarantine. Install the project "
        "with its cloud package (pip install -e .) to verify and promote devices.",
        file=sys.stderr,
    )
    return True


def _try_state(layout: FleetLayout) -> FleetState | None:
    try:
        return FleetState.load(layout.state_file)
    except FleetError:
        return None


def _log_tail(layout: FleetLayout, lines: int = 8) -> str:
    try:
        text = layout.supervisor_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no supervisor log"
    return "supervisor log tail:\n" + "\n".join(text.strip().splitlines()[-lines:])


def _down(layout: FleetLayout, timeout: float) -> int:
    """Stop the supervisor (it stops what it started), then end anything of this fleet still running."""
    pid = supervisor_running(layout)
    if pid is not None:
        try:
            fleet_call(layout.control_socket, "stop", timeout=10.0)
        except FleetError:
            processes.terminate([pid], grace_s=0.0)  # SIGTERM at once is its stop as well
        deadline = time.monotonic() + timeout
        while processes.alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
    leftovers = fleet_pids(layout)
    survivors = processes.terminate(leftovers, grace_s=5.0) if leftovers else []
    if survivors:
        print(f"gg-virtual fleet: processes {survivors} survived SIGKILL", file=sys.stderr)
        return EXIT_FAILED
    suffix = f" (ended {len(leftovers)} left behind)" if leftovers else ""
    print(f"gg-virtual fleet: down on {layout.root}{suffix}")
    return EXIT_OK


def fleet_pids(layout: FleetLayout) -> list[int]:
    """Every live process of this fleet: the recorded supervisor, broker and nuclei, and any component."""
    state = _try_state(layout)
    recorded = []
    if state is not None:
        recorded = [
            state.supervisor_pid,
            state.broker_pid,
            state.verifier_pid,
            *(d.pid for d in state.devices.values()),
        ]
    pids = {
        pid
        for pid in recorded
        if pid is not None and processes.alive(pid) and processes.belongs_to(pid, layout.root)
    }
    if layout.devices.exists():
        pids.update(processes.components_of(layout.devices))
    return sorted(pids)


def _chaos(layout: FleetLayout, drill: str, thing: str | None) -> int:
    if drill != "restart-broker" and thing is None:
        raise FleetError(f"chaos {drill} needs a THING")
    result = fleet_call(layout.control_socket, f"chaos.{drill}", thing=thing)
    print(result if isinstance(result, str) else json.dumps(result))
    return EXIT_OK
