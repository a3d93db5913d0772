"""Fixtures for the cloud side: moto's AWS (fake credentials, a fixed region, never the network)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """All boto3 calls in the test go to moto; no credential or config file of the machine is read."""
    from moto import mock_aws  # noqa: PLC0415 - only the AWS tests need it

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with mock_aws():
        yield


@pytest.fixture
def iot(aws: None) -> Any:
    import boto3  # noqa: PLC0415

    return boto3.client("iot", region_name=REGION)


@pytest.fixture
def iot_data(aws: None) -> Any:
    import boto3  # noqa: PLC0415

    return boto3.client("iot-data", region_name=REGION)


def published(topic: str | None = None) -> list[tuple[str, bytes]]:
    """What moto's iot-data received, in order (optionally for one topic)."""
    from moto.iotdata.models import iotdata_backends  # noqa: PLC0415

    messages = list(iotdata_backends[ACCOUNT][REGION].published_payloads)
    return [(t, p) for t, p in messages if topic is None or t == topic]
