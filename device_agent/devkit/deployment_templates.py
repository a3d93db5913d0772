"""The suite's deployment templates (`deployments/*.json`): read, fill the placeholders, deploy locally.

A template is the input of GreengrassV2 `CreateDeployment` (`aws greengrassv2 create-deployment
--cli-input-json`) with `${NAME}` placeholders: the thing group's ARN parts, the nucleus version the fleet
runs, the device certificate's path. `fill` replaces them (inside each component's `merge`, which is JSON in
a string, too, escaped as JSON); `load_template` reads a template and gives what a virtual device needs:

    template = load_template("production", {"CERTIFICATE_PATH": str(cert)})
    template.suite_components()        # {"com.deviceagent.EncryptedStore": "0.1.0", ...}
    template.update_config()           # {"com.deviceagent.HealthMonitor": {"MERGE": {...}}}, devkit form
    template.interpolate_component_configuration   # the nucleus setting {iot:thingName} in policies needs
    await nucleus.deploy(template.deployment_request())

    python -m device_agent.devkit.deployment_templates fill deployments/production.json --set KEY=VALUE ...
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.devkit.deployment import DeploymentRequest
from device_agent.devkit.errors import DeploymentError

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "deployments"
NUCLEUS = "aws.greengrass.Nucleus"
INTERPOLATE = "interpolateComponentConfiguration"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")

#: Values a placeholder takes when none is given (the thing groups the verifier moves devices between,
#: device_agent_cloud's defaults, and where the Greengrass installer writes the device certificate).
DEFAULTS: Mapping[str, str] = {
    "QUARANTINE_GROUP": "device-agent-quarantine",
    "PRODUCTION_GROUP": "device-agent-production",
    "CERTIFICATE_PATH": "/greengrass/v2/thingCert.crt",
}


@dataclass(frozen=True)
class ComponentDeployment:
    name: str
    version: str
    merge: Mapping[str, Any]
    reset: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploymentTemplate:
    name: str
    document: Mapping[str, Any]
    components: tuple[ComponentDeployment, ...]

    def component(self, name: str) -> ComponentDeployment | None:
        return next((c for c in self.components if c.name == name), None)

    def suite_components(self) -> dict[str, str]:
        """Name -> version of every component but AWS's own (the nucleus and public components)."""
        return {c.name: c.version for c in self.components if not c.name.startswith("aws.")}

    def nucleus_configuration(self) -> Mapping[str, Any]:
        nucleus = self.component(NUCLEUS)
        return {} if nucleus is None else nucleus.merge

    @property
    def interpolate_component_configuration(self) -> bool:
        return self.nucleus_configuration().get(INTERPOLATE) is True

    def update_config(self) -> dict[str, dict[str, Any]]:
        """The suite's configuration updates, as the devkit's `DeploymentRequest.update_config` takes them."""
        updates: dict[str, dict[str, Any]] = {}
        for component in self.components:
            if component.name.startswith("aws.") or not (component.merge or component.reset):
                continue
            unfilled = sorted(set(PLACEHOLDER.findall(json.dumps(component.merge))))
            if unfilled:
                raise DeploymentError(f"template {self.name}: {component.name} needs values for {unfilled}")
            update: dict[str, Any] = {}
            if component.merge:
                update["MERGE"] = dict(component.merge)
            if component.reset:
                update["RESET"] = list(component.reset)
            updates[component.name] = update
        return updates

    def deployment_request(self, *, artifact_dir: Path | None = None) -> DeploymentRequest:
        """The local deployment of this template's suite components, with its configuration updates."""
        return DeploymentRequest(
            artifact_dir=artifact_dir, merge=self.suite_components(), update_config=self.update_config()
        )


def placeholders(document: object) -> set[str]:
    """The `${NAME}` placeholders left anywhere in a template (merge strings included)."""
    return set(PLACEHOLDER.findall(json.dumps(document)))


def _fill_text(text: str, values: Mapping[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def fill(document: Any, values: Mapping[str, str], *, key: str | None = None) -> Any:
    """A copy of `document` with the placeholders that `values` names replaced (others are left)."""
    if isinstance(document, Mapping):
        return {k: fill(v, values, key=k) for k, v in document.items()}
    if isinstance(document, list):
        return [fill(v, values) for v in document]
    if isinstance(document, str):
        if key == "merge":
            # A merge is a JSON document in a string: fill inside it, so a value is escaped as JSON.
            return json.dumps(fill(json.loads(document), values), separators=(",", ":"))
        return _fill_text(document, values)
    return document


def _path(template: str | Path) -> Path:
    path = Path(template)
    if path.suffix != ".json" and not path.exists():
        path = TEMPLATE_DIR / f"{template}.json"
    return path


def load_template(template: str | Path, values: Mapping[str, str] | None = None) -> DeploymentTemplate:
    """Read a template (a name in deployments/ or a path), filled with `values` over `DEFAULTS`."""
    path = _path(template)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"deployment template {path}: {exc}") from exc
    document = fill(raw, {**DEFAULTS, **(values or {})})
    components: list[ComponentDeployment] = []
    for name, spec in document.get("components", {}).items():
        update = spec.get("configurationUpdate") or {}
        try:
            merge = json.loads(update.get("merge") or "{}")
        except ValueError as exc:
            raise DeploymentError(f"template {path.stem}: {name}: merge is not JSON: {exc}") from exc
        if not isinstance(merge, dict):
            raise DeploymentError(f"template {path.stem}: {name}: merge must be a JSON object")
        components.append(
            ComponentDeployment(name, str(spec["componentVersion"]), merge, tuple(update.get("reset") or ()))
        )
    return DeploymentTemplate(path.stem, document, tuple(components))


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not PLACEHOLDER.fullmatch(f"${{{name}}}"):
        msg = f"expected NAME=VALUE with an upper-case NAME, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deployment-templates", description="Fill a deployment template.")
    commands = parser.add_subparsers(dest="command", required=True)
    filling = commands.add_parser("fill", help="print the template with its placeholders filled")
    filling.add_argument("template", help="a name in deployments/ or a path")
    filling.add_argument("--set", type=_assignment, action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    template = load_template(args.template, dict(args.set))
    left = placeholders(template.document)
    if left:
        sys.stderr.write(
            f"deployment-templates: no value for {', '.join(sorted(left))} (use --set NAME=VALUE)\n"
        )
        return 2
    sys.stdout.write(json.dumps(template.document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
