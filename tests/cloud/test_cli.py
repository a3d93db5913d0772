"""`device-agent-verifier`: verify (dry run), csr, provision --local, policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_agent_cloud.cli import main
from device_agent_cloud.registry import LocalRegistry
from tests.cloud.support import POLICY, make_report, ok


def test_verify_is_a_dry_run_with_an_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    import datetime as dt  # noqa: PLC0415

    now = dt.datetime.now(dt.UTC)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(make_report("t1", "a" * 64, time=now)))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(make_report("t1", "a" * 64, time=now, change={"architecture": ok("mips")})))
    hostile = tmp_path / "hostile.json"
    hostile.write_bytes(b'{"a": NaN}')
    args = ["verify", "--policy", str(policy), "--certificate-sha256", "a" * 64, "--report"]
    assert main([*args, str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "approved"
    assert main([*args, str(bad)]) == 2
    assert json.loads(capsys.readouterr().out)["failedRules"] == ["architecture"]
    assert main([*args, str(hostile)]) == 4
    assert "NaN" in json.loads(capsys.readouterr().out)["reason"]


def test_csr_then_local_provisioning(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from device_agent.devkit.pki import LocalCa  # noqa: PLC0415

    ca = LocalCa.create(tmp_path / "pki")
    key = tmp_path / "private.pem.key"
    assert main(["csr", "--thing", "k1", "--key", str(key)]) == 0
    csr_text = capsys.readouterr().out
    assert csr_text.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert key.read_text() not in csr_text
    csr = tmp_path / "k1.csr"
    csr.write_text(csr_text)
    registry = tmp_path / "registry.json"
    cert = tmp_path / "k1.crt"
    argv = ["provision", "--local", "--thing", "k1", "--thing-type", "kiosk", "--csr", str(csr)]
    argv += ["--certificate-out", str(cert), "--registry", str(registry), "--ca-dir", str(ca.paths.directory)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["group"] == "device-agent-quarantine"
    assert LocalRegistry(registry).describe("k1").certificate_fingerprints == {summary["certificateSha256"]}
    assert cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert (
        main(
            [
                "provision",
                "--local",
                "--thing",
                "k1",
                "--thing-type",
                "kiosk",
                "--csr",
                str(csr),
                "--certificate-out",
                str(cert),
            ]
        )
        == 1
    )
    assert "--registry" in capsys.readouterr().err


def test_policies_prints_rendered_templates(capsys: pytest.CaptureFixture[str]):
    assert (
        main(["policies", "--region", "eu-west-1", "--account", "111122223333", "--name", "quarantine"]) == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert document["Statement"][0]["Resource"][0].startswith("arn:aws:iot:eu-west-1:111122223333:client/")
    assert main(["policies"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"quarantine", "production", "core-certificate"}
    assert main(["policies", "--account", "oops"]) == 1
    assert "account" in capsys.readouterr().err


def test_serve_wants_mutual_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    argv = ["serve", "--broker", "mqtt://127.0.0.1:1883", "--ca", "ca", "--cert", "c", "--key", "k"]
    argv += ["--policy", str(policy), "--registry", str(tmp_path / "r.json"), "--audit", str(tmp_path / "a")]
    assert main(argv) == 1
    assert "mqtts://" in capsys.readouterr().err
