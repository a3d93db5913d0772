"""Component processes run without Python's `ssl`: asyncio works, and OpenSSL's libssl is never mapped."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
MAINS = sorted(PROJECT.glob("components/*/*/__main__.py"))


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=PROJECT,
    )


def test_asyncio_the_sdk_and_the_runtime_work_without_ssl_and_libssl_is_not_loaded():
    done = run(
        """
        import device_agent.without_ssl
        import asyncio, socket, sys
        import awsiot.greengrasscoreipc.clientv2
        import device_agent.component, device_agent.store_client

        async def echo():
            left, right = socket.socketpair()
            reader, writer = await asyncio.open_unix_connection(sock=left)
            right.sendall(b"ping")
            data = await reader.readexactly(4)
            writer.close()
            right.close()
            return data

        assert asyncio.run(echo()) == b"ping"
        assert sys.modules["ssl"] is None
        maps = open("/proc/self/maps").read()
        print("libssl" in maps)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_guard_changes_nothing_once_ssl_is_loaded():
    done = run(
        """
        import ssl
        import device_agent.without_ssl
        import sys
        assert sys.modules["ssl"] is ssl
        """
    )
    assert done.returncode == 0, done.stderr


def test_without_the_guard_asyncio_maps_libssl():
    # The reason the guard exists: if asyncio stopped importing ssl, this test would say the guard can go.
    done = run("import asyncio; print('libssl' in open('/proc/self/maps').read())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


@pytest.mark.parametrize("main", MAINS, ids=lambda p: p.parent.name)
def test_every_component_imports_the_guard_first(main: Path):
    tree = ast.parse(main.read_text(encoding="utf-8"))
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    first = imports[0]
    assert isinstance(first, ast.Import)
    assert [alias.name for alias in first.names] == ["device_agent.without_ssl"]


def test_there_are_components_to_check():
    assert len(MAINS) >= 3
