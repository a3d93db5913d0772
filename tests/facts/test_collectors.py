"""Drop-in collectors: what runs, what is refused, and how every failure becomes an `error` fact."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from device_agent.facts.collectors import MAX_COLLECTORS, run_collectors


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    folder = tmp_path / "collectors"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    return folder


def script(folder: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


async def run(folder: Path, **options: float) -> dict[str, dict[str, object]]:
    fact = await run_collectors(
        folder, timeout=float(options.get("timeout", 5.0)), max_output_bytes=int(options.get("cap", 256))
    )
    assert fact.is_ok, fact
    return fact.value  # type: ignore[no-any-return]


async def test_json_output_is_reported_under_the_file_name(directory: Path):
    script(directory, "fleet.sh", 'echo \'{"site": "A1", "n": 3}\'')
    script(directory, "rack", "echo 7")
    assert await run(directory) == {
        "fleet": {"status": "ok", "value": {"site": "A1", "n": 3}, "source": "collector"},
        "rack": {"status": "ok", "value": 7, "source": "collector"},
    }


async def test_failures_are_error_facts(directory: Path):
    script(directory, "notjson", "echo hello")
    script(directory, "big", "head -c 1000 /dev/zero | tr '\\0' 'x'")
    script(directory, "exits", "echo 1; exit 3")
    script(directory, "silent", "true")
    script(directory, "deep", "echo '[[[[[1]]]]]'")
    facts = await run(directory)
    assert facts["deep"] == {"status": "error", "reason": "its output nests deeper than 4 levels"}
    assert facts["notjson"] == {"status": "error", "reason": "its output is not one JSON value"}
    assert facts["big"] == {"status": "error", "reason": "printed more than 256 bytes"}
    assert facts["exits"] == {"status": "error", "reason": "exited with status 3"}
    assert facts["silent"]["status"] == "error"


async def test_a_slow_collector_is_killed_with_what_it_started(directory: Path, tmp_path: Path):
    marker = tmp_path / "survived"
    script(directory, "slow", f"(sleep 3; touch {marker}) & sleep 30")
    started = time.monotonic()
    facts = await run(directory, timeout=0.5)
    assert facts["slow"] == {"status": "error", "reason": "timed out after 0.5 s"}
    assert time.monotonic() - started < 10
    assert not marker.exists()  # the whole process group went


async def test_unsafe_files_are_refused_without_running(directory: Path, tmp_path: Path):
    ran = tmp_path / "ran"
    script(directory, "world", f"touch {ran}; echo 1", mode=0o757)
    script(directory, "group", f"touch {ran}; echo 1", mode=0o775)
    script(directory, "plain", f"touch {ran}; echo 1", mode=0o644)
    target = script(tmp_path, "elsewhere", f"touch {ran}; echo 1")
    (directory / "link").symlink_to(target)
    os.mkfifo(directory / "fifo")
    facts = await run(directory)
    assert facts["world"] == {"status": "error", "reason": "refused: the file is writable by group or others"}
    assert facts["group"]["reason"] == "refused: the file is writable by group or others"
    assert facts["plain"]["reason"] == "refused: not executable"
    assert facts["link"]["reason"] == "refused: a symlink"
    assert facts["fifo"]["reason"] == "refused: not a regular file"
    assert not ran.exists()


async def test_a_file_of_another_user_is_refused(directory: Path):
    path = script(directory, "foreign", "echo 1")
    os.chown(path, 65534, 65534)
    facts = await run(directory)
    assert facts["foreign"]["reason"] == "refused: the file is owned by another user"


async def test_an_unsafe_or_missing_directory_is_refused_whole(directory: Path, tmp_path: Path):
    script(directory, "ok", "echo 1")
    directory.chmod(0o777)
    fact = await run_collectors(directory, timeout=1.0, max_output_bytes=64)
    assert (fact.status, fact.reason) == ("error", "the collectors directory is writable by group or others")
    missing = await run_collectors(tmp_path / "none", timeout=1.0, max_output_bytes=64)
    assert missing.status == "unavailable"


async def test_the_environment_carries_no_token(directory: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SVCUID", "secret-token")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "secret-token")
    script(directory, "env", 'printf \'"%s"\' "$(env | tr "\\n" " ")"')
    facts = await run(directory, cap=4096)
    assert facts["env"]["status"] == "ok"
    assert "secret-token" not in str(facts["env"]["value"])


async def test_names_and_count_are_bounded(directory: Path):
    for n in range(MAX_COLLECTORS + 4):
        script(directory, f"c{n:02d}", "echo 1")
    script(directory, "bad name!", "echo 1")
    script(directory, ".hidden", "echo 1")
    facts = await run(directory)
    assert len(facts) == MAX_COLLECTORS
    assert all(name.startswith("c") for name in facts)
