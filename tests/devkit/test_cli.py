"""`gg-virtual` and `scripts/virtual-device` as a developer uses them: real processes, the examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit.cli import main

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT / "examples"


def gg(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device_agent.devkit.cli", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def published(root: Path) -> list[dict[str, Any]]:
    path = root / "iot-core" / "published.jsonl"
    if not path.exists():
        return []
    whole = path.read_text().rpartition("\n")[0]  # a line still being written is left out
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


def test_gg_virtual_runs_examples_and_answers_commands(short_root):
    root = short_root()
    nucleus = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "device_agent.devkit.cli",
            "--root",
            str(root),
            "nucleus",
            "--recipe-dir",
            str(EXAMPLES / "recipes"),
            "--artifact-dir",
            str(EXAMPLES / "artifacts"),
            "--thing-name",
            "dev-1",
            "--with-cli",
            "--duration",
            "90",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for((root / "control.socket").exists, "the control socket")

        def listed() -> str | None:
            out = gg(root, "component", "list").stdout
            return out if out.count("RUNNING") == 2 else None

        out = wait_for(listed, "both examples RUNNING")
        assert "com.example.Publisher" in out
        assert "com.example.Listener" in out
        wait_for(lambda: any(r["topic"] == "dt/example/dev-1/counter" for r in published(root)), "a counter")

        # A cloud-to-device ping reaches the listener, which answers on its own topic with the last counter it
        # heard on local pub/sub (it starts after the publisher, so ask until it has heard one).
        def pong_after_a_counter() -> dict[str, Any] | None:
            assert gg(root, "iot", "publish", "cmd/example/dev-1/ping", '{"ping": 42}').returncode == 0
            time.sleep(0.5)
            pongs = [r["payload"] for r in published(root) if r["topic"] == "dt/example/dev-1/pong"]
            heard = [p for p in pongs if p["lastCountHeard"] >= 1]
            return heard[0] if heard else None

        pong = wait_for(pong_after_a_counter, "a pong from a listener that heard the counter")
        assert pong["pong"] == 42

        # Offline: QoS 1 publishes are spooled, then delivered when back online.
        assert gg(root, "iot", "offline").stdout.strip() == "offline"
        before = len(published(root))
        time.sleep(3)
        assert len(published(root)) == before
        assert gg(root, "iot", "online").stdout.strip() == "online"
        wait_for(lambda: len(published(root)) > before, "the spooled counters")

        # A configuration deployment is applied to the running publisher without a restart.
        update = json.dumps({"com.example.Publisher": {"MERGE": {"intervalSeconds": 1}}})
        created = gg(root, "deployment", "create", "--update-config", update)
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["status"] == "SUCCEEDED"
        wait_for(
            lambda: "intervalSeconds=1" in gg(root, "logs", "--component", "com.example.Publisher").stdout,
            "the publisher to log its new interval",
        )
        bad = gg(root, "deployment", "create", "--merge", "com.example.Missing=1.0.0")
        assert bad.returncode == 1
        assert "no recipe for com.example.Missing=1.0.0" in bad.stdout

        assert gg(root, "component", "restart", "com.example.Listener").returncode == 0
        assert "nucleus.started" in gg(root, "logs").stdout
    finally:
        nucleus.terminate()
        nucleus.communicate(timeout=30)
    assert nucleus.returncode == 0
    assert not (root / "control.socket").exists()


def test_commands_against_no_device_fail_clearly(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "component", "list"]) == 1
    assert "no virtual device is running" in capsys.readouterr().err


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--root", str(tmp_path), "deployment", "create", "--update-config", "{not json"])
    assert exit_info.value.code == 2


def test_virtual_device_main_job_runs_and_stops_by_itself(short_root):
    root = short_root()
    env = dict(os.environ)
    # Long enough for the telemetry publisher's first aligned tick (10 s) and the health monitor's first
    # summary, with room for a loaded machine.
    proc = subprocess.run(
        [str(PROJECT / "scripts" / "virtual-device"), "--duration", "25", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    # Every component of the suite (recipes/) was built, deployed and reached RUNNING.
    suite = sorted(p.stem for p in (PROJECT / "recipes").glob("*.yaml"))
    assert suite
    for name in suite:
        lines = [line for line in proc.stdout.splitlines() if line.strip().startswith(name)]
        assert lines, f"{name} not shown"
        assert "RUNNING" in lines[-1], lines[-1]
        assert (root / "logs" / f"{name}.log").exists()
    # Their messages are in the virtual device's IoT Core log: telemetry, and the health summary.
    thing = "virtual-device-1"
    records = published(root)
    topics = {record["topic"] for record in records}
    assert f"dt/device-agent/{thing}/telemetry" in topics, sorted(topics)
    assert f"dt/device-agent/{thing}/health" in topics, sorted(topics)
    for record in records:
        if record["topic"] == f"dt/device-agent/{thing}/telemetry":
            assert record["component"] == "com.deviceagent.TelemetryPublisher"
            assert (record["payload"]["schema"], record["payload"]["thing"]) == ("telemetry/1", thing)
