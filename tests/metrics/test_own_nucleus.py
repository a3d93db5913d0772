"""Each device reports its own processes, not those another nucleus on the same machine started."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from device_agent.metrics.processes import ProcessFinder, ProcessMatcher
from device_agent.metrics.source import NUCLEUS_SOCKET_ENV, ProcessInfo, PsutilSource
from tests.metrics.fakes import FakeSource

STORE = ProcessMatcher(name="store", cmdline_contains="-m encrypted_store")


def table(*pids: int) -> list[ProcessInfo]:
    return [
        ProcessInfo(pid=p, create_time=float(p), name="python3", cmdline="python3 -u -m encrypted_store")
        for p in pids
    ]


def test_a_process_of_another_nucleus_is_left_out_and_unknown_ones_kept():
    source = FakeSource(
        process_table=table(1, 2, 3), nucleus_sockets={1: "/a/ipc.socket", 2: "/b/ipc.socket"}
    )
    found = ProcessFinder([STORE], own_nucleus="/a/ipc.socket").find(source, 0.0)
    assert [ref.pid for ref in found["store"]] == [1, 3]  # 2 is another device's; 3 cannot be told: kept


def test_without_a_nucleus_of_its_own_every_match_counts():
    source = FakeSource(process_table=table(1, 2), nucleus_sockets={1: "/a/ipc.socket", 2: "/b/ipc.socket"})
    found = ProcessFinder([STORE], own_nucleus="").find(source, 0.0)
    assert [ref.pid for ref in found["store"]] == [1, 2]


def test_the_real_source_reads_the_socket_from_the_process_environment():
    env = {**os.environ, NUCLEUS_SOCKET_ENV: "/tmp/other-device/ipc.socket"}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        deadline = time.monotonic() + 10
        source = PsutilSource()
        while (socket := source.nucleus_socket(child.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child has exec'd with its environment
        assert socket == "/tmp/other-device/ipc.socket"
        clean = {k: v for k, v in os.environ.items() if k != NUCLEUS_SOCKET_ENV}
        me = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            env=clean,
            capture_output=True,
            check=True,
        )
        assert source.nucleus_socket(int(me.stdout)) is None  # ended: unknown, never an error
    finally:
        child.kill()
        child.wait()
