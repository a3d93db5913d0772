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


def test_a_relative_socket_path_is_told_apart_by_the_directory_it_is_relative_to(tmp_path, monkeypatch):
    """A nucleus whose socket path is too long hands every component `../../ipc.socket`: the same text on
    every device, a different socket for each (relative to the component's working directory)."""
    own_work, other_work = (tmp_path / root / "work" / "store" for root in ("a", "b"))
    for work in (own_work, other_work):
        work.mkdir(parents=True)
    relative = {**os.environ, NUCLEUS_SOCKET_ENV: "../../ipc.socket"}
    code = "import time; time.sleep(30)"
    children = [
        subprocess.Popen([sys.executable, "-c", code, "-m", "encrypted_store"], env=relative, cwd=work)
        for work in (own_work, other_work)
    ]
    try:
        monkeypatch.setenv(NUCLEUS_SOCKET_ENV, "../../ipc.socket")
        monkeypatch.chdir(own_work)
        finder = ProcessFinder([ProcessMatcher(name="probe", cmdline_contains=code)])
        assert finder.own_nucleus == str(tmp_path / "a" / "ipc.socket")
        source = PsutilSource()
        deadline = time.monotonic() + 10
        while source.nucleus_socket(children[1].pid) is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child has exec'd with its environment
        assert source.nucleus_socket(children[1].pid) == str(tmp_path / "b" / "ipc.socket")
        found = finder.find(source, 0.0)
        assert [ref.pid for ref in found["probe"]] == [children[0].pid]
    finally:
        for child in children:
            child.kill()
            child.wait()
