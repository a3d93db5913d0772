"""The bootstrap reporter end to end: built as it ships, with the real store, on the local nucleus, and a
test verifier that reads reports from the device's IoT Core log and answers on its verdict topic.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.nucleus import NUCLEUS_VERSION
from device_agent.facts.report import facts_hash
from tests.bootstrap_component.conftest import (
    REPORTER,
    REPORTS,
    TestVerifier,
    device_config,
    validator,
    wait_until,
)
from tests.conftest import component_pid

pytestmark = pytest.mark.slow

QUIET_SECONDS = (
    3.0  # several resend intervals (at most 1 s each): long enough to see a resend that should not come
)


async def test_reports_validate_and_are_resent_until_a_verdict_then_stop(start_device, bootstrap_base: Path):
    async with start_device(
        bootstrap_base, update_config=device_config(), interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        first = await verifier.report()
        await verifier.report(count=3, where=lambda r: r["reportId"] == first["reportId"])
        schema = validator("bootstrap-report.schema.json")
        for report in verifier.reports():
            schema.validate(report)
            assert report == first  # a resend is the same report, byte for byte the same document
        assert first["reason"] == "initial"
        assert first["thing"] == device.nucleus.thing_name
        assert {r.topic for r in device.published(REPORTS)} == {f"dt/device-agent/{first['thing']}/bootstrap"}
        assert {r.qos for r in device.published(REPORTS)} == {1}
        assert first["factsHash"] == facts_hash(first["facts"])  # what the verifier recomputes
        facts = first["facts"]
        assert facts["thingName"] == {"status": "ok", "value": first["thing"], "source": "environment"}
        assert facts["nucleusVersion"]["value"] == NUCLEUS_VERSION  # GGC_VERSION, as the nucleus sets it
        listed = {c["name"] for c in facts["components"]["value"]["components"]}
        assert listed == {REPORTER, "com.deviceagent.EncryptedStore"}
        assert facts["components"]["value"]["source"] == "suite"
        assert "extra" not in facts  # no collectors directory configured

        verifier.answer(first, "approved", group="production")
        event = await verifier.event("bootstrap.approved")
        assert event["category"] == "security"
        assert event["details"]["reportId"] == first["reportId"]
        sent = verifier.sends_of(first["reportId"])
        await asyncio.sleep(QUIET_SECONDS)
        assert verifier.sends_of(first["reportId"]) <= sent + 1  # at most one already on its way
        assert len(verifier.reports()) == verifier.sends_of(first["reportId"])  # and no new report
        assert device.state(REPORTER) is ComponentState.RUNNING


async def test_reports_made_offline_are_qos_1_so_the_nucleus_keeps_them_until_it_connects(
    start_device, bootstrap_base: Path
):
    """The nucleus refuses a QoS 0 publish while offline and drops spooled QoS 0 messages on a disconnect;
    a QoS 1 report waits in its spool and reaches the cloud when the connection returns."""
    async with start_device(
        bootstrap_base, update_config=device_config(), interpolate_component_configuration=True
    ) as device:
        await device.go_offline()  # before the first report (the reporter settles 2 s first)
        await wait_until(
            lambda: "bootstrap.report_sent" in device.log(REPORTER), 30, "no report sent while offline"
        )
        assert device.published(REPORTS) == []
        assert "bootstrap.report_not_sent" not in device.log(REPORTER)  # the nucleus took every send
        await device.go_online()
        verifier = TestVerifier(device)
        report = await verifier.report()
        assert {r.qos for r in device.published(REPORTS)} == {1}
        assert {r["reportId"] for r in verifier.reports()} == {report["reportId"]}  # resends of one report
        verifier.answer(report, "approved")
        await verifier.event("bootstrap.approved")


async def test_a_restart_with_a_kept_verdict_neither_reports_again_nor_forgets_it(
    start_device, bootstrap_base: Path
):
    async with start_device(
        bootstrap_base, update_config=device_config(), interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        report = await verifier.report()
        verifier.answer(report, "approved")
        await verifier.event("bootstrap.approved")
        approved_at = verifier.event_time("bootstrap.approved")  # the verdict is saved after its event
        await wait_until(
            lambda: verifier.store_saves(after=approved_at) >= 1, 20, "the verdict was never saved"
        )
        before = len(verifier.reports())
        beats = len(verifier.heartbeats())

        os.kill(component_pid(device, "bootstrap_reporter"), signal.SIGKILL)
        # The nucleus restarts it; the new process heartbeats from sequence 1 again.
        await wait_until(
            lambda: any(h["sequence"] == 1 for h in verifier.heartbeats()[beats:]), 30, "no restart"
        )
        await wait_until(
            lambda: any(h.get("detail") == "approved" for h in verifier.heartbeats()[beats:]),
            20,
            "the restarted reporter does not know its verdict",
        )
        await asyncio.sleep(QUIET_SECONDS)
        assert len(verifier.reports()) <= before + 1  # one resend may have been in flight at the kill
        assert {r["reportId"] for r in verifier.reports()} == {report["reportId"]}


async def test_a_restart_without_a_verdict_resends_the_same_report(start_device, bootstrap_base: Path):
    async with start_device(
        bootstrap_base, update_config=device_config(), interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        report = await verifier.report()
        await wait_until(lambda: verifier.store_saves() >= 1, 20, "the report was never saved")
        beats = len(verifier.heartbeats())
        os.kill(component_pid(device, "bootstrap_reporter"), signal.SIGKILL)
        await wait_until(
            lambda: any(h["sequence"] == 1 for h in verifier.heartbeats()[beats:]), 30, "no restart"
        )
        sent = verifier.sends_of(report["reportId"])
        await verifier.report(count=sent + 2, where=lambda r: r["reportId"] == report["reportId"])
        assert {r["reportId"] for r in verifier.reports()} == {report["reportId"]}
        verifier.answer(report, "approved")
        await verifier.event("bootstrap.approved")


async def test_a_changed_fact_makes_a_new_report(start_device, bootstrap_base: Path, tmp_path: Path):
    collectors = tmp_path / "collectors"
    collectors.mkdir(mode=0o755)
    value = tmp_path / "value.json"
    value.write_text('{"fleet": "a"}')
    script = collectors / "fleet.sh"
    script.write_text(f"#!/bin/sh\ncat {value}\n")
    script.chmod(0o755)
    config = device_config(collectors={"directory": str(collectors), "timeoutSeconds": 5.0})
    async with start_device(
        bootstrap_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        first = await verifier.report()
        assert first["facts"]["extra"]["value"] == {
            "fleet": {"status": "ok", "value": {"fleet": "a"}, "source": "collector"}
        }
        verifier.answer(first, "approved")
        await verifier.event("bootstrap.approved")

        value.write_text('{"fleet": "b"}')
        changed = await verifier.report(where=lambda r: r["reportId"] != first["reportId"])
        validator("bootstrap-report.schema.json").validate(changed)
        assert changed["reason"] == "changed"
        assert changed["factsHash"] != first["factsHash"]
        assert changed["facts"]["extra"]["value"]["fleet"]["value"] == {"fleet": "b"}
        # The new report is resent until its own verdict: the verdict on the first does not count.
        await verifier.report(count=2, where=lambda r: r["reportId"] == changed["reportId"])


async def test_the_last_verdict_stands_while_a_new_report_waits_even_across_a_restart(
    start_device, bootstrap_base: Path, tmp_path: Path
):
    """A changed fact (after a reboot, the boot id) makes a new report; the approval stays in force until
    the new report's own verdict, in the heartbeat and in the kept state a restart loads."""
    collectors = tmp_path / "collectors"
    collectors.mkdir(mode=0o755)
    value = tmp_path / "value.json"
    value.write_text('{"boot": 1}')
    script = collectors / "boot.sh"
    script.write_text(f"#!/bin/sh\ncat {value}\n")
    script.chmod(0o755)
    config = device_config(collectors={"directory": str(collectors), "timeoutSeconds": 5.0})
    standing = "approved; a new report awaits a verdict"
    async with start_device(
        bootstrap_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        first = await verifier.report()
        verifier.answer(first, "approved")
        await verifier.event("bootstrap.approved")

        value.write_text('{"boot": 2}')  # as a reboot's new bootId would
        changed = await verifier.report(where=lambda r: r["reportId"] != first["reportId"])
        assert changed["reason"] == "changed"
        await wait_until(
            lambda: verifier.heartbeats()[-1].get("detail") == standing, 20, "the approval did not stand"
        )
        assert verifier.heartbeats()[-1]["state"] == "RUNNING"
        made_at = verifier.event_time("bootstrap.approved")
        await wait_until(lambda: verifier.store_saves(after=made_at) >= 2, 20, "the new report was not saved")

        beats = len(verifier.heartbeats())
        os.kill(component_pid(device, "bootstrap_reporter"), signal.SIGKILL)
        await wait_until(
            lambda: any(h["sequence"] == 1 for h in verifier.heartbeats()[beats:]), 30, "no restart"
        )
        await wait_until(
            lambda: any(h.get("detail") == standing for h in verifier.heartbeats()[beats:]),
            20,
            "the restarted reporter forgot the standing approval",
        )
        sent = verifier.sends_of(changed["reportId"])
        await verifier.report(count=sent + 1, where=lambda r: r["reportId"] == changed["reportId"])
        assert {r["reportId"] for r in verifier.reports()} == {first["reportId"], changed["reportId"]}
        verifier.answer(changed, "approved")
        await wait_until(
            lambda: verifier.heartbeats()[-1].get("detail") == "approved", 20, "the new approval not taken"
        )


async def test_pending_keeps_asking_and_a_rejection_is_a_critical_security_event(
    start_device, bootstrap_base: Path
):
    async with start_device(
        bootstrap_base, update_config=device_config(), interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        report = await verifier.report()
        verifier.answer(report, "pending")
        await verifier.event("bootstrap.pending")
        sent = verifier.sends_of(report["reportId"])
        await verifier.report(count=sent + 1, where=lambda r: r["reportId"] == report["reportId"])

        verifier.answer(report, "rejected", failedRules=["serial.allowlist"], group="quarantine")
        event = await verifier.event("bootstrap.rejected")
        assert (event["category"], event["severity"]) == ("security", "critical")
        assert event["details"]["failedRules"] == "serial.allowlist"
        assert not verifier.events("store.erased")  # eraseOnReject is off by default
        await wait_until(
            lambda: any(h.get("state") == "DEGRADED" for h in verifier.heartbeats()),
            10,
            "health not DEGRADED",
        )
        sent = verifier.sends_of(report["reportId"])
        await asyncio.sleep(QUIET_SECONDS)
        assert verifier.sends_of(report["reportId"]) <= sent + 1
        assert device.state(REPORTER) is ComponentState.RUNNING


async def test_malformed_and_foreign_verdicts_are_ignored_and_counted(start_device, bootstrap_base: Path):
    async with start_device(
        bootstrap_base, update_config=device_config(), interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        report = await verifier.report()
        device.inject(verifier.verdict_topic, b"{not json")
        device.inject(verifier.verdict_topic, {"schema": "bootstrap-verdict/1", "verdict": "approved"})
        device.inject(verifier.verdict_topic, b"x" * 100_000)
        device.inject(verifier.verdict_topic, verifier.verdict({**report, "reportId": "0" * 32}))
        device.inject(verifier.verdict_topic, verifier.verdict({**report, "thing": "someone-else"}))
        device.inject(verifier.verdict_topic, verifier.verdict({**report, "factsHash": "sha256:" + "0" * 64}))
        await wait_until(
            lambda: device.log(REPORTER).count("bootstrap.verdict_ignored") >= 3,
            20,
            "foreign verdicts not seen",
        )
        assert device.log(REPORTER).count("bootstrap.verdict_malformed") >= 3
        sent = verifier.sends_of(report["reportId"])
        await verifier.report(count=sent + 2, where=lambda r: r["reportId"] == report["reportId"])
        assert not verifier.events("bootstrap.approved")
        assert device.state(REPORTER) is ComponentState.RUNNING

        verifier.answer(report, "approved")
        await verifier.event("bootstrap.approved")


async def test_an_invalid_configuration_is_refused_and_the_last_good_one_kept(
    start_device, bootstrap_base: Path
):
    async with start_device(
        bootstrap_base, update_config=device_config(), interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        report = await verifier.report()
        result = await device.deploy(update_config={REPORTER: {"MERGE": {"collectIntervalSeconds": -1}}})
        assert not result.succeeded
        assert "collectIntervalSeconds" in result.reason
        result = await device.deploy(
            update_config={REPORTER: {"MERGE": {"redact": {"macAddresses": True}, "fleetSalt": "short"}}}
        )
        assert not result.succeeded
        assert "fleetSalt" in result.reason
        assert "short" not in result.reason  # the salt is never echoed
        sent = verifier.sends_of(report["reportId"])
        await verifier.report(count=sent + 2, where=lambda r: r["reportId"] == report["reportId"])
        assert device.state(REPORTER) is ComponentState.RUNNING


async def test_redaction_replaces_mac_addresses_and_makes_a_new_report(start_device, bootstrap_base: Path):
    async with start_device(
        bootstrap_base, update_config=device_config(), interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        first = await verifier.report()
        macs = first["facts"]["macAddresses"]
        result = await device.deploy(
            update_config={REPORTER: {"MERGE": {"redact": {"macAddresses": True}, "fleetSalt": "s" * 24}}}
        )
        assert result.succeeded, result.reason
        if macs["status"] != "ok" or not macs["value"]:
            pytest.skip("this machine has no physical network interface to redact")
        changed = await verifier.report(where=lambda r: r["reportId"] != first["reportId"])
        assert changed["reason"] == "changed"
        for item in changed["facts"]["macAddresses"]["value"]:
            assert item["mac"].startswith("hmac-sha256:")
        assert "s" * 24 not in device.log(REPORTER)


async def test_reject_with_erase_on_reject_crypto_erases_the_store_and_keeps_the_verdict(
    start_device, bootstrap_base: Path
):
    async with start_device(
        bootstrap_base,
        update_config=device_config(eraseOnReject=True),
        interpolate_component_configuration=True,
    ) as device:
        verifier = TestVerifier(device)
        report = await verifier.report()
        verifier.answer(report, "rejected")
        await verifier.event("bootstrap.rejected")
        erased = await verifier.event("store.erased")
        assert erased["details"]["namespace"] == "_admin"
        await verifier.event("bootstrap.store_erased")
        erased_at = verifier.event_time("store.erased")
        await wait_until(
            lambda: verifier.store_saves(after=erased_at) >= 1, 20, "the verdict was not saved again"
        )


async def test_without_the_store_the_reporter_works_in_memory(
    start_device, tmp_path: Path, built_suite: Path
):
    from tests.conftest import install_built  # noqa: PLC0415

    base = install_built(built_suite, tmp_path / "alone", (REPORTER,))
    config = {REPORTER: {"MERGE": device_config()[REPORTER]["MERGE"]}}
    async with start_device(base, update_config=config, interpolate_component_configuration=True) as device:
        verifier = TestVerifier(device)
        report = await verifier.report()
        verifier.answer(report, "approved")
        await verifier.event("bootstrap.approved")
        assert device.state(REPORTER) is ComponentState.RUNNING
        assert "bootstrap.store_unavailable" in device.log(REPORTER)
        await wait_until(
            lambda: any(
                h.get("detail") == "store unavailable: state kept in memory" for h in verifier.heartbeats()
            ),
            30,
            "the heartbeat does not say the store is away",
        )


async def test_periodic_reports_re_verify_and_an_unanswered_report_is_made_anew(
    start_device, bootstrap_base: Path
):
    config = device_config(reportIntervalSeconds=2.0, retry={"refreshAfterSeconds": 2.0})
    async with start_device(
        bootstrap_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        verifier = TestVerifier(device)
        first = await verifier.report()
        # Nobody answers: after refreshAfterSeconds the report is made anew (its time would grow too old).
        fresh = await verifier.report(where=lambda r: r["reportId"] != first["reportId"])
        assert (fresh["reason"], fresh["factsHash"]) == ("periodic", first["factsHash"])
        assert fresh["time"] > first["time"]
        verifier.answer(first, "approved")  # a verdict on the older report changes nothing now
        verifier.answer(fresh, "approved")
        await verifier.event("bootstrap.approved")
        assert len(verifier.events("bootstrap.approved")) == 1
        # Approved: re-verified every reportIntervalSeconds with a new report.
        again = await verifier.report(
            where=lambda r: r["reportId"] not in {first["reportId"], fresh["reportId"]}
        )
        assert again["reason"] == "periodic"
        validator("bootstrap-report.schema.json").validate(again)
