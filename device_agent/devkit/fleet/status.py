"""`fleet status`: one row per device from the state file (group, verdict, what the observer saw) and, for a
running nucleus, its component states asked over its control socket.
"""

from __future__ import annotations

import time
from typing import Any

from device_agent.devkit import control
from device_agent.devkit.errors import ControlError
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.processes import alive
from device_agent.devkit.fleet.state import FleetState

_PREFIX = "com.deviceagent."


def fleet_status(layout: FleetLayout, *, components: bool = True) -> dict[str, Any]:
    state = FleetState.load(layout.state_file)
    now = time.time()
    devices = []
    for thing, record in sorted(state.devices.items()):
        seen = state.observed.get(thing, {})
        running = alive(record.pid)
        row: dict[str, Any] = {
            "thing": thing,
            "group": record.group,
            "wantedGroup": record.wanted_group,
            "groupChangeFailures": record.group_change_failures,
            "verdict": seen.get("verdict"),
            "verdictReason": seen.get("verdictReason"),
            "nucleus": {"pid": record.pid, "running": running, "restarts": record.restarts},
            "offline": record.offline,
            "revoked": record.revoked,
            "expectRejection": record.expect_rejection,
            "components": _component_states(layout, thing) if components and running else {},
            "telemetryAgeSeconds": _age(seen.get("lastTelemetryAt"), now),
            "telemetryMessages": seen.get("telemetryMessages", 0),
            "seq": seen.get("seq") or {"first": None, "last": None, "missing": 0},
            "seqRanges": seen.get("seqRanges", []),
            "backfilledMessages": seen.get("backfilledMessages", 0),
            "health": seen.get("health"),
            "healthAgeSeconds": _age(seen.get("lastHealthAt"), now),
            "reports": seen.get("reports", 0),
            "lastError": record.last_error,
        }
        devices.append(row)
    return {
        "root": str(layout.root),
        "phase": state.phase if alive(state.supervisor_pid) else "stopped",
        "error": state.error,
        "supervisorPid": state.supervisor_pid,
        "broker": {"pid": state.broker_pid, "port": state.broker_port, "running": alive(state.broker_pid)},
        "verifier": {"pid": state.verifier_pid, "running": alive(state.verifier_pid)},
        "stateAgeSeconds": _age(state.updated_at, now),
        "devices": devices,
    }


def _component_states(layout: FleetLayout, thing: str) -> dict[str, str]:
    try:
        status = control.call(layout.device_root(thing), "status")
    except (ControlError, OSError, ValueError):
        return {}
    return {item["name"]: item["state"] for item in status.get("components", [])}


def _age(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 1)


def render_table(status: dict[str, Any]) -> str:
    broker = status["broker"]
    where = f"pid {broker['pid']} on 127.0.0.1:{broker['port']}" if broker["running"] else "not running"
    error = f"; error: {status['error']}" if status.get("error") else ""
    verifier = status.get("verifier") or {}
    if verifier.get("running"):
        checked_by = f"verifier pid {verifier['pid']}"
    elif verifier.get("pid") is not None:
        checked_by = f"VERIFIER pid {verifier['pid']} NOT RUNNING"
    else:
        checked_by = "NO VERIFIER: no device is verified"
    lines = [
        f"fleet {status['root']}: {status['phase']}; broker {where}; {checked_by}{error}",
        (
            f"{'THING':<12} {'GROUP':<11} {'VERDICT':<9} {'NUCLEUS':<13} {'TELEMETRY':<10} {'SEQ':<12} "
            f"{'HEALTH':<9} COMPONENTS"
        ),
    ]
    for row in status["devices"]:
        nucleus = row["nucleus"]
        nucleus_text = f"{nucleus['pid']}" if nucleus["running"] else "down"
        if nucleus["restarts"]:
            nucleus_text += f" r{nucleus['restarts']}"
        flags = [flag for flag in ("offline", "revoked") if row[flag]]
        if row.get("wantedGroup", row["group"]) != row["group"]:
            flags.append(f"moving to {row['wantedGroup']}")
        age = row["telemetryAgeSeconds"]
        seq = row.get("seq") or {}
        seq_text = f"{seq['last']} -{seq['missing']}" if seq.get("last") is not None else "-"
        states = " ".join(
            f"{name.removeprefix(_PREFIX)}={state}" for name, state in sorted(row["components"].items())
        )
        lines.append(
            f"{row['thing']:<12} {row['group']:<11} {row['verdict'] or '-':<9} {nucleus_text:<13} "
            f"{(f'{age:.0f}s ago' if age is not None else '-'):<10} {seq_text:<12} {row['health'] or '-':<9} "
            f"{states}{'  [' + ','.join(flags) + ']' if flags else ''}"
        )
        if row["verdict"] not in {None, "approved"} and row.get("verdictReason"):
            lines.append(f"{'':<12} {row['verdict']}: {row['verdictReason']}")  # the verifier's own words
    return "\n".join(lines)
