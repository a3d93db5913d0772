"""`scripts/publish` against a stand-in for AWS, offline: GDK's publish run for real, what it left checked.

    scripts/publish-check [ARGS FOR gdk component publish ...]     (GDK=/path/to/gdk, or gdk on PATH)

GDK's publish (reference: docs/packaging.md) calls STS GetCallerIdentity, GreengrassV2 ListComponentVersions,
S3 GetBucketLocation, CreateBucket and uploads, and GreengrassV2 CreateComponentVersion. One HTTP server on
loopback answers all of them: S3 and STS go to moto's in-process backends (moto answers them as it answers
boto3 under `mock_aws`; it has no GreengrassV2), and the two GreengrassV2 calls to `GreengrassStandIn`, which
keeps each version's recipe and refuses a version created twice, as the service does. botocore reaches it
through `AWS_ENDPOINT_URL` with test credentials, and reads no profile or credentials file of the user.

After `scripts/publish` exits 0, `check` compares what was published with what was built: for each component
folder, one version created at the version its `gdk-config.json` names, its recipe the built one with only
`ComponentVersion` and the artifact URI changed, the URI `s3://<bucket>/<name>/<version>/<name>.zip`, and that
object byte-identical to the built zip. Not modeled: pagination, IAM, the service's own recipe validation.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"  # moto's account
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_MOTO_HOSTS = {"s3": "s3.amazonaws.com", "sts": "sts.amazonaws.com"}
_VERSIONS = re.compile(r"^/greengrass/v2/components/([^/]+)/versions$")


@dataclass
class Created:
    name: str
    version: str
    recipe: dict[str, Any]


@dataclass
class GreengrassStandIn:
    """ListComponentVersions and CreateComponentVersion, as GDK calls them, over REST-JSON."""

    created: list[Created] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, body: bytes, region: str) -> tuple[int, dict[str, Any]]:
        url = urllib.parse.urlsplit(path)
        versions = _VERSIONS.match(url.path)
        if method == "GET" and versions:
            arn = urllib.parse.unquote(versions.group(1))
            name = arn.rsplit(":", 1)[-1]
            with self.lock:
                found = [c for c in reversed(self.created) if c.name == name]
            return 200, {
                "componentVersions": [
                    {
                        "componentName": c.name,
                        "componentVersion": c.version,
                        "arn": f"{arn}:versions:{c.version}",
                    }
                    for c in found
                ]
            }
        if method == "POST" and url.path == "/greengrass/v2/createComponentVersion":
            recipe = yaml.safe_load(base64.b64decode(json.loads(body)["inlineRecipe"]))
            name, version = recipe["ComponentName"], recipe["ComponentVersion"]
            with self.lock:
                if any((c.name, c.version) == (name, version) for c in self.created):
                    return 409, {"message": f"Component {name} version {version} already exists"}
                self.created.append(Created(name, version, recipe))
            arn = f"arn:aws:greengrass:{region}:{ACCOUNT}:components:{name}:versions:{version}"
            return 201, {
                "arn": arn,
                "componentName": name,
                "componentVersion": version,
                "creationTimestamp": time.time(),
                "status": {"componentState": "REQUESTED", "message": "NONE", "errors": {}},
            }
        return 404, {"message": f"the stand-in does not answer {method} {url.path}"}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size + 2)[:size])
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self) -> None:
        body = self._body()
        scope = _SCOPE.search(self.headers.get("Authorization", ""))
        region, service = scope.groups() if scope else ("", "")
        if service in _MOTO_HOSTS:
            status, headers, payload = self.server.moto(self.command, self.path, self.headers, body, service)
        elif service == "greengrass":
            status, document = self.server.greengrass.answer(self.command, self.path, body, region)
            headers, payload = {"Content-Type": "application/json"}, json.dumps(document).encode()
            if status == 409:
                headers["x-amzn-ErrorType"] = "ConflictException"
        else:
            status, headers, payload = 404, {}, f"no stand-in for the service {service!r}".encode()
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in {"transfer-encoding", "server", "date", "content-length"}:
                self.send_header(key, str(value))
        length = headers.get("Content-Length") or headers.get("content-length")
        head = self.command == "HEAD"
        self.send_header("Content-Length", str(length if head and length is not None else len(payload)))
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer  # noqa: N815 - the base class's names

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, greengrass: GreengrassStandIn) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.greengrass = greengrass

    def moto(
        self, method: str, path: str, headers: Any, body: bytes, service: str
    ) -> tuple[int, dict[str, str], bytes]:
        from botocore.awsrequest import AWSPreparedRequest  # noqa: PLC0415
        from botocore.compat import HTTPHeaders  # noqa: PLC0415
        from moto.core.models import botocore_stubber  # noqa: PLC0415

        forwarded = HTTPHeaders()
        for key, value in headers.items():
            forwarded[key] = _MOTO_HOSTS[service] if key.lower() == "host" else value
        request = AWSPreparedRequest(method, f"https://{_MOTO_HOSTS[service]}{path}", forwarded, body, False)
        answer = botocore_stubber.process_request(request)
        if answer is None:
            return 404, {}, b"moto has no answer"
        status, answer_headers, payload = answer
        return status, dict(answer_headers), payload.encode() if isinstance(payload, str) else payload


@dataclass(frozen=True)
class FakeAws:
    url: str
    greengrass: GreengrassStandIn

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` pointed at the stand-in: test credentials, no user profile, every endpoint on loopback."""
        env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_ENDPOINT_URL=self.url,
        )
        return env

    def object(self, bucket: str, key: str) -> bytes:
        import boto3  # noqa: PLC0415 - under mock_aws, this client is moto's

        body: bytes = (
            boto3.client("s3", region_name="us-east-1").get_object(Bucket=bucket, Key=key)["Body"].read()
        )
        return body


