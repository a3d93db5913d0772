"""What the Lambda package needs, the documented example policy, and the handler's configuration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from device_agent_cloud import handler as handler_module
from device_agent_cloud.audit import AuditRecord, JsonLinesAuditLog
from device_agent_cloud.errors import AuditError, PolicyFileError
from device_agent_cloud.policy import load_policy
from tests.cloud.support import NOW, POLICY, PROJECT

DOC = PROJECT / "docs" / "verifier.md"


def test_the_handler_imports_nothing_a_lambda_lacks():
    code = (
        "import json, sys, device_agent_cloud.handler\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT
    )
    loaded = set(json.loads(done.stdout))
    assert loaded & {"awscrt", "awsiot", "psutil", "boto3", "botocore", "moto", "jsonschema", "yaml"} == set()
    assert "cryptography" in loaded


def test_the_cloud_package_never_imports_the_devkit():
    offending = [
        str(path.relative_to(PROJECT))
        for path in (PROJECT / "device_agent_cloud").rglob("*.py")
        if re.search(r"^\s*(from|import)\s+device_agent\.devkit", path.read_text(), re.MULTILINE)
    ]
    assert offending == []


def test_the_documented_policy_is_valid(tmp_path: Path):
    text = DOC.read_text()
    block = re.search(r"```json\n(\{\n  \"schema\": \"verifier-policy/1\".*?)\n```", text, re.DOTALL)
    assert block is not None
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "thermostats.csv").write_text("serial,batch\nSN-0001,7\n")
    (tmp_path / "policy.json").write_text(block.group(1))
    policy = load_policy(tmp_path / "policy.json")
    assert policy.rules_for("thermostat").serial_allowlist == frozenset({"SN-0001"})
    # Every rule key of the file format is documented in the table.
    from device_agent_cloud.policy import RULE_KEYS  # noqa: PLC0415

    for key in RULE_KEYS:
        assert f"| `{key}` |" in text, key


def test_the_policy_in_bootstrap_md_is_valid_and_names_every_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """bootstrap.md carries the policy file itself (not only a link): it must load as written."""
    text = (PROJECT / "docs" / "bootstrap.md").read_text()
    section = text[text.index("### The policy file") : text.index("### Running it in AWS")]
    block = re.search(r"```json\n(\{\n  \"schema\": \"verifier-policy/1\".*?)\n```", section, re.DOTALL)
    assert block is not None
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "thermostats.csv").write_text("serial\nSN-0001\n")
    (tmp_path / "policy.json").write_text(block.group(1))
    monkeypatch.setenv("FLEET_SALT", "a-fleet-salt-for-the-docs-test")
    policy = load_policy(tmp_path / "policy.json")
    allowed = policy.rules_for("thermostat").serial_allowlist
    assert allowed is not None
    assert "SN-0001" in allowed
    from device_agent_cloud.policy import RULE_KEYS  # noqa: PLC0415

    for key in RULE_KEYS:
        assert f"`{key}`" in section, key


def test_the_handler_needs_its_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DEVICE_AGENT_POLICY_FILE", raising=False)
    with pytest.raises(PolicyFileError, match="DEVICE_AGENT_POLICY_FILE"):
        handler_module.build_runtime({})
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    with pytest.raises(PolicyFileError, match="DEVICE_AGENT_AUDIT_TABLE"):
        handler_module.build_runtime(
            {"DEVICE_AGENT_POLICY_FILE": str(policy), "AWS_DEFAULT_REGION": "eu-west-1"}
        )


def _record(reason: str = "r") -> AuditRecord:
    return AuditRecord(
        record_id="b" * 32,
        time=NOW,
        verifier="v",
        decision="refused",
        thing=None,
        thing_type=None,
        rules=None,
        report_id=None,
        facts_hash=None,
        decision_id=None,
        failed_rules=(),
        reason=reason,
        demoted=False,
        groups_before=(),
        groups_after=(),
    )


def test_the_local_audit_log_appends_privately(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    log = JsonLinesAuditLog(path)
    log.append(_record("one"))
    log.append(_record("two"))
    assert [json.loads(line)["reason"] for line in path.read_text().splitlines()] == ["one", "two"]
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(AuditError, match="not a private file"):
        log.append(_record())
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AuditError, match="cannot open"):
        JsonLinesAuditLog(link).append(_record())
    assert not (tmp_path / "elsewhere").exists()
