"""`device-agent-verifier`: the verifier's command line (docs/verifier.md).

    device-agent-verifier serve --broker mqtts://127.0.0.1:8883 --ca ca.crt --cert verifier.crt \\
        --key verifier.key --policy policy.json --registry registry.json --audit audit.jsonl
    device-agent-verifier verify --report report.json --policy policy.json [--registry registry.json]
    device-agent-verifier csr --thing NAME --key private.pem.key > device.csr          (on the device)
    device-agent-verifier provision --thing NAME --thing-type TYPE --csr device.csr --certificate-out CERT
        [--local --registry registry.json --ca-dir <devkit pki>/ca]
    device-agent-verifier policies [--region R --account A --role-alias ALIAS] [--name quarantine]

`verify` is a dry run: no group moves, no audit record, no verdict published. Its exit status is 0 when
approved, 2 rejected, 3 pending, 4 when the report itself is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from device_agent.errors import DeviceAgentError
from device_agent_cloud.errors import InvalidReportError, VerifierError
from device_agent_cloud.iot_policy import TEMPLATES, render
from device_agent_cloud.policy import load_policy
from device_agent_cloud.registry import LocalRegistry, ThingRecord
from device_agent_cloud.report import MAX_REPORT_BYTES, parse_report
from device_agent_cloud.rules import evaluate
from device_agent_cloud.verify import DEFAULT_IDENTITY, Groups

EXIT_CODES = {"approved": 0, "rejected": 2, "pending": 3, "refused": 4}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="device-agent-verifier", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the verifier on an MQTT broker (virtual fleet)")
    serve.add_argument("--broker", required=True, help="mqtts://HOST:PORT")
    serve.add_argument("--ca", type=Path, required=True, help="CA certificate that signed the broker's")
    serve.add_argument("--cert", type=Path, required=True, help="the verifier's client certificate")
    serve.add_argument("--key", type=Path, required=True, help="the verifier's private key")
    serve.add_argument("--client-id", default=DEFAULT_IDENTITY)
    _common(serve)
    serve.add_argument("--registry", type=Path, required=True, help="the local registry file")
    serve.add_argument("--audit", type=Path, required=True, help="the audit log (JSON lines)")

    verify = commands.add_parser("verify", help="dry run: evaluate one report file")
    verify.add_argument("--report", type=Path, required=True)
    verify.add_argument("--policy", type=Path, required=True)
    verify.add_argument("--registry", type=Path, help="take the thing's type and certificates from here")
    verify.add_argument("--thing-type", help="without --registry: the rules to apply")
    verify.add_argument(
        "--certificate-sha256", help="without --registry: the certificate attached to the thing"
    )

    csr = commands.add_parser("csr", help="device side: create a private key and print a CSR")
    csr.add_argument("--thing", required=True)
    csr.add_argument("--key", type=Path, required=True, help="where to create the private key (0600)")
    csr.add_argument("--key-type", choices=("ec-p256", "rsa-2048"), default="ec-p256")

    provision = commands.add_parser("provision", help="cloud side: certificate, thing, quarantine")
    provision.add_argument("--thing", required=True)
    provision.add_argument("--thing-type", required=True)
    provision.add_argument("--csr", type=Path, required=True)
    provision.add_argument("--certificate-out", type=Path, required=True)
    provision.add_argument(
        "--local", action="store_true", help="sign with a local CA, write a local registry"
    )
    provision.add_argument("--registry", type=Path, help="with --local: the registry file")
    provision.add_argument("--ca-dir", type=Path, help="with --local: the directory with ca.crt and ca.key")
    provision.add_argument("--region", help="AWS: default from the environment")
    provision.add_argument("--account", help="AWS: default from STS")
    provision.add_argument("--role-alias", default="GreengrassV2TokenExchangeRoleAlias")
    provision.add_argument("--quarantine-group", default=Groups().quarantine)
    provision.add_argument("--production-group", default=Groups().production)

    policies = commands.add_parser("policies", help="print the IoT policy templates, rendered")
    policies.add_argument("--region", default="us-east-1")
    policies.add_argument("--account", default="123456789012")
    policies.add_argument("--role-alias", default="GreengrassV2TokenExchangeRoleAlias")
    policies.add_argument("--name", choices=TEMPLATES)
    return parser


def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument("--policy", type=Path, required=True, help="the verifier policy file")
    command.add_argument("--quarantine-group", default=Groups().quarantine)
    command.add_argument("--production-group", default=Groups().production)
    command.add_argument("--identity", default=DEFAULT_IDENTITY, help="who decides, in the audit trail")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        match args.command:
            case "serve":
                return _serve(args)
            case "verify":
                return _verify(args)
            case "csr":
                return _csr(args)
            case "provision":
                return _provision(args)
            case _:
                return _policies(args)
    except (VerifierError, DeviceAgentError, ValueError) as error:
        print(f"device-agent-verifier: {error}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    from device_agent_cloud.audit import JsonLinesAuditLog  # noqa: PLC0415 - only this command needs them
    from device_agent_cloud.service import BrokerSettings, VerifierService  # noqa: PLC0415
    from device_agent_cloud.verify import Verifier  # noqa: PLC0415

    url = urlsplit(args.broker)
    if url.scheme != "mqtts" or not url.hostname:
        raise ValueError("--broker must be mqtts://HOST:PORT (mutual TLS only)")
    verifier = Verifier(
        policy=load_policy(args.policy),
        registry=LocalRegistry(args.registry),
        audit=JsonLinesAuditLog(args.audit),
        groups=Groups(quarantine=args.quarantine_group, production=args.production_group),
        identity=args.identity,
        # An MQTT broker does not tell a subscriber which certificate published a message: the local
        # service cannot check the connection's certificate, only the registry's (docs/verifier.md).
        principal_required=False,
    )
    settings = BrokerSettings(
        host=url.hostname,
        port=url.port or 8883,
        ca_file=args.ca,
        cert_file=args.cert,
        key_file=args.key,
        client_id=args.client_id,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(VerifierService(verifier, settings).run())
    return 0


def _verify(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    data = args.report.read_bytes()[: MAX_REPORT_BYTES + 1]
    try:
        report = parse_report(data)
    except InvalidReportError as error:
        print(json.dumps({"outcome": "refused", "reason": str(error)}))
        return EXIT_CODES["refused"]
    if args.registry is not None:
        thing = LocalRegistry(args.registry).describe(report.thing)
    else:
        thing = ThingRecord(
            name=report.thing,
            thing_type=args.thing_type,
            certificate_fingerprints=frozenset(
                {args.certificate_sha256} if args.certificate_sha256 else set()
            ),
            groups=frozenset(),
        )
    rules = policy.rules_for(thing.thing_type)
    evaluation = evaluate(report, rules, thing, now=dt.datetime.now(dt.UTC))
    print(
        json.dumps(
            {
                "outcome": evaluation.outcome,
                "rules": rules.name,
                "failedRules": list(evaluation.failed_rules),
                "reason": evaluation.reason,
            }
        )
    )
    return EXIT_CODES[evaluation.outcome]


def _csr(args: argparse.Namespace) -> int:
    from device_agent.provisioning import create_key_and_csr  # noqa: PLC0415

    sys.stdout.write(create_key_and_csr(args.key, args.thing, key_type=args.key_type).decode("ascii"))
    return 0


def _provision(args: argparse.Namespace) -> int:
    from device_agent.provisioning import write_certificate  # noqa: PLC0415
    from device_agent_cloud.provision import (  # noqa: PLC0415
        FleetSettings,
        LocalCaSigner,
        provision_aws,
        provision_local,
        summary,
    )

    groups = Groups(quarantine=args.quarantine_group, production=args.production_group)
    csr = args.csr.read_bytes()
    if args.local:
        if args.registry is None or args.ca_dir is None:
            raise ValueError("--local needs --registry and --ca-dir")
        signer = LocalCaSigner(args.ca_dir / "ca.crt", args.ca_dir / "ca.key")
        result = provision_local(
            LocalRegistry(args.registry),
            thing=args.thing,
            thing_type=args.thing_type,
            csr_pem=csr,
            sign=signer,
            groups=groups,
        )
    else:
        import boto3  # noqa: PLC0415 - the cloud extra

        session = boto3.session.Session(region_name=args.region)
        account = args.account or session.client("sts").get_caller_identity()["Account"]
        settings = FleetSettings(
            region=session.region_name, account=account, groups=groups, role_alias=args.role_alias
        )
        result = provision_aws(
            session.client("iot"),
            thing=args.thing,
            thing_type=args.thing_type,
            csr_pem=csr,
            settings=settings,
        )
    write_certificate(args.certificate_out, result.certificate_pem)
    print(summary(result))
    return 0


def _policies(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else list(TEMPLATES)
    rendered = {
        name: json.loads(render(name, region=args.region, account=args.account, role_alias=args.role_alias))
        for name in names
    }
    print(json.dumps(rendered if len(names) > 1 else rendered[names[0]], indent=2))
    return 0
