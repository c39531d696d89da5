"""The boto3 clients of the SageMaker steps — the only module of the target that imports boto3.

Credentials are the pod's (boto3's default chain: IRSA's web identity on EKS, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` from the profile's ``credentials_secret`` on-prem); the region is the profile's.
An endpoint other than AWS's (an S3-compatible store, a test server) comes from botocore's own variables
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``), never from code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.sagemaker.settings import SageMakerSettings


@dataclass(frozen=True)
class Clients:
    """One client per service the steps call."""

    sagemaker: Any
    s3: Any
    logs: Any


def client(service: str, region: str) -> Any:
    """A boto3 client with standard retries (throttling and transient errors backed off by botocore)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 10}, user_agent_extra="bert-kfp")
    return boto3.session.Session(region_name=region).client(service, config=config)


def clients(settings: SageMakerSettings) -> Clients:
    return Clients(
        sagemaker=client("sagemaker", settings.region),
        s3=client("s3", settings.region),
        logs=client("logs", settings.region),
    )
