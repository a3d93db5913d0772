"""A stand-in for the GDK CLI (not on PyPI) for tests: `component build` and `component publish`, as 1.6.2.

Run from a GDK project folder, as GDK is. `build` runs the config's custom build command after preparing
`greengrass-build/` (GDK leaves writing it to the command). `publish [-b BUCKET] [-r REGION]` makes GDK's
calls in GDK's order (docs/packaging.md): STS GetCallerIdentity, GreengrassV2 ListComponentVersions, S3
GetBucketLocation then CreateBucket if there is none, an upload per artifact, and CreateComponentVersion with
the built recipe, its version set and its artifact URIs pointed at the bucket.

For the tests of `scripts/publish`: every call is appended to FAKE_GDK_LOG (folder name and arguments) when
set; FAKE_GDK_ONLY_LOG=1 does nothing else; FAKE_GDK_FAIL=<folder>:<command> exits 1 there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def log(argv: list[str]) -> None:
    path = os.environ.get("FAKE_GDK_LOG")
    if path:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(json.dumps({"folder": Path.cwd().name, "argv": argv, "env": _gdk_env()}) + "\n")


def _gdk_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("GDK_", "DEVICE_AGENT_BUILD"))}


def config() -> tuple[str, dict[str, Any]]:
    [(name, component)] = json.loads(Path("gdk-config.json").read_text())["component"].items()
    return name, component


def build() -> None:
    name, component = config()
    shutil.rmtree("greengrass-build", ignore_errors=True)
    Path("greengrass-build/recipes").mkdir(parents=True)
    Path("greengrass-build/artifacts", name, component["version"]).mkdir(parents=True)
    subprocess.run(component["build"]["custom_build_command"], check=True)


def publish(bucket: str | None, region: str | None) -> None:
    import boto3  # noqa: PLC0415
    from botocore.exceptions import ClientError  # noqa: PLC0415

    name, component = config()
    version = component["version"]
    region = region or component["publish"]["region"]
    account = boto3.client("sts", region_name=region).get_caller_identity()["Account"]
    greengrass = boto3.client("greengrassv2", region_name=region)
    greengrass.list_component_versions(arn=f"arn:aws:greengrass:{region}:{account}:components:{name}")
    bucket = bucket or f"{component['publish']['bucket']}-{region}-{account}"
    s3 = boto3.client("s3", region_name=region)
    try:
        s3.get_bucket_location(Bucket=bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchBucket":
            raise
        where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **where)
    artifacts = Path("greengrass-build/artifacts", name, version)
    for file in sorted(artifacts.iterdir()):
        s3.upload_file(str(file), bucket, f"{name}/{version}/{file.name}")
    recipe_file = Path("greengrass-build/recipes", Path("recipe.yaml").resolve().name)
    recipe = yaml.safe_load(recipe_file.read_text())
    recipe["ComponentVersion"] = version
    for manifest in recipe.get("Manifests", ()):
        for artifact in manifest.get("Artifacts", ()):
            file_name = artifact["URI"].rsplit("/", 1)[-1]
            if artifact["URI"].startswith("s3://") and (artifacts / file_name).is_file():
                artifact["URI"] = f"s3://{bucket}/{name}/{version}/{file_name}"
    text = yaml.safe_dump(recipe, sort_keys=False)
    Path("greengrass-build/recipes", f"{name}-{version}.yaml").write_text(text)
    greengrass.create_component_version(inlineRecipe=text.encode())


def main(argv: list[str]) -> int:
    log(argv)
    parser = argparse.ArgumentParser(prog="gdk")
    parser.add_argument("group", choices=["component"])
    parser.add_argument("command", choices=["build", "publish"])
    parser.add_argument("-b", "--bucket")
    parser.add_argument("-r", "--region")
    args = parser.parse_args(argv)
    if os.environ.get("FAKE_GDK_FAIL") == f"{Path.cwd().name}:{args.command}":
        print(f"fake gdk: failing {args.command} in {Path.cwd().name}, as asked", file=sys.stderr)
        return 1
    if os.environ.get("FAKE_GDK_ONLY_LOG") == "1":
        return 0
    if args.command == "build":
        build()
    else:
        publish(args.bucket, args.region)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
