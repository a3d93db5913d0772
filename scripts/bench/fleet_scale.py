"""Benchmark: how many virtual devices this machine runs at the components' default intervals with the
fleet's CPU below a limit (80% of the machine), and the CPU and memory each device costs.

For each step N it brings a fresh fleet up (`gg-virtual fleet up --devices N`, default intervals), waits
until the fleet's verifier has approved every device from its report (so all run the production deployment,
the whole suite) and each one's telemetry reaches the broker, lets it settle, then measures over a window,
from /proc through psutil:

- CPU: the CPU seconds every process of the fleet used in the window (nuclei, components, broker,
  supervisor, verifier), as a share of the machine (all cores) and per device (its nucleus and components,
  % of one core), beside how busy the whole machine was (other work included: the machines are shared);
- memory: proportional set size (PSS: shared pages split between their users) per device, and in total.

It stops at the first step over the limit (or at the last step) and prints one result line per step and a
last line with the largest step under the limit and the extrapolated count (limit / CPU per device).

Usage: python scripts/bench/fleet_scale.py [--steps 10,20,30,40,50] [--settle 60] [--window 120]
                                           [--cpu-limit 80] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from device_agent.devkit.fleet.cli import fleet_pids
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.processes import SOCKET_ENV
from device_agent.devkit.fleet.status import fleet_status
from device_agent.devkit.fleet.verifier import verifier_installed

MIB = 1024 * 1024


@dataclass(frozen=True)
class Step:
    devices: int
    fleet_cpu_pct: float  # of the whole machine (all cores)
    machine_busy_pct: float
    device_cpu_pct: float  # of one core, mean per device
    device_pss_mib: float  # mean per device
    overhead_cpu_pct: float  # broker, supervisor and verifier, of one core
    total_pss_mib: float
    up_seconds: float  # `fleet up` until every nucleus ran its first deployment

    def line(self) -> str:
        return (
            f"fleet_scale devices={self.devices} fleet_cpu={self.fleet_cpu_pct:.1f}% of {psutil.cpu_count()} "
            f"cores (machine busy {self.machine_busy_pct:.1f}%) per_device_cpu={self.device_cpu_pct:.2f}% "
            f"of a core per_device_pss={self.device_pss_mib:.1f}MiB broker+supervisor+verifier_cpu="
            f"{self.overhead_cpu_pct:.2f}% total_pss={self.total_pss_mib:.0f}MiB up={self.up_seconds:.0f}s"
        )


def gg_virtual(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "device_agent.devkit.cli", *args], check=True, stdout=subprocess.DEVNULL
    )


def wait_all_reporting(layout: FleetLayout, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = fleet_status(layout, components=False)["devices"]
        if all(row["group"] == "production" and row["telemetryMessages"] > 0 for row in rows):
            return
        time.sleep(2)
    raise SystemExit(f"not every device reported telemetry within {timeout:.0f}s")


def device_of(proc: psutil.Process, layout: FleetLayout) -> str | None:
    """The thing a nucleus or component process belongs to; None for the broker and the supervisor."""
    try:
        socket_path = proc.environ().get(SOCKET_ENV, "")
        cmdline = proc.cmdline()
    except psutil.Error:
        return None
    devices = str(layout.devices) + "/"
    if socket_path.startswith(devices):
        return str(socket_path[len(devices) :].split("/", 1)[0])
    for part in cmdline:
        if part.startswith(devices):
            return str(part[len(devices) :].split("/", 1)[0])
    return None


def measure(
    layout: FleetLayout, window: float
) -> tuple[dict[str | None, float], dict[str | None, float], float]:
    """CPU seconds and PSS (MiB) per device (None: broker and supervisor) over `window`; machine busy %."""
    procs = [psutil.Process(pid) for pid in fleet_pids(layout)]
    owners = {proc.pid: device_of(proc, layout) for proc in procs}
    start = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            start[proc.pid] = times.user + times.system
        except psutil.Error:
            continue
    psutil.cpu_percent()
    time.sleep(window)
    busy = psutil.cpu_percent()
    cpu: dict[str | None, float] = {}
    pss: dict[str | None, float] = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            memory = proc.memory_full_info()
        except psutil.Error:
            continue
        owner = owners[proc.pid]
        cpu[owner] = cpu.get(owner, 0.0) + times.user + times.system - start.get(proc.pid, 0.0)
        pss[owner] = pss.get(owner, 0.0) + memory.pss / MIB
    return cpu, pss, busy


def run_step(devices: int, settle: float, window: float, keep: bool) -> Step:
    base = Path(tempfile.mkdtemp(prefix="fs-"))
    layout = FleetLayout.at(base / "fleet")
    try:
        started = time.monotonic()
        gg_virtual("fleet", "up", "--root", str(layout.root), "--devices", str(devices), "--timeout", "1800")
        up_seconds = time.monotonic() - started
        wait_all_reporting(layout, timeout=600 + 10 * devices)
        time.sleep(settle)
        cpu, pss, busy = measure(layout, window)
    finally:
        gg_virtual("fleet", "down", "--root", str(layout.root))
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    per_device_cpu = [seconds / window * 100 for owner, seconds in cpu.items() if owner is not None]
    per_device_pss = [mib for owner, mib in pss.items() if owner is not None]
    cores = psutil.cpu_count() or 1
    return Step(
        devices=devices,
        fleet_cpu_pct=sum(cpu.values()) / window / cores * 100,
        machine_busy_pct=busy,
        device_cpu_pct=statistics.fmean(per_device_cpu),
        device_pss_mib=statistics.fmean(per_device_pss),
        overhead_cpu_pct=cpu.get(None, 0.0) / window * 100,
        total_pss_mib=sum(pss.values()),
        up_seconds=up_seconds,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", default="10,20,30,40,50", help="device counts to try, in order")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after every device reports")
    parser.add_argument("--window", type=float, default=120.0, help="seconds measured")
    parser.add_argument("--cpu-limit", type=float, default=80.0, help="the fleet's share of the machine, %%")
    parser.add_argument("--keep", action="store_true", help="keep each step's fleet root")
    args = parser.parse_args()
    if not verifier_installed():
        raise SystemExit("fleet_scale: the verifier (device_agent_cloud) approves the devices; install it")
    best: Step | None = None
    last: Step | None = None
    for devices in (int(part) for part in args.steps.split(",")):
        last = run_step(devices, args.settle, args.window, args.keep)
        print(last.line(), flush=True)
        if last.fleet_cpu_pct > args.cpu_limit:
            break
        best = last
    if last is not None:
        cores = psutil.cpu_count() or 1
        extrapolated = int(args.cpu_limit * cores / max(last.device_cpu_pct, 1e-6))
        print(
            f"fleet_scale result: largest step under {args.cpu_limit:.0f}% = "
            f"{best.devices if best else 0} devices; extrapolated from {last.devices}: "
            f"~{extrapolated} devices at {last.device_cpu_pct:.2f}% of a core "
            f"and {last.device_pss_mib:.1f} MiB each"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
