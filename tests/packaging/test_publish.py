"""scripts/publish with a stand-in GDK (GDK is not on PyPI), and scripts/publish-check against a stand-in AWS.

The loop: every component folder, in order, `gdk component build` then `gdk component publish` with the
script's arguments, run in that folder; the first failure stops it. The check: the stand-in GDK makes GDK's
calls (tests/packaging/fake_gdk.py) against moto and the GreengrassV2 stand-in (publish_check.py), and what
was published is compared with what was built, in a copy of the project (a build writes into the folders).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.packaging import publish_check

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted(p.parent.name for p in ROOT.glob("components/*/gdk-config.json"))
FAKE_GDK = Path(__file__).with_name("fake_gdk.py")


def gdk_on_path(tmp_path: Path) -> Path:
    """A `gdk` executable that runs the stand-in with this interpreter; returns its folder."""
    folder = tmp_path / "bin"
    folder.mkdir()
    gdk = folder / "gdk"
    gdk.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_GDK}" "$@"\n')
    gdk.chmod(0o755)
    return folder


def publish(
    tmp_path: Path,
    *args: str,
    root: Path = ROOT,
    aws: publish_check.FakeAws | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """scripts/publish with the stand-in GDK first on PATH (and pointed at `aws`, when given)."""
    bin_folder = tmp_path / "bin" if (tmp_path / "bin").is_dir() else gdk_on_path(tmp_path)
    environment = {
        **os.environ,
        "PATH": f"{bin_folder}:{os.environ['PATH']}",
        "FAKE_GDK_LOG": str(tmp_path / "gdk.log"),
        **env,
    }
    return subprocess.run(
        [str(root / "scripts" / "publish"), *args],
        env=aws.environment(environment) if aws is not None else environment,
        capture_output=True,
        text=True,
        check=False,
    )


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "gdk.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_the_four_components_are_built_then_published_in_their_folders_with_the_arguments(tmp_path: Path):
    assert FOLDERS == ["bootstrap_reporter", "encrypted_store", "health_monitor", "telemetry_publisher"]
    result = publish(tmp_path, "--bucket", "my-bucket", "--region", "eu-west-1", FAKE_GDK_ONLY_LOG="1")
    assert result.returncode == 0, result.stderr
    expected = []
    for folder in FOLDERS:
        expected += [
            (folder, ["component", "build"]),
            (folder, ["component", "publish", "--bucket", "my-bucket", "--region", "eu-west-1"]),
        ]
    assert [(c["folder"], c["argv"]) for c in calls(tmp_path)] == expected
    # Our custom build chooses what ships, so GDK's zip-excludes warning is silenced for every call.
    assert all(c["env"].get("GDK_EXCLUDES_WARN_IGNORE") == "true" for c in calls(tmp_path))
    assert result.stdout.strip() == f"published 4 components: {' '.join(FOLDERS)}"


@pytest.mark.parametrize(
    ("fail", "last"),
    [
        ("encrypted_store:publish", ("encrypted_store", "publish")),
        ("health_monitor:build", ("health_monitor", "build")),
    ],
    ids=["publish fails", "build fails"],
)
def test_the_first_failure_stops_the_loop(tmp_path: Path, fail: str, last: tuple[str, str]):
    result = publish(tmp_path, FAKE_GDK_ONLY_LOG="1", FAKE_GDK_FAIL=fail)
    assert result.returncode != 0
    made = [(c["folder"], c["argv"][1]) for c in calls(tmp_path)]
    assert made[-1] == last  # nothing after the failure: no later component, no publish of a failed build
    assert made.index(last) == len(made) - 1
    assert "published" not in result.stdout
    assert f"failing {last[1]} in {last[0]}" in result.stderr


def test_without_a_gdk_it_says_how_to_get_one(tmp_path: Path):
    result = subprocess.run(
        [str(ROOT / "scripts" / "publish")],
        env={**os.environ, "GDK": str(tmp_path / "no-gdk")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "no GDK CLI" in result.stderr
    assert "docs/packaging.md" in result.stderr


def test_gdk_can_be_named_by_path(tmp_path: Path):
    gdk = gdk_on_path(tmp_path) / "gdk"
    result = subprocess.run(
        [str(ROOT / "scripts" / "publish")],
        env={
            **os.environ,
            "GDK": str(gdk),
            "FAKE_GDK_ONLY_LOG": "1",
            "FAKE_GDK_LOG": str(tmp_path / "gdk.log"),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(calls(tmp_path)) == 2 * len(FOLDERS)


# ---- the publish check, end to end with the stand-ins ----------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project's sources in a fresh folder (builds write into component folders), the dev .venv linked."""
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("greengrass-build", "zip-build", "__pycache__", "*.egg-info")
    for name in ("components", "recipes", "device_agent", "scripts", "requirements"):
        shutil.copytree(ROOT / name, copy / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "gdk-config.json"):
        shutil.copy2(ROOT / name, copy / name)
    (copy / "tests").mkdir()
    shutil.copy2(ROOT / "tests" / "__init__.py", copy / "tests" / "__init__.py")
    shutil.copytree(ROOT / "tests" / "packaging", copy / "tests" / "packaging", ignore=ignore)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    return copy


@pytest.mark.slow
def test_publish_check_publishes_every_component_and_finds_it_as_built(tmp_path: Path, project: Path):
    path = f"{gdk_on_path(tmp_path)}:{os.environ['PATH']}"
    result = subprocess.run(
        [str(project / "scripts" / "publish-check"), "--bucket", "device-agent-check"],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "publish-check: 4 component versions published and checked" in result.stdout


@pytest.mark.slow
def test_the_check_sees_a_second_publish_refused_and_an_altered_upload(tmp_path: Path, project: Path):
    with publish_check.fake_aws() as aws:
        first = publish(tmp_path, "--bucket", "device-agent-b", root=project, aws=aws)
        assert first.returncode == 0, first.stderr[-3000:]
        assert publish_check.check(project, aws) == []
        # The same versions again: the service refuses them (ConflictException), and the loop stops.
        again = publish(tmp_path, "--bucket", "device-agent-b", root=project, aws=aws)
        assert again.returncode != 0
        assert "ConflictException" in again.stderr
        name = "com.deviceagent.HealthMonitor"
        key = f"{name}/0.1.0/{name}.zip"
        boto3.client("s3", region_name="us-east-1").put_object(
            Bucket="device-agent-b", Key=key, Body=b"not the zip"
        )
        assert publish_check.check(project, aws) == [f"{name}: the uploaded zip differs from the built one"]
