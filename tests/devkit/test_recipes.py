"""Recipe loading, manifest selection, version requirements, artifact installation and interpolation."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform as stdlib_platform
import stat
import tempfile
import textwrap
import zipfile
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.devkit.errors import RecipeError
from device_agent.devkit.recipe_model import (
    Artifact,
    DependencyType,
    StepName,
    Unarchive,
    thaw_json,
)
from device_agent.devkit.recipes import (
    InterpolationContext,
    Platform,
    artifact_file_mode,
    install_artifacts,
    interpolate,
    interpolate_configuration,
    interpolate_lifecycle,
    java_double_text,
    load_recipe,
    load_recipe_dir,
    parse_requirement,
    parse_skipif,
    parse_version,
    satisfies,
)

DATA = Path(__file__).parent / "data" / "recipes"
LINUX_AMD64 = Platform("linux", "amd64")
LINUX_ARM = Platform("linux", "arm", "armv7l")

HEADER = """\
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.Test
ComponentVersion: '1.0.0'
"""


def write(tmp_path: Path, body: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def load(tmp_path: Path, body: str, platform: Platform = LINUX_AMD64):
    return load_recipe(write(tmp_path, body), platform=platform)


def with_manifest(extra: str) -> str:
    return HEADER + textwrap.dedent(extra)


# --------------------------------------------------------------------------------------------------
# Valid recipes


@pytest.mark.parametrize("name", ["com.example.Hello-1.0.0.yaml", "com.example.Hello-1.0.0.json"])
def test_full_recipe_loads_the_same_from_yaml_and_json(name: str) -> None:
    recipe = load_recipe(DATA / name, platform=LINUX_AMD64)
    assert recipe.ref == "com.example.Hello=1.0.0"
    assert recipe.description == "Says hello."
    assert recipe.publisher == "device-agent"
    assert recipe.component_type == "aws.greengrass.generic"
    base = recipe.dependencies["com.example.Base"]
    assert (base.version_requirement, base.dependency_type) == (">=1.0.0 <2.0.0", DependencyType.HARD)
    assert recipe.dependencies["aws.greengrass.Nucleus"].dependency_type is DependencyType.SOFT
    config = recipe.default_configuration
    assert isinstance(config, MappingProxyType)
    assert config["nested"] == {"b": 1, "a": [True, None, 1.5]}
    assert json.loads(json.dumps(thaw_json(config))) == thaw_json(config)
    assert "accessControl" in config
    # The linux manifest is the second one: the first (windows) does not match.
    assert recipe.lifecycle.setenv == {"GREETING": "{configuration:/greeting}"}
    install = recipe.lifecycle.step(StepName.INSTALL)
    assert install is not None
    assert install.timeout == 300.0
    assert install.skipif == "onpath hello"
    assert install.requires_privilege is False
    run = recipe.lifecycle.step(StepName.RUN)
    assert run is not None
    assert run.script == "python3 -u {artifacts:decompressedPath}/hello/main.py"
    assert run.setenv == {"DEBUG": "true", "RETRIES": "2"}  # Java toString of YAML booleans and numbers
    assert recipe.lifecycle.step(StepName.STARTUP) is None
    zip_artifact, txt = recipe.artifacts
    assert zip_artifact.unarchive is Unarchive.ZIP
    assert (zip_artifact.read, zip_artifact.execute) == ("ALL", "OWNER")
    assert (txt.read, txt.execute, txt.unarchive) == ("OWNER", "NONE", Unarchive.NONE)


def test_keys_and_enum_values_are_case_insensitive(tmp_path: Path) -> None:
    recipe = load(
        tmp_path,
        """\
        recipeformatversion: '2020-01-25'
        COMPONENTNAME: com.example.Lower
        componentVersion: 2.1.3-beta.1+build.5
        componenttype: AWS.Greengrass.Generic
        manifests:
          - platform: {os: linux}
            lifecycle:
              install: {script: echo hi, requiresprivilege: 'true'}
              RUN: echo run
            artifacts:
              - uri: greengrass:some%20file.zip
                unarchive: zip
                permission: {read: all, execute: all}
        """,
    )
    assert recipe.ref == "com.example.Lower=2.1.3-beta.1+build.5"
    assert recipe.component_type == "aws.greengrass.generic"
    install = recipe.lifecycle.step(StepName.INSTALL)
    assert install is not None
    assert install.requires_privilege is True
    run = recipe.lifecycle.step(StepName.RUN)
    assert run is not None
    assert run.script == "echo run"
    (artifact,) = recipe.artifacts
    assert (artifact.unarchive, artifact.read, artifact.execute) == (Unarchive.ZIP, "ALL", "ALL")


def test_yaml_dates_and_odd_keys_in_configuration_stay_as_written(tmp_path: Path) -> None:
    recipe = load(
        tmp_path,
        with_manifest("""\
        ComponentConfiguration:
          DefaultConfiguration:
            since: 2020-01-25
            1: one
            yes: true
        Manifests: [{Lifecycle: {Run: 'true'}}]
        """),
    )
    assert thaw_json(recipe.default_configuration) == {"since": "2020-01-25", "1": "one", "yes": True}
    assert type(recipe.default_configuration["since"]) is str


def test_json_recipe_works_without_yaml_import(tmp_path: Path) -> None:
    doc = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Json",
        "ComponentVersion": "0.1.0",
        "Manifests": [{"Lifecycle": {"Run": {"Script": "echo hi", "Timeout": "30"}}}],
    }
    recipe = load_recipe(write(tmp_path, json.dumps(doc), "r.json"), platform=LINUX_AMD64)
    run = recipe.lifecycle.step(StepName.RUN)
    assert run is not None
    assert run.timeout == 30.0


# --------------------------------------------------------------------------------------------------
# Manifest selection


@pytest.mark.parametrize(
    ("platform_yaml", "platform", "matches"),
    [
        ("{os: linux}", LINUX_AMD64, True),
        ("{os: linux, architecture: amd64}", LINUX_AMD64, True),
        ("{os: linux, architecture: aarch64}", LINUX_AMD64, False),
        ("{os: '*', architecture: '*'}", LINUX_AMD64, True),
        ("{}", LINUX_AMD64, True),
        ("{os: all, architecture: any}", LINUX_AMD64, True),
        ("{os: darwin}", LINUX_AMD64, False),
        ("{os: Linux}", LINUX_AMD64, False),  # labels are case-sensitive
        ("{architecture: arm, architecture.detail: armv7l}", LINUX_ARM, True),
        ("{architecture: arm, architecture.detail: armv6l}", LINUX_ARM, False),
        ("{architecture.detail: armv7l}", LINUX_AMD64, False),  # no detail off ARM
        ("{architecture: '/amd64|aarch64/'}", LINUX_AMD64, True),  # the nucleus's /regex/ templates
        ("{architecture: '/aarch.*/'}", LINUX_AMD64, False),
        ("{os: '!linux'}", LINUX_AMD64, False),  # reserved special labels never match
        ("{runtime: aws_nucleus_lite}", LINUX_AMD64, False),  # an attribute the platform lacks
        ("{os: ~}", LINUX_AMD64, True),  # null template is a wildcard
    ],
)
def test_manifest_platform_matching(
    tmp_path: Path, platform_yaml: str, platform: Platform, matches: bool
) -> None:
    body = with_manifest(f"Manifests:\n  - Platform: {platform_yaml}\n    Lifecycle: {{Run: chosen}}\n")
    if matches:
        run = load(tmp_path, body, platform).lifecycle.step(StepName.RUN)
        assert run is not None
        assert run.script == "chosen"
    else:
        with pytest.raises(
            RecipeError, match=rf"recipe.yaml: Manifests: no manifest for linux/{platform.architecture}"
        ):
            load(tmp_path, body, platform)


def test_first_matching_manifest_wins(tmp_path: Path) -> None:
    recipe = load(
        tmp_path,
        with_manifest("""\
        Manifests:
          - Platform: {os: linux, architecture: aarch64}
            Lifecycle: {Run: arm}
          - Platform: {os: linux}
            Lifecycle: {Run: first}
          - Lifecycle: {Run: second}
        """),
    )
    run = recipe.lifecycle.step(StepName.RUN)
    assert run is not None
    assert run.script == "first"


def test_top_level_lifecycle_with_selections(tmp_path: Path) -> None:
    body = with_manifest("""\
        Manifests:
          - Platform: {os: linux}
            Selections: [linux]
          - Platform: {os: darwin}
            Selections: [macos]
        Lifecycle:
          linux:
            Run: echo linux
          macos:
            Run: echo mac
          all:
            Run: echo all
        """)
    run = load(tmp_path, body).lifecycle.step(StepName.RUN)
    assert run is not None
    assert run.script == "echo linux"
    darwin = load(tmp_path, body, Platform("darwin", "amd64")).lifecycle.step(StepName.RUN)
    assert darwin is not None
    assert darwin.script == "echo mac"


def test_top_level_lifecycle_without_selections_and_all_fallback(tmp_path: Path) -> None:
    direct = load(tmp_path, with_manifest("Manifests: [{Platform: {os: linux}}]\nLifecycle: {Run: direct}\n"))
    run = direct.lifecycle.step(StepName.RUN)
    assert run is not None
    assert run.script == "direct"
    fallback = load(
        tmp_path,
        with_manifest(
            "Manifests: [{Selections: [linux]}]\nLifecycle: {windows: {Run: w}, all: {Run: any}}\n"
        ),
    )
    run = fallback.lifecycle.step(StepName.RUN)
    assert run is not None
    assert run.script == "any"


def test_nested_selectors_inside_a_step(tmp_path: Path) -> None:
    recipe = load(
        tmp_path,
        with_manifest("""\
        Manifests: [{Selections: [linux]}, {Selections: [windows]}]
        Lifecycle:
          Run:
            Script: {linux: echo nested, windows: echo win}
            Timeout: {all: 5}
        """),
    )
    run = recipe.lifecycle.step(StepName.RUN)
    assert run is not None
    assert (run.script, run.timeout) == ("echo nested", 5.0)


def test_error_in_a_selected_branch_names_its_path_in_the_file(tmp_path: Path) -> None:
    body = with_manifest("""\
        Manifests: [{Selections: [linux]}]
        Lifecycle:
          linux:
            Run: {Script: x, Timeout: abc}
        """)
    with pytest.raises(
        RecipeError, match=r"recipe.yaml: Lifecycle.linux.Run.Timeout: expected a number, got 'abc'"
    ):
        load(tmp_path, body)


def test_manifest_lifecycle_wins_over_top_level(tmp_path: Path) -> None:
    recipe = load(
        tmp_path,
        with_manifest("Manifests: [{Lifecycle: {Run: manifest}}]\nLifecycle: {Run: top}\n"),
    )
    run = recipe.lifecycle.step(StepName.RUN)
    assert run is not None
    assert run.script == "manifest"


def test_no_lifecycle_at_all_is_an_empty_lifecycle(tmp_path: Path) -> None:
    recipe = load(tmp_path, with_manifest("Manifests: [{Platform: {os: linux}}]\n"))
    assert dict(recipe.lifecycle.steps) == {}


def test_platform_current_maps_machine_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for machine, arch, detail in [
        ("x86_64", "amd64", None),
        ("aarch64", "aarch64", None),
        ("armv7l", "arm", "armv7l"),
        ("armv6l", "arm", "armv6l"),
        ("i686", "x86", None),
        ("riscv64", "unknown", None),
    ]:
        monkeypatch.setattr(stdlib_platform, "machine", lambda m=machine: m)
        current = Platform.current()
        assert (current.architecture, current.architecture_detail) == (arch, detail)
        assert current.os == "linux"


# --------------------------------------------------------------------------------------------------
# Lifecycle forms


def test_step_fields_and_coercions(tmp_path: Path) -> None:
    recipe = load(
        tmp_path,
        with_manifest("""\
        Manifests:
          - Lifecycle:
              Setenv: {A: 1.5, B: 1.0e+20, C: false}
              Bootstrap: {Script: b, Timeout: 10.9}
              Startup: {Script: s, RequiresPrivilege: yes, Skipif: '! exists /tmp/x'}
              Shutdown: {Script: d, Timeout: '7'}
              Recover: r
        """),
    )
    lifecycle = recipe.lifecycle
    assert lifecycle.setenv == {"A": "1.5", "B": "1.0E20", "C": "false"}
    bootstrap = lifecycle.step(StepName.BOOTSTRAP)
    startup = lifecycle.step(StepName.STARTUP)
    shutdown = lifecycle.step(StepName.SHUTDOWN)
    recover = lifecycle.step(StepName.RECOVER)
    assert bootstrap is not None
    assert bootstrap.timeout == 10.0  # whole seconds, as Coerce.toInt
    assert startup is not None
    assert startup.requires_privilege is True
    assert startup.skipif == "! exists /tmp/x"
    assert shutdown is not None
    assert shutdown.timeout == 7.0
    assert recover is not None
    assert recover.script == "r"


def test_unknown_lifecycle_keys_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="device_agent.devkit.recipes"):
        recipe = load(tmp_path, with_manifest("Manifests: [{Lifecycle: {Run: r, Uninstall: u}}]\n"))
    assert set(recipe.lifecycle.steps) == {StepName.RUN}
    assert "Manifests[0].Lifecycle.Uninstall: unknown key" in caplog.text


@pytest.mark.parametrize(
    ("expression", "parsed"),
    [
        ("exists /tmp/a b", (False, "exists", "/tmp/a b")),
        ("  onpath   git ", (False, "onpath", "git")),
        ("!onpath git", (True, "onpath", "git")),
        ("! exists /x", (True, "exists", "/x")),
        ("exist /x", None),
        ("onpath", None),
        ("ONPATH git", None),
    ],
)
def test_parse_skipif(expression: str, parsed: tuple[bool, str, str] | None) -> None:
    assert parse_skipif(expression) == parsed


# --------------------------------------------------------------------------------------------------
# Errors: each names the file and the key path


ERRORS = [
    ("Foo: 1\n" + HEADER + "Manifests: [{}]\n", r"recipe.yaml: Foo: unknown key \(expected one of"),
    (
        "RecipeFormatVersion: 2020-01-25\nComponentName: a\nComponentVersion: '1.0.0'\nManifests: [{}]\n",
        r"RecipeFormatVersion: .*unquoted YAML date; quote it: RecipeFormatVersion: '2020-01-25'",
    ),
    (
        "RecipeFormatVersion: '2021-01-01'\nComponentName: a\nComponentVersion: '1.0.0'\nManifests: [{}]\n",
        r"recipe.yaml: RecipeFormatVersion: expected '2020-01-25', got '2021-01-01'",
    ),
    (
        "RecipeFormatVersion: '2020-01-25'\nComponentVersion: '1.0.0'\nManifests: [{}]\n",
        r"recipe.yaml: ComponentName: required key is missing",
    ),
    (
        "RecipeFormatVersion: '2020-01-25'\nComponentName: 'a b'\nComponentVersion: '1.0.0'\n",
        r"recipe.yaml: ComponentName: invalid component name 'a b'",
    ),
    (
        "RecipeFormatVersion: '2020-01-25'\nComponentName: a\nComponentVersion: '1.0'\nManifests: [{}]\n",
        r"recipe.yaml: ComponentVersion: invalid version '1.0': no patch version",
    ),
    (
        "RecipeFormatVersion: '2020-01-25'\nComponentName: a\nComponentVersion: 1.0\nManifests: [{}]\n",
        r"recipe.yaml: ComponentVersion: expected a version string .* got a number 1.0; quote it",
    ),
    (
        "RecipeFormatVersion: '2020-01-25'\nComponentName: a\nComponentVersion: '1.0.0-x/../../y'\n",
        r"recipe.yaml: ComponentVersion: invalid version .* only letters, digits",
    ),
    (
        "RecipeFormatVersion: '2020-01-25'\nComponentName: a\nComponentVersion: '1000000.0.0'\n",
        r"ComponentVersion: major, minor and patch cannot exceed 6 digits",
    ),
    (HEADER, r"recipe.yaml: Manifests: required key is missing"),
    (HEADER + "Manifests: []\n", r"recipe.yaml: Manifests: at least one manifest is required"),
    (HEADER + "Manifests: [7]\n", r"recipe.yaml: Manifests\[0\]: expected a mapping, got a number 7"),
    (HEADER + "Manifests: {}\n", r"recipe.yaml: Manifests: expected a list, got a mapping"),
    (HEADER + "ComponentType: aws.greengrass.docker\nManifests: [{}]\n", r"ComponentType: expected one of"),
    (
        HEADER + "Manifests: [{Lifecycle: {Run: {Script: x, Timeout: abc}}}]\n",
        r"recipe.yaml: Manifests\[0\].Lifecycle.Run.Timeout: expected a number, got 'abc'",
    ),
    (
        HEADER + "Manifests: [{Lifecycle: {Run: {Script: x, Timeout: -1}}}]\n",
        r"Manifests\[0\].Lifecycle.Run.Timeout: expected a non-negative number of seconds, got -1",
    ),
    (
        HEADER + "Manifests: [{Lifecycle: {Run: {Timeout: 5}}}]\n",
        r"Manifests\[0\].Lifecycle.Run.Script: required",
    ),
    (HEADER + "Manifests: [{Lifecycle: {Run: [a]}}]\n", r"Manifests\[0\].Lifecycle.Run: expected a script"),
    (
        HEADER + "Manifests: [{Lifecycle: {Install: {Script: x, Skipif: 'if exists /x'}}}]\n",
        r"Manifests\[0\].Lifecycle.Install.Skipif: expected 'exists PATH' or 'onpath EXECUTABLE'",
    ),
    (
        HEADER + "Manifests: [{Lifecycle: {Run: {Script: x, RequiresPrivilege: 1}}}]\n",
        r"Manifests\[0\].Lifecycle.Run.RequiresPrivilege: expected true or false, got a number 1",
    ),
    (
        HEADER + "Manifests: [{Lifecycle: {Setenv: {A: [1]}, Run: x}}]\n",
        r"Manifests\[0\].Lifecycle.Setenv.A: expected a string, number or boolean, got a list",
    ),
    (
        HEADER + "Manifests: [{Lifecycle: {Setenv: {'A=B': x}, Run: x}}]\n",
        r"Manifests\[0\].Lifecycle.Setenv.A=B: not a valid environment variable name",
    ),
    (
        HEADER + "Manifests: [{Lifecycle: {Startup: a, Run: b}}]\n",
        r"Manifests\[0\].Lifecycle.Run: a lifecycle defines either Startup or Run, not both",
    ),
    (
        HEADER + "Manifests: [{Lifecycle: {Run: a, run: b}}]\n",
        (
            r"Manifests\[0\].Lifecycle.run: duplicate key \(keys are case-insensitive; also given as "
            r"Manifests\[0\].Lifecycle.Run\)"
        ),
    ),
    (
        HEADER + "ComponentDependencies: {dep: {DependencyType: HARD}}\nManifests: [{}]\n",
        r"recipe.yaml: ComponentDependencies.dep.VersionRequirement: required key is missing",
    ),
    (
        HEADER + "ComponentDependencies: {dep: {VersionRequirement: '>=abc'}}\nManifests: [{}]\n",
        r"ComponentDependencies.dep.VersionRequirement: invalid version requirement '>=abc'",
    ),
    (
        HEADER
        + "ComponentDependencies: {dep: {VersionRequirement: '*', DependencyType: WEAK}}\nManifests: [{}]\n",
        r"ComponentDependencies.dep.DependencyType: expected HARD or SOFT, got 'WEAK'",
    ),
    (
        HEADER + "ComponentDependencies: {'bad name': {VersionRequirement: '*'}}\nManifests: [{}]\n",
        r"ComponentDependencies.bad name: invalid component name",
    ),
    (
        HEADER + "ComponentConfiguration: {DefaultConfiguration: [1]}\nManifests: [{}]\n",
        r"ComponentConfiguration.DefaultConfiguration: expected a mapping, got a list",
    ),
    (
        HEADER + "Manifests: [{Artifacts: [{Unarchive: ZIP}]}]\n",
        r"Manifests\[0\].Artifacts\[0\].URI: required",
    ),
    (
        HEADER + "Manifests: [{Artifacts: [{URI: 'https://example.com/a.zip'}]}]\n",
        r"Manifests\[0\].Artifacts\[0\].URI: artifact URI scheme 'https' is not supported",
    ),
    (
        HEADER + "Manifests: [{Artifacts: [{URI: 'a.zip'}]}]\n",
        r"Manifests\[0\].Artifacts\[0\].URI: the artifact URI 'a.zip' has no scheme",
    ),
    (HEADER + "Manifests: [{Artifacts: [{URI: 's3://bucket'}]}]\n", r"URI: invalid S3 artifact URI"),
    (HEADER + "Manifests: [{Artifacts: [{URI: 's3://b/x/..'}]}]\n", r"URI: .* does not end with a file name"),
    (HEADER + "Manifests: [{Artifacts: [{URI: 's3://b/a b.zip'}]}]\n", r"URI: not a valid URI"),
    (
        HEADER + "Manifests: [{Artifacts: [{URI: 's3://b/a.rar', Unarchive: RAR}]}]\n",
        r"Manifests\[0\].Artifacts\[0\].Unarchive: expected ZIP or NONE, got 'RAR'",
    ),
    (
        HEADER + "Manifests: [{Artifacts: [{URI: 's3://b/a', Permission: {Read: GROUP}}]}]\n",
        r"Manifests\[0\].Artifacts\[0\].Permission.Read: expected NONE, OWNER or ALL, got 'GROUP'",
    ),
    (
        HEADER + "Manifests: [{Platform: {os: [linux]}}]\n",
        r"Manifests\[0\].Platform.os: expected a string, got a list",
    ),
    (
        HEADER + "Manifests: [{Selections: linux}]\n",
        r"Manifests\[0\].Selections: expected a list, got a string",
    ),
    (
        HEADER + "Manifests: [{Platform: {os: '/(/'}}]\n",
        r"Manifests\[0\].Platform.os: invalid regular expression",
    ),
    (
        HEADER + "Manifests: [{Lifecycle: {Run: !!binary aGVsbG8=}}]\n",
        r"Manifests\[0\].Lifecycle.Run: unsupported",
    ),
    ("- a\n- b\n", r"recipe.yaml: a recipe must be a mapping, got a list"),
    ("a: [\n", r"recipe.yaml: invalid YAML"),
    ("a: 1\n---\nb: 2\n", r"recipe.yaml: invalid YAML"),
    ("? [a]\n: b\n", r"recipe.yaml: invalid YAML: .*mapping keys must be plain scalars"),
    ("a: !!python/object:os.system x\n", r"recipe.yaml: invalid YAML"),
]


@pytest.mark.parametrize(("body", "message"), ERRORS)
def test_recipe_errors_name_file_and_key_path(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load(tmp_path, body)


def test_json_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"r.json: invalid JSON"):
        load_recipe(write(tmp_path, "{", "r.json"))
    with pytest.raises(RecipeError, match=r"r.json: invalid JSON: NaN is not a JSON value"):
        load_recipe(write(tmp_path, '{"a": NaN}', "r.json"))
    bad_utf8 = tmp_path / "r.json"
    bad_utf8.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(RecipeError, match=r"r.json: invalid JSON"):
        load_recipe(bad_utf8)


def test_other_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"recipe.txt: not a recipe file name"):
        load_recipe(write(tmp_path, "a: 1", "recipe.txt"))
    with pytest.raises(RecipeError, match=r"missing.yaml: cannot read the recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)
    ]
    with pytest.raises(RecipeError, match=r"too large"):
        load(tmp_path, "\n".join(lines) + "\n")


def test_deep_nesting_is_a_recipe_error(tmp_path: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(RecipeError):
        load_recipe(write(tmp_path, '{"a": ' + deep + "}", "r.json"))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
RECIPE_KEYS = st.sampled_from(
    [
        "RecipeFormatVersion",
        "ComponentName",
        "ComponentVersion",
        "Manifests",
        "Lifecycle",
        "ComponentDependencies",
        "ComponentConfiguration",
        "Platform",
        "Artifacts",
        "URI",
        "Run",
        "Script",
        "Timeout",
        "Setenv",
        "Selections",
        "all",
        "linux",
    ]
)
RECIPE_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.just("2020-01-25")
    | st.just("1.0.0"),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(RECIPE_KEYS, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(document=JSON_VALUES | RECIPE_LIKE)
def test_hostile_documents_only_raise_recipe_error(tmp_path: Path, document: object) -> None:
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(document))
    with contextlib.suppress(RecipeError):
        load_recipe(path, platform=LINUX_AMD64)


@settings(max_examples=200, deadline=None)
@given(manifest=st.dictionaries(RECIPE_KEYS, RECIPE_LIKE, max_size=5), lifecycle=RECIPE_LIKE)
def test_hostile_manifests_only_raise_recipe_error(manifest: dict[str, object], lifecycle: object) -> None:
    document = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "a",
        "ComponentVersion": "1.0.0",
        "Manifests": [manifest],
        "Lifecycle": lifecycle,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.json"
        path.write_text(json.dumps(document))
        with contextlib.suppress(RecipeError):
            load_recipe(path, platform=LINUX_AMD64)


# --------------------------------------------------------------------------------------------------
# Recipe folders


def test_load_recipe_dir(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path, HEADER.replace("Test", "A") + "Manifests: [{}]\n", "a.yaml")
    write(tmp_path / "sub", HEADER.replace("Test", "B") + "Manifests: [{}]\n", "b.YML")
    (tmp_path / "README.md").write_text("not a recipe")
    (tmp_path / "empty.json").write_text("")
    recipes = load_recipe_dir(tmp_path, platform=LINUX_AMD64)
    assert sorted(r.ref for r in recipes) == ["com.example.A=1.0.0", "com.example.B=1.0.0"]


def test_load_recipe_dir_refuses_duplicates() -> None:
    with pytest.raises(RecipeError, match=r"com.example.Hello=1.0.0 is already declared by .*Hello-1.0.0"):
        load_recipe_dir(DATA, platform=LINUX_AMD64)


def test_load_recipe_dir_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"not a directory"):
        load_recipe_dir(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------
# Version requirements (semver4j 3.1.0 NPM semantics, as the nucleus resolves dependencies)


@pytest.mark.parametrize(
    ("version", "requirement", "expected"),
    [
        ("1.5.0", ">=1.0.0 <2.0.0", True),
        ("2.0.0", ">=1.0.0 <2.0.0", False),
        ("1.0.0", ">=1.0.0 <2.0.0", True),
        ("1.2.9", "^1.2.0", True),
        ("2.0.0", "^1.2.0", False),
        ("1.1.0", "^1.2.0", False),
        ("0.2.5", "^0.2.3", True),
        ("0.3.0", "^0.2.3", False),
        ("0.0.3", "^0.0.3", True),
        ("0.0.4", "^0.0.3", False),
        ("1.2.5", "~1.2", True),
        ("1.3.0", "~1.2", False),
        ("1.2.3", "~1.2.3", True),
        ("1.2.2", "~1.2.3", False),
        ("1.9.9", "1.x", True),
        ("2.0.0", "1.x", False),
        ("1.2.7", "1.2", True),
        ("1.3.0", "1.2", False),
        ("9.9.9", "*", True),
        ("9.9.9", "", True),
        ("9.9.9", "latest", True),
        ("1.0.0", "=1.0.0", True),
        ("1.0.0", "1.0.0", True),
        ("1.0.0+build.7", "1.0.0", True),
        ("1.0.1", "=1.0.0", False),
        ("3.1.0", "1.x || 3.x", True),
        ("2.0.0", "1.x || 3.x", False),
        ("1.5.0", "1.0.0 - 2.0.0", True),
        ("2.0.0", "1.0.0 - 2.0.0", True),
        ("2.0.1", "1.0.0 - 2.0.0", False),
        ("2.9.0", "1.0.0 - 2", True),
        ("3.0.0", "1.0.0 - 2", False),
        ("1.5.0", ">1.0.0", True),
        ("1.0.0", ">1.0.0", False),
        ("1.0.0", "<=1.0.0", True),
        ("0.9.0", "<1.0.0", True),
        ("1.5.0", "v1.5.0", True),
        # Prereleases: a plain range excludes them, unless it names one of the same major.minor.patch.
        ("1.0.0-beta", "^1.0.0", False),
        ("1.0.0-beta.2", ">=1.0.0-beta <2.0.0", True),
        ("1.0.1-beta", ">=1.0.0-beta <2.0.0", False),
        ("1.0.0-rc.1", "*", True),
        ("1.0.0-2", "1.0.0-1", False),  # semver4j reads "1.0.0-1" as the range 1.0.0 - 1
        # semver4j quirk: a partial version after an operator is compared as a string when equal.
        ("1.0.0", ">=1.0", False),
        ("1.0.1", ">=1.0", True),
        ("1.0.0", "<1.0", True),
    ],
)
def test_satisfies(version: str, requirement: str, expected: bool) -> None:
    assert satisfies(version, requirement) is expected


@pytest.mark.parametrize(
    "requirement", [">", "^", "abc", "1.0.0 ||", "(1.0.0", ">=1.x", "1.0.0)", "||", "~x"]
)
def test_invalid_requirements(requirement: str) -> None:
    with pytest.raises(RecipeError, match="invalid version requirement"):
        parse_requirement(requirement)


def test_satisfies_needs_a_strict_version() -> None:
    with pytest.raises(RecipeError, match=r"invalid version '1.0': no patch version"):
        satisfies("1.0", "*")


@given(st.text(max_size=20), st.text(max_size=20))
def test_requirement_parsing_never_raises_anything_else(version: str, requirement: str) -> None:
    with contextlib.suppress(RecipeError):
        satisfies(version, requirement)


def test_parse_version_and_ordering() -> None:
    v = parse_version(" 1.2.3-alpha.1+build ")
    assert (v.text, v.major, v.minor, v.patch, v.prerelease, v.build) == (
        "1.2.3-alpha.1+build",
        1,
        2,
        3,
        ("alpha", "1"),
        "build",
    )
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0",
        "1.0.1",
        "2.0.0",
    ]
    versions = [parse_version(t) for t in ordered]
    assert sorted(versions[5:] + versions[:5]) == versions
    assert max(versions).text == "2.0.0"
    assert parse_version("1.0.0") <= parse_version("1.0.0+b")
    for bad in ["1", "1.0", "a.b.c", "1.0.0+", ""]:
        with pytest.raises(RecipeError):
            parse_version(bad)


# --------------------------------------------------------------------------------------------------
# Artifacts


def artifact_recipe(tmp_path: Path, artifacts: str, name: str = "com.example.Art", version: str = "1.0.0"):
    body = f"""\
