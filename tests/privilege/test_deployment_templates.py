"""The deployment templates: valid CreateDeployment input, the suite's recipes at their versions with their
hard dependencies, the nucleus setting the policies need, no secret in a merge, and accepted by the local
nucleus with their configuration merges (each component reaches RUNNING)."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator

from device_agent.devkit.deployment_templates import (
    DEFAULTS,
    TEMPLATE_DIR,
    DeploymentTemplate,
    fill,
    load_template,
    placeholders,
)
from device_agent.devkit.errors import DeploymentError
from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.pki import LocalCa
from device_agent.devkit.recipe_lint import secret_values
from tests.conftest import install_built

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {
    (doc := yaml.safe_load(path.read_text()))["ComponentName"]: doc
    for path in sorted((ROOT / "recipes").glob("*.yaml"))
}
TEMPLATES = sorted(p.stem for p in TEMPLATE_DIR.glob("*.json"))
VALUES = {
    "AWS_REGION": "eu-west-1",
    "AWS_ACCOUNT_ID": "123456789012",
    "NUCLEUS_VERSION": "2.17.0",
    "CERTIFICATE_PATH": "/greengrass/v2/thingCert.crt",
}
STORE, REPORTER = "com.deviceagent.EncryptedStore", "com.deviceagent.BootstrapReporter"


def template(name: str) -> DeploymentTemplate:
    return load_template(name, VALUES)


def test_there_is_a_quarantine_and_a_production_template():
    assert TEMPLATES == ["production", "quarantine"]
    assert set(template("quarantine").suite_components()) == {STORE, REPORTER}
    assert set(template("production").suite_components()) == set(RECIPES)


@pytest.mark.parametrize("name", TEMPLATES)
def test_a_filled_template_is_valid_create_deployment_input(name: str):
    document = template(name).document
    assert placeholders(document) == set()
    model = botocore.session.get_session().get_service_model("greengrassv2")
    report = ParamValidator().validate(document, model.operation_model("CreateDeployment").input_shape)
    assert not report.has_errors(), report.generate_report()
    group = DEFAULTS[f"{name.upper()}_GROUP"]
    assert document["targetArn"] == f"arn:aws:iot:eu-west-1:123456789012:thinggroup/{group}"
    policies = document["deploymentPolicies"]
    assert policies["failureHandlingPolicy"] == "ROLLBACK"
    job = document["iotJobConfiguration"]
    assert job["jobExecutionsRolloutConfig"]["exponentialRate"]["baseRatePerMinute"] >= 1
    assert {c["failureType"] for c in job["abortConfig"]["criteriaList"]} >= {"FAILED"}


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_template_names_the_recipes_at_their_versions_with_their_hard_dependencies(name: str):
    deployed = template(name).suite_components()
    for component, version in deployed.items():
        assert component in RECIPES, f"{name}: {component} has no recipe in recipes/"
        assert version == RECIPES[component]["ComponentVersion"], component
        for dependency, spec in (RECIPES[component].get("ComponentDependencies") or {}).items():
            if spec.get("DependencyType", "HARD").upper() == "HARD":
                assert dependency in deployed, f"{name}: {component} needs {dependency} (HARD)"


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_nucleus_interpolates_component_configuration_as_the_policies_need(name: str):
    loaded = template(name)
    assert loaded.interpolate_component_configuration
    assert loaded.nucleus_configuration() == {"interpolateComponentConfiguration": True}
    uses_thing = any("{iot:thingName}" in json.dumps(RECIPES[c]) for c in loaded.suite_components())
    assert uses_thing  # the setting is there because a deployed policy needs it


@pytest.mark.parametrize("name", TEMPLATES)
def test_no_merge_holds_a_secret_and_every_merged_key_is_a_recipe_default(name: str):
    for component, update in template(name).update_config().items():
        assert secret_values(update["MERGE"]) == []
        defaults = RECIPES[component]["ComponentConfiguration"]["DefaultConfiguration"]
        assert set(update["MERGE"]) <= set(defaults) - {"accessControl"}, component


def test_filling_escapes_a_value_inside_a_merge_as_json_and_leaves_unknown_placeholders():
    merge = {
        "configurationUpdate": {"merge": '{"certificatePath":"${CERTIFICATE_PATH}"}'},
        "arn": "${X}/${Y}",
    }
    filled = fill(merge, {"CERTIFICATE_PATH": 'a "quoted" \\ path', "X": "x"})
    assert json.loads(filled["configurationUpdate"]["merge"]) == {"certificatePath": 'a "quoted" \\ path'}
    assert filled["arn"] == "x/${Y}"
    assert placeholders(filled) == {"Y"}


def test_a_merge_left_unfilled_is_refused_before_it_reaches_a_device(tmp_path: Path):
    raw = json.loads((TEMPLATE_DIR / "quarantine.json").read_text())
    raw["components"][REPORTER]["configurationUpdate"]["merge"] = '{"certificatePath":"${DEVICE_CERT}"}'
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DeploymentError, match="DEVICE_CERT"):
        load_template(path).update_config()


@pytest.mark.slow
@pytest.mark.parametrize("name", TEMPLATES)
async def test_the_local_nucleus_accepts_the_template_and_runs_every_component(
    name: str, start_device, built_suite: Path, tmp_path: Path
):
    certificate = LocalCa.open(tmp_path / "ca").issue_client("virtual-device").cert
    loaded = load_template(name, {**VALUES, "CERTIFICATE_PATH": str(certificate)})
    base = install_built(built_suite, tmp_path / "base", tuple(loaded.suite_components()))
    async with start_device(
        base,
        merge=loaded.suite_components(),
        update_config=loaded.update_config(),
        interpolate_component_configuration=loaded.interpolate_component_configuration,
    ) as device:
        for component in loaded.suite_components():
            await device.wait_for_state(component, ComponentState.RUNNING, timeout=60)
        for component, update in loaded.update_config().items():
            configuration = device.nucleus.config_store.get(component, [])
            assert configuration["certificatePath"] == update["MERGE"]["certificatePath"] == str(certificate)


def test_a_component_in_both_groups_has_the_same_version_and_merge_in_both():
    # A device promoted (or demoted) between the groups keeps what both deploy, unchanged: no restart.
    quarantine, production = template("quarantine"), template("production")
    for component in quarantine.components:
        assert production.component(component.name) == component, component.name
