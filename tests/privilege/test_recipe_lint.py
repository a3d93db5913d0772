"""The recipe lint: every recipe in `recipes/` passes it, and each rule is seen to fail on a fixture."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from device_agent import __version__
from device_agent.devkit.recipe_lint import Finding, Recipe, Severity, lint, lint_files, read_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE_FILES = sorted((ROOT / "recipes").glob("*.yaml"))
TELEMETRY = ROOT / "recipes" / "com.deviceagent.TelemetryPublisher.yaml"
NAME = "com.deviceagent.TelemetryPublisher"
PUBSUB, MQTT = "aws.greengrass.ipc.pubsub", "aws.greengrass.ipc.mqttproxy"


def errors(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if f.severity is Severity.ERROR]


def telemetry() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(TELEMETRY.read_text())
    return document


def access(document: dict[str, Any]) -> dict[str, Any]:
    acl: dict[str, Any] = document["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    return acl


def lint_one(document: Any, *, with_model: bool = False) -> list[Finding]:
    model = read_recipe(TELEMETRY).config_model if with_model else None
    return lint([Recipe("fixture.yaml", document, model)])


def only(findings: list[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


# ---- the suite's recipes ------------------------------------------------------------------------------


def test_every_recipe_passes_the_lint_with_its_configuration_model():
    recipes = [read_recipe(path) for path in RECIPE_FILES]
    assert all(r.config_model is not None for r in recipes), [
        r.label for r in recipes if r.config_model is None
    ]
    assert errors(lint(recipes)) == []


def test_the_fixture_base_is_clean_so_each_finding_below_is_its_mutation_alone():
    assert lint_one(telemetry(), with_model=True) == []


def test_the_command_line_exits_non_zero_on_an_error_and_names_it(tmp_path: Path):
    bad = telemetry()
    access(bad)[MQTT][f"{NAME}:mqttproxy:1"]["operations"] = ["*"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    command = [sys.executable, "-m", "device_agent.devkit.recipe_lint", "--no-models"]
    good = subprocess.run([*command, *map(str, RECIPE_FILES)], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stdout
    failed = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert "[operation-star]" in failed.stdout


# ---- each rule, seen to fail ----------------------------------------------------------------------------


def test_an_unquoted_format_version_is_read_as_a_date_and_refused():
    text = TELEMETRY.read_text().replace(
        'RecipeFormatVersion: "2020-01-25"', "RecipeFormatVersion: 2020-01-25"
    )
    [finding] = lint_one(yaml.safe_load(text))
    assert (finding.rule, finding.where) == ("format-version", "RecipeFormatVersion")
    assert "quote" in finding.message


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.update(Extra="x"), "Extra"),
        (lambda d: d.pop("Manifests"), "manifests"),
        (lambda d: d.update(ComponentVersion=1.0), "ComponentVersion"),
        (lambda d: d.update(ComponentName="com example"), "ComponentName"),
        (
            lambda d: d["ComponentDependencies"]["com.deviceagent.EncryptedStore"].update(
                DependencyType="WEAK"
            ),
            "ComponentDependencies.com.deviceagent.EncryptedStore.DependencyType",
        ),
        (lambda d: d["Manifests"][0]["Lifecycle"]["Run"].pop("Script"), "Manifests[0].Lifecycle.Run.Script"),
        (
            lambda d: d["Manifests"][0]["Artifacts"][0].update(Unarchive="TAR"),
            "Manifests[0].Artifacts[0].Unarchive",
        ),
        (lambda d: d["Manifests"][0]["Artifacts"][0].pop("URI"), "Manifests[0].Artifacts[0]"),
    ],
    ids=[
        "unknown key",
        "no manifests",
        "unquoted version",
        "name",
        "dependency type",
        "no script",
        "unarchive",
        "uri",
    ],
)
def test_what_gdks_schema_refuses_is_refused(mutate, where):
    document = telemetry()
    mutate(document)
    assert where in {f.where for f in only(lint_one(document), "schema")}


def test_a_version_other_than_the_suites_is_refused():
    document = telemetry()
    document["ComponentVersion"] = "9.9.9"
    [finding] = lint_one(document)
    assert finding.rule == "version"
    assert __version__ in finding.message


def test_a_star_operation_and_a_bare_star_resource_are_refused():
    document = telemetry()
    access(document)[PUBSUB][f"{NAME}:pubsub:3"]["operations"] = ["*"]
    access(document)[PUBSUB][f"{NAME}:pubsub:3"]["resources"] = ["*"]
    rules = {f.rule: f for f in lint_one(document)}
    assert set(rules) == {"operation-star", "resource-star"}
    assert f"{NAME}:pubsub:3" in rules["operation-star"].where


def test_plus_and_hash_in_pubsub_resources_are_refused_with_a_hint_to_use_star():
    document = telemetry()
    access(document)[PUBSUB][f"{NAME}:pubsub:1"]["resources"] = ["device-agent/store/+/request", "a/#"]
    findings = only(lint_one(document), "pubsub-wildcard")
    assert [f.severity for f in findings] == [Severity.ERROR, Severity.ERROR]
    assert all("use `*`" in f.message for f in findings)
    assert "device-agent/store/+/request" in findings[0].message


def test_a_literal_filter_in_a_subscribe_only_policy_is_a_warning():
    document = telemetry()
    access(document)[PUBSUB][f"{NAME}:pubsub:2"]["resources"] = ["device-agent/store/+/response"]
    [finding] = only(lint_one(document), "pubsub-wildcard")
    assert finding.severity is Severity.WARNING


def test_an_iot_core_resource_not_pinned_to_the_thing_is_refused():
    document = telemetry()
    access(document)[MQTT][f"{NAME}:mqttproxy:1"]["resources"] = ["dt/device-agent/+/telemetry"]
    [finding] = lint_one(document)
    assert finding.rule == "iot-thing"
    assert "dt/device-agent/+/telemetry" in finding.message


def test_policy_ids_are_unique_across_recipes_and_start_with_the_component_name():
    store = yaml.safe_load((ROOT / "recipes" / "com.deviceagent.EncryptedStore.yaml").read_text())
    thief = telemetry()
    access(thief)[PUBSUB]["com.deviceagent.EncryptedStore:pubsub:1"] = access(thief)[PUBSUB].pop(
        f"{NAME}:pubsub:1"
    )
    findings = lint([Recipe("store.yaml", store), Recipe("thief.yaml", thief)])
    policy = only(findings, "policy-id")
    assert {(f.recipe, f.where) for f in policy} >= {
        ("thief.yaml", "com.deviceagent.EncryptedStore:pubsub:1")
    }
    assert any("also used in store.yaml" in f.message for f in policy)
    assert any("start policy ids with the component's name" in f.message for f in policy)


def test_a_policy_the_nucleus_would_refuse_is_refused():
    document = telemetry()
    access(document)[PUBSUB][f"{NAME}:pubsub:1"]["operations"] = ["aws.greengrass#PublishToTopics"]
    [finding] = lint_one(document)
    assert finding.rule == "access-policy"
    assert "PublishToTopics" in finding.message


@pytest.mark.parametrize("value", [True, "true", "TRUE"])
def test_a_step_that_requires_privilege_is_refused(value):
    document = telemetry()
    document["Manifests"][0]["Lifecycle"]["Install"] = {"Script": "true", "RequiresPrivilege": value}
    [finding] = lint_one(document)
    assert (finding.rule, finding.where) == ("privilege", "Manifests[0].Lifecycle.Install.RequiresPrivilege")


SHIPPED_INSTALL = (
    "python3 -m device_agent.install"
    ' --artifact "{artifacts:decompressedPath}/com.deviceagent.TelemetryPublisher" --work "{work:path}"'
)


def with_install(script: str, *, as_string: bool = False) -> list[Finding]:
    document = telemetry()
    lifecycle = document["Manifests"][0]["Lifecycle"]
    assert " ".join(lifecycle["Install"]["Script"].split()) == SHIPPED_INSTALL  # the fixture's base
    lifecycle["Install"] = script if as_string else {**lifecycle["Install"], "Script": script}
    return lint_one(document)


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        (
            "python3 -m device_agent.install --artifact x --work /var/lib/agent",
            "'/var/lib/agent': a path outside",
        ),
        ('mkdir -p "{kernel:rootPath}/x"', "{kernel:rootPath}: Install may use only"),
        ("python3 -m device_agent.install --work {artifacts:decompressedPath}/x", "--work {artifacts:"),
        ("echo done > {artifacts:path}/marker", "> {artifacts:path}/marker: Install writes only under"),
        ("cp -r {artifacts:path}/x ~/x", "'~/x': a path outside"),
        ("python3 -m device_agent.install --artifact {work:path}/../other", "../other': a path outside"),
        ("python3 -m pip install --no-index -r $LOCK", "-r $LOCK: Install reads only the artifacts"),
        ("chmod 777 venv", "chmod 777: nothing Install makes may be writable by others"),
        ("chmod -R o+w {work:path}/venv", "chmod o+w: nothing"),
    ],
    ids=[
        "absolute",
        "variable",
        "work-in-artifacts",
        "redirect",
        "home",
        "dotdot",
        "env-source",
        "777",
        "o+w",
    ],
)
def test_an_install_that_touches_anything_but_its_work_folder_and_artifacts_is_refused(script, problem):
    findings = with_install(script)
    assert [f.rule for f in findings] == ["install-paths"]
    assert problem in findings[0].message
    assert findings[0].where == "Manifests[0].Lifecycle.Install.Script"


def test_an_install_in_its_work_folder_from_its_artifacts_passes_and_a_string_step_is_checked_too():
    assert with_install(SHIPPED_INSTALL) == []
    assert with_install("mkdir -p venv && echo ok > venv/marker && cp {artifacts:path}/a.txt .") == []
    [finding] = with_install("cat /etc/shadow > x", as_string=True)
    assert (finding.rule, finding.where) == ("install-paths", "Manifests[0].Lifecycle.Install")


@pytest.mark.parametrize(
    ("script", "fetch"),
    [
        ("pip3 install -r {artifacts:path}/requirements.txt", "pip3 install (without --no-index)"),
        ("python3 -m pip install --user awsiotsdk", "pip install (without --no-index)"),
        ("curl -fsSL https://example.com/get.sh -o get.sh && sh get.sh", "curl"),
        ("apt-get install -y python3-venv", "apt-get install"),
        ("git clone https://example.com/repo.git", "git clone"),
    ],
)
def test_an_install_that_reaches_the_network_is_a_warning(script, fetch):
    [finding] = with_install(script)
    assert (finding.rule, finding.severity) == ("install-online", Severity.WARNING)
    assert finding.message.startswith(f"{fetch}:")


@pytest.mark.parametrize("wheels", [True, False], ids=["offline build", "online build"])
def test_a_built_recipe_whose_zip_has_no_wheels_installs_online_a_warning(tmp_path: Path, wheels: bool):
    # GDK's layout: greengrass-build/recipes/<name>.yaml beside artifacts/<name>/<version>/<name>.zip.
    recipes = tmp_path / "greengrass-build" / "recipes"
    recipes.mkdir(parents=True)
    shutil.copy(TELEMETRY, recipes / TELEMETRY.name)
    artifact = tmp_path / "greengrass-build" / "artifacts" / NAME / __version__ / f"{NAME}.zip"
    artifact.parent.mkdir(parents=True)
    with zipfile.ZipFile(artifact, "w") as archive:
        archive.writestr("requirements/device.lock", "")
        if wheels:
            archive.writestr("wheels/pip-24.0-py3-none-any.whl", "")
    findings = lint_files([recipes / TELEMETRY.name], with_models=False)
    if wheels:
        assert findings == []
    else:
        [finding] = findings
        assert (finding.rule, finding.severity) == ("install-online", Severity.WARNING)
        assert finding.message.startswith("device_agent.install of a build without wheels:")
    # The source recipe says nothing either way: which build it ships in is not known there.
    assert lint_files([TELEMETRY], with_models=False) == []


def test_an_install_from_bundled_wheels_only_is_not_online():
    script = "python3 -m pip install --no-index --find-links {artifacts:decompressedPath}/wheels -r x.lock"
    assert with_install(script) == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"Unarchive": "NONE"}, "Manifests[0].Artifacts[0].Unarchive"),
        ({"Permission": {"Read": "ALL", "Execute": "NONE"}}, "Manifests[0].Artifacts[0].Permission.Read"),
        (
            {"Permission": {"Read": "OWNER", "Execute": "OWNER"}},
            "Manifests[0].Artifacts[0].Permission.Execute",
        ),
        ({"Permission": None}, "Manifests[0].Artifacts[0].Permission"),
    ],
)
def test_artifacts_are_owner_read_only_zips(change, where):
    document = telemetry()
    document["Manifests"][0]["Artifacts"][0].update(change)
    [finding] = lint_one(document)
    assert (finding.rule, finding.where) == ("artifact", where)


def test_a_secret_looking_default_with_a_value_is_refused_and_a_reference_or_empty_one_is_not():
    document = telemetry()
    defaults = document["ComponentConfiguration"]["DefaultConfiguration"]
    defaults["mqttPassword"] = "hunter2"
    defaults["budget"]["apiToken"] = "abc"
    defaults["privateKey"] = ""
    defaults["secretId"] = "device-agent/store-key"
    defaults["privateKeyPath"] = "/greengrass/v2/privKey.key"
    findings = lint_one(document)
    assert {f.where for f in only(findings, "secret-default")} == {
        "DefaultConfiguration.mqttPassword",
        "DefaultConfiguration.budget.apiToken",
    }
    assert all("hunter2" not in str(f) for f in findings)


def test_a_key_the_component_reads_without_a_default_and_one_it_does_not_know_are_refused():
    document = telemetry()
    defaults = document["ComponentConfiguration"]["DefaultConfiguration"]
    del defaults["batchSize"]
    del defaults["spool"]["capSamples"]
    defaults["batchSise"] = 100
    findings = only(lint_one(document, with_model=True), "config-defaults")
    assert {(f.where, f.message) for f in findings} == {
        ("DefaultConfiguration.batchSize", "a key the component reads has no default"),
        ("DefaultConfiguration.spool.capSamples", "a key the component reads has no default"),
        ("DefaultConfiguration.batchSise", "a key the component does not know"),
    }


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_a_default_other_than_the_models_is_refused_for_every_component(path: Path):
    recipe = read_recipe(path)
    document = copy.deepcopy(recipe.document)
    defaults = document["ComponentConfiguration"]["DefaultConfiguration"]
    assert defaults["heartbeatIntervalSeconds"] == 30.0  # the runtime's default, read by every component
    defaults["heartbeatIntervalSeconds"] = 31.0
    findings = lint([Recipe(recipe.label, document, recipe.config_model)])
    assert [(f.rule, f.where, f.message) for f in findings if f.severity is Severity.ERROR] == [
        (
            "config-defaults",
            "DefaultConfiguration.heartbeatIntervalSeconds",
            "not the component's default: 31.0, the model's is 30.0 (change both, or neither)",
        )
    ]


def test_a_wrong_nested_default_is_refused_and_the_same_value_written_differently_is_not():
    document = telemetry()
    defaults = document["ComponentConfiguration"]["DefaultConfiguration"]
    defaults["spool"]["capSamples"] = 100
    defaults["groups"] = ["cpu"]
    defaults["intervalSeconds"] = 10  # the model's 10.0, as an integer
    findings = only(lint_one(document, with_model=True), "config-defaults")
    assert {f.where for f in findings} == {
        "DefaultConfiguration.spool.capSamples",
        "DefaultConfiguration.groups",
    }


def test_lint_files_reads_and_lints_what_is_on_disk(tmp_path: Path):
    path = tmp_path / "r.yaml"
    document = copy.deepcopy(telemetry())
    document["Manifests"][0]["Lifecycle"]["Run"]["RequiresPrivilege"] = True
    path.write_text(yaml.safe_dump(document))
    assert [f.rule for f in lint_files([path], with_models=False)] == ["privilege"]


def test_gg_virtual_recipe_lint_runs_the_same_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from device_agent.devkit.cli import main  # noqa: PLC0415

    document = telemetry()
    document["Manifests"][0]["Artifacts"][0]["Permission"]["Read"] = "ALL"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["recipe", "lint", *map(str, RECIPE_FILES)]) == 0
    assert main(["recipe", "lint", "--no-models", str(path)]) == 1
    assert "[artifact] Manifests[0].Artifacts[0].Permission.Read" in capsys.readouterr().out