RecipeFormatVersion: '2020-01-25'
ComponentName: {name}
ComponentVersion: '{version}'
Manifests:
  - Artifacts:
{textwrap.indent(textwrap.dedent(artifacts), "      ")}
"""
    return load_recipe(write(tmp_path, body, "art.yaml"), platform=LINUX_AMD64)


def make_zip(path: Path, entries: dict[str, bytes], *, symlink: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path]:
    artifacts, root = tmp_path / "artifacts", tmp_path / "root"
    root.mkdir()
    return artifacts, root


def test_install_copies_unzips_and_sets_permissions(tmp_path: Path, store: tuple[Path, Path]) -> None:
    artifact_dir, root = store
    source = artifact_dir / "com.example.Art" / "1.0.0"
    make_zip(source / "app.zip", {"app/main.py": b"print('hi')\n", "app/lib/": b"", "top.txt": b"t"})
    (source / "run.sh").write_text("#!/bin/sh\n")
    recipe = artifact_recipe(
        tmp_path,
        """\
        - URI: s3://bucket/prefix/app.zip
          Unarchive: ZIP
          Permission: {Read: ALL, Execute: NONE}
        - URI: greengrass:run.sh
          Permission: {Execute: OWNER}
        - URI: docker:alpine:latest
        """,
    )
    install_artifacts(recipe, artifact_dir=artifact_dir, root=root)
    store_dir = root / "packages" / "artifacts" / "com.example.Art" / "1.0.0"
    assert (store_dir / "run.sh").read_text() == "#!/bin/sh\n"
    assert (store_dir / "app.zip").is_file()
    unzipped = root / "packages" / "artifacts-unarchived" / "com.example.Art" / "1.0.0" / "app"
    assert (unzipped / "app" / "main.py").read_bytes() == b"print('hi')\n"
    assert (unzipped / "top.txt").read_bytes() == b"t"
    assert (unzipped / "app" / "lib").is_dir()
    owner_write = 0 if os.geteuid() == 0 else 0o200
    assert mode(store_dir / "run.sh") == 0o550 | owner_write  # Execute OWNER: owner and group r-x
    assert mode(store_dir / "app.zip") == 0o444 | owner_write  # Read ALL
    assert mode(unzipped / "app" / "main.py") == 0o444 | owner_write
    for directory in [root / "packages", store_dir, store_dir.parent, unzipped, unzipped / "app" / "lib"]:
        assert mode(directory) == 0o700, directory


@pytest.mark.parametrize(
    ("read", "execute", "expected"),
    [
        ("OWNER", "NONE", 0o440),
        ("NONE", "NONE", 0o400),
        ("ALL", "NONE", 0o444),
        ("NONE", "OWNER", 0o550),
        ("OWNER", "ALL", 0o555),
    ],
)
def test_artifact_file_mode(read: str, execute: str, expected: int) -> None:
    got = artifact_file_mode(Artifact(uri="s3://b/a", read=read, execute=execute))
    assert got & ~0o200 == expected
    assert not got & 0o022  # never group- or world-writable


def test_install_is_idempotent_and_recopies_changed_files(tmp_path: Path, store: tuple[Path, Path]) -> None:
    artifact_dir, root = store
    source = artifact_dir / "com.example.Art" / "1.0.0"
    source.mkdir(parents=True)
    (source / "a.txt").write_text("one")
    make_zip(source / "b.zip", {"x.txt": b"x1"})
    recipe = artifact_recipe(tmp_path, "- URI: s3://b/a.txt\n- URI: s3://b/b.zip\n  Unarchive: ZIP\n")
    install_artifacts(recipe, artifact_dir=artifact_dir, root=root)
    installed = root / "packages" / "artifacts" / "com.example.Art" / "1.0.0" / "a.txt"
    extracted = root / "packages" / "artifacts-unarchived" / "com.example.Art" / "1.0.0" / "b" / "x.txt"
    before = (installed.stat().st_ino, extracted.stat().st_ino)
    install_artifacts(recipe, artifact_dir=artifact_dir, root=root)
    assert (installed.stat().st_ino, extracted.stat().st_ino) == before  # untouched
    (source / "a.txt").write_text("two")
    make_zip(source / "b.zip", {"x.txt": b"x2"})  # same size, different content
    install_artifacts(recipe, artifact_dir=artifact_dir, root=root)
    assert installed.read_text() == "two"
    assert extracted.read_bytes() == b"x2"


def test_missing_artifact_names_the_expected_path(tmp_path: Path, store: tuple[Path, Path]) -> None:
    artifact_dir, root = store
    recipe = artifact_recipe(tmp_path, "- URI: s3://b/dir/missing.bin\n")
    expected = artifact_dir / "com.example.Art" / "1.0.0" / "missing.bin"
    with pytest.raises(
        RecipeError, match=rf"com.example.Art=1.0.0: artifact .* not found: expected the file {expected}"
    ):
        install_artifacts(recipe, artifact_dir=artifact_dir, root=root)


@pytest.mark.parametrize(
    ("entries", "symlink", "reason"),
    [
        ({"../evil.txt": b"x"}, None, "a path outside the extraction folder"),
        ({"ok/../../evil.txt": b"x"}, None, "a path outside the extraction folder"),
        ({"/etc/evil.txt": b"x"}, None, "an absolute path"),
        ({"ok.txt": b"x"}, "link", "a symbolic link"),
    ],
)
def test_unsafe_zip_entries_are_refused(
    tmp_path: Path, store: tuple[Path, Path], entries: dict[str, bytes], symlink: str | None, reason: str
) -> None:
    artifact_dir, root = store
    make_zip(artifact_dir / "com.example.Art" / "1.0.0" / "bad.zip", entries, symlink=symlink)
    recipe = artifact_recipe(tmp_path, "- URI: s3://b/bad.zip\n  Unarchive: ZIP\n")
    with pytest.raises(RecipeError, match=rf"com.example.Art=1.0.0: bad.zip: unsafe ZIP entry .*{reason}"):
        install_artifacts(recipe, artifact_dir=artifact_dir, root=root)
    assert not (tmp_path / "evil.txt").exists()
    assert not (root / "packages" / "artifacts-unarchived" / "com.example.Art" / "1.0.0" / "bad").exists()


def test_planted_symlink_in_the_extraction_folder_is_refused(
    tmp_path: Path, store: tuple[Path, Path]
) -> None:
    artifact_dir, root = store
    make_zip(artifact_dir / "com.example.Art" / "1.0.0" / "p.zip", {"sub/f.txt": b"x"})
    recipe = artifact_recipe(tmp_path, "- URI: s3://b/p.zip\n  Unarchive: ZIP\n")
    install_artifacts(recipe, artifact_dir=artifact_dir, root=root)
    extracted = root / "packages" / "artifacts-unarchived" / "com.example.Art" / "1.0.0" / "p"
    outside = tmp_path / "outside"
    outside.mkdir()
    (extracted / "sub" / "f.txt").unlink()
    (extracted / "sub").rmdir()
    (extracted / "sub").symlink_to(outside)
    with pytest.raises(RecipeError, match=r"resolves outside"):
        install_artifacts(recipe, artifact_dir=artifact_dir, root=root)
    assert list(outside.iterdir()) == []
    assert not extracted.exists()  # cleaned up, as the nucleus does


def test_bad_zip_is_a_recipe_error(tmp_path: Path, store: tuple[Path, Path]) -> None:
    artifact_dir, root = store
    source = artifact_dir / "com.example.Art" / "1.0.0"
    source.mkdir(parents=True)
    (source / "x.zip").write_bytes(b"not a zip")
    recipe = artifact_recipe(tmp_path, "- URI: s3://b/x.zip\n  Unarchive: ZIP\n")
    with pytest.raises(RecipeError, match=r"x.zip: cannot extract the ZIP archive"):
        install_artifacts(recipe, artifact_dir=artifact_dir, root=root)


def test_unarchive_folder_drops_only_the_last_extension(tmp_path: Path, store: tuple[Path, Path]) -> None:
    artifact_dir, root = store
    make_zip(artifact_dir / "com.example.Art" / "1.0.0" / "bundle.tar.zip", {"f": b"1"})
    recipe = artifact_recipe(tmp_path, "- URI: s3://b/bundle.tar.zip\n  Unarchive: ZIP\n")
    install_artifacts(recipe, artifact_dir=artifact_dir, root=root)
    assert (
        root / "packages" / "artifacts-unarchived" / "com.example.Art" / "1.0.0" / "bundle.tar" / "f"
    ).exists()


# --------------------------------------------------------------------------------------------------
# Interpolation


def context(root: Path, **overrides: object) -> InterpolationContext:
    dep = InterpolationContext(
        component_name="com.example.Dep",
        component_version="2.1.0",
        root=root,
        thing_name="thing-1",
        configuration={"port": 8080, "url": "http://dep"},
    )
    values: dict[str, object] = {
        "component_name": "com.example.Me",
        "component_version": "1.0.0",
        "root": root,
        "thing_name": "thing-1",
        "configuration": {
            "s": "text",
            "t": True,
            "f": False,
            "n": None,
            "i": 42,
            "x": 1.0,
            "big": 1e20,
            "small": 0.0001,
            "map": {"b": [1, "two"], "a": {"z": 1, "y": "é\n"}},
            "list": [3, {"k": None}],
            "a/b": "slash",
            "m~n": "tilde",
            "": "empty key",
            "arr": ["zero", "one"],
            "nested": "{com.example.Dep:work:path}",
        },
        "dependencies": {"com.example.Dep": dep},
    }
    values.update(overrides)
    return InterpolationContext(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{artifacts:path}/x", "{root}/packages/artifacts/com.example.Me/1.0.0/x"),
        ("{artifacts:decompressedPath}/a", "{root}/packages/artifacts-unarchived/com.example.Me/1.0.0/a"),
        ("cd {work:path}", "cd {root}/work/com.example.Me"),
        ("{kernel:rootPath}", "{root}"),
        ("{iot:thingName}", "thing-1"),
        ("{configuration:/s}", "text"),
        ("{configuration:/t} {configuration:/f}", "true false"),
        ("{configuration:/n}", "null"),
        ("{configuration:/i}", "42"),
        ("{configuration:/x} {configuration:/big} {configuration:/small}", "1.0 1.0E20 1.0E-4"),
        ("{configuration:/map}", '{"a":{"y":"é\\n","z":1},"b":[1,"two"]}'),
        ("{configuration:/list}", '[3,{"k":null}]'),
        ("{configuration:/a~1b} {configuration:/m~0n}", "slash tilde"),
        ("{configuration:/}", "empty key"),
        ("{configuration:/arr/1}", "one"),
        ("{configuration:/arr/01}", "{configuration:/arr/01}"),  # no leading zeros (Jackson)
        ("{configuration:/arr/5}", "{configuration:/arr/5}"),
        ("{configuration:/missing}", "{configuration:/missing}"),
        ("{configuration:/s/deeper}", "{configuration:/s/deeper}"),
        ("{unknown:thing}", "{unknown:thing}"),
        ("{artifacts:nope}", "{artifacts:nope}"),
        ("{com.example.Dep:configuration:/port}", "8080"),
        ("{com.example.Dep:artifacts:path}", "{root}/packages/artifacts/com.example.Dep/2.1.0"),
        ("{com.example.Dep:work:path}", "{root}/work/com.example.Dep"),
        ("{com.example.Other:work:path}", "{com.example.Other:work:path}"),  # not a direct dependency
        ("{com.example.Dep:bogus:x}", "{com.example.Dep:bogus:x}"),
        # A replaced value is itself scanned by the cross-component pass, as in the nucleus.
        ("{configuration:/nested}", "{root}/work/com.example.Dep"),
        ("{configuration:/s}{configuration:/s}", "texttext"),
        ("awk '{print $1}' {\"a\":1}", "awk '{print $1}' {\"a\":1}"),
    ],
)
def test_interpolate(tmp_path: Path, text: str, expected: str) -> None:
    ctx = context(tmp_path)
    assert interpolate(text, ctx) == expected.replace("{root}", str(tmp_path.absolute()))


def test_whole_configuration_pointer(tmp_path: Path) -> None:
    ctx = context(tmp_path, configuration={"b": 1, "a": [True]})
    assert interpolate("{configuration:}", ctx) == '{"a":[true],"b":1}'


def test_unresolved_placeholders_log_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="device_agent.devkit.recipes"):
        interpolate("{com.example.Other:work:path} {configuration:/missing}", context(tmp_path))
    assert "not a direct dependency" in caplog.text
    assert "no value at '/missing'" in caplog.text


def test_invalid_json_pointer_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        RecipeError, match=r"\{configuration:s\}: a JSON pointer must be empty or start with '/'"
    ):
        interpolate("{configuration:s}", context(tmp_path))


def test_interpolate_lifecycle(tmp_path: Path) -> None:
    recipe = load_recipe(DATA / "com.example.Hello-1.0.0.yaml", platform=LINUX_AMD64)
    ctx = InterpolationContext.for_recipe(recipe, root=tmp_path, thing_name="t")
    result = interpolate_lifecycle(recipe, ctx)
    root = tmp_path.absolute()
    assert result.lifecycle.setenv == {"GREETING": "Hello"}
    run = result.lifecycle.step(StepName.RUN)
    install = result.lifecycle.step(StepName.INSTALL)
    assert run is not None
    assert (
        run.script == f"python3 -u {root}/packages/artifacts-unarchived/com.example.Hello/1.0.0/hello/main.py"
    )
    assert install is not None
    assert install.script.endswith(f"{root}/packages/artifacts/com.example.Hello/1.0.0/requirements.txt")
    assert install.timeout == 300.0
    original_run = recipe.lifecycle.step(StepName.RUN)
    assert original_run is not None
    assert "{artifacts:decompressedPath}" in original_run.script  # the recipe itself is unchanged


def test_for_recipe_keeps_only_direct_dependencies(tmp_path: Path) -> None:
    recipe = load_recipe(DATA / "com.example.Hello-1.0.0.json", platform=LINUX_AMD64)
    base = InterpolationContext(component_name="com.example.Base", component_version="1.2.0", root=tmp_path)
    other = InterpolationContext(component_name="com.example.Other", component_version="1.0.0", root=tmp_path)
    ctx = InterpolationContext.for_recipe(
        recipe, root=tmp_path, deployed={"com.example.Base": base, "com.example.Other": other}
    )
    assert set(ctx.dependencies) == {"com.example.Base"}
    assert interpolate("{com.example.Base:artifacts:path}", ctx).endswith("/com.example.Base/1.2.0")
    assert interpolate("{com.example.Other:artifacts:path}", ctx) == "{com.example.Other:artifacts:path}"


def test_interpolate_configuration_applies_system_parameters_only(tmp_path: Path) -> None:
    config = MappingProxyType(
        {
            "dir": "{work:path}/data",
            "ref": "{configuration:/other}",
            "list": ("{iot:thingName}", 3),
            "{work:path}": 1,
        }
    )
    result = interpolate_configuration(config, context(tmp_path))
    assert result == {
        "dir": f"{tmp_path.absolute()}/work/com.example.Me/data",
        "ref": "{configuration:/other}",
        "list": ["thing-1", 3],
        "{work:path}": 1,  # keys are never interpolated
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.5, "0.5"), (100.0, "100.0"), (1e7, "1.0E7"), (1.0e-3, "0.001"), (-0.0, "-0.0"), (2.5e-8, "2.5E-8")],
)
def test_java_double_text(value: float, text: str) -> None:
    assert java_double_text(value) == text