@contextlib.contextmanager
def fake_aws() -> Iterator[FakeAws]:
    """S3 and STS from moto, GreengrassV2 from the stand-in, on one loopback port, while the block runs."""
    import moto  # noqa: PLC0415 - a dev dependency, imported only here

    with moto.mock_aws():
        server = _Server(GreengrassStandIn())
        thread = threading.Thread(target=server.serve_forever, name="fake-aws", daemon=True)
        thread.start()
        try:
            yield FakeAws(f"http://127.0.0.1:{server.server_address[1]}", server.greengrass)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def _config(folder: Path) -> tuple[str, str]:
    [(name, component)] = json.loads((folder / "gdk-config.json").read_text())["component"].items()
    return name, str(component["version"])


def check(root: Path, aws: FakeAws) -> list[str]:
    """What is wrong with the published versions, against each component folder's build (empty: fine)."""
    problems: list[str] = []
    for config in sorted(root.glob("components/*/gdk-config.json")):
        folder = config.parent
        name, version = _config(folder)
        # GDK reads the recipe back under the file name of recipe.yaml's target (docs/packaging.md).
        recipe_name = (folder / "recipe.yaml").resolve().name
        built = yaml.safe_load((folder / "greengrass-build" / "recipes" / recipe_name).read_text())
        created = [c for c in aws.greengrass.created if c.name == name]
        if [c.version for c in created] != [version]:
            problems.append(
                f"{name}: versions created {[c.version for c in created]}, expected [{version!r}]"
            )
            continue
        recipe = created[0].recipe
        [artifact] = recipe["Manifests"][0]["Artifacts"]
        match = re.fullmatch(
            rf"s3://([^/]+)/{re.escape(name)}/{re.escape(version)}/{re.escape(name)}\.zip", artifact["URI"]
        )
        if match is None:
            problems.append(f"{name}: artifact URI {artifact['URI']!r}")
            continue
        local = folder / "greengrass-build" / "artifacts" / name / version / f"{name}.zip"
        if aws.object(match.group(1), f"{name}/{version}/{name}.zip") != local.read_bytes():
            problems.append(f"{name}: the uploaded zip differs from the built one")
        built["Manifests"][0]["Artifacts"][0]["URI"] = artifact["URI"]
        built["ComponentVersion"] = version
        if recipe != built:
            problems.append(f"{name}: the published recipe differs from the built one beyond version and URI")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Every argument goes to `gdk component publish` (through scripts/publish)."""
    publish_args = list(sys.argv[1:] if argv is None else argv)
    with fake_aws() as aws:
        env = aws.environment(os.environ)
        publish = [str(ROOT / "scripts" / "publish"), *publish_args]
        code = subprocess.run(publish, env=env, check=False).returncode
        if code != 0:
            print(f"publish-check: scripts/publish failed (exit status {code})", file=sys.stderr)
            return code
        problems = check(ROOT, aws)
    for problem in problems:
        print(f"publish-check: {problem}", file=sys.stderr)
    if not problems:
        print(f"publish-check: {len(aws.greengrass.created)} component versions published and checked")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
