"""Fixtures of the SageMaker target's tests.

AWS cannot be reached from here.  SageMaker and CloudWatch Logs are met at the client boundary with botocore's
``Stubber`` (the only mock these tests use): a real botocore client, built from botocore's bundled service model,
whose every request is validated against that model before the stub answers.  S3 is a real S3-compatible server,
moto in server mode, on loopback (`moto_s3`).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest

REGION = "us-east-1"
ROLE = "arn:aws:iam::111122223333:role/bert-sagemaker-execution"
ECR = "111122223333.dkr.ecr.us-east-1.amazonaws.com/bert-kfp"


def settings_body(**overrides: Any) -> dict[str, Any]:
    """A valid sagemaker section (the profile's YAML as a mapping), with top-level ``overrides``."""
    body: dict[str, Any] = {
        "region": REGION,
        "role_arn": ROLE,
        "s3_prefix": "s3://bert-test-bucket/runs",
        "images": {"train": f"{ECR}/train:0.1.0-test", "serve": f"{ECR}/serve:0.1.0-test"},
        "canary": {"alarms": ["bert-5xx"]},
        "waiting": {"poll_seconds": 1, "max_poll_seconds": 4, "backoff": 2, "stop_wait_seconds": 20},
    }
    body.update(overrides)
    return body


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials that sign requests (nothing reaches AWS) and no endpoint or profile from this machine."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real moto server (S3 and the other services it speaks) on loopback; its URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_s3(moto_server: str, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An S3 client of `components.sagemaker.aws` pointed at the moto server (botocore's own endpoint variable),
    with the test bucket made empty."""
    from components.sagemaker import aws

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    s3 = aws.client("s3", REGION)
    bucket = "bert-test-bucket"
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
    return s3
