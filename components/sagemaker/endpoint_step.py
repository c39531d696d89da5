"""The SageMaker deploy step: roll a version that passed evaluate's gate out to a SageMaker endpoint, and move
MLflow's ``champion`` only on success — the KServe path's semantics (`components.deploy.core`) on SageMaker.

Before any AWS call: the endpoint settings (`endpoint.check`), the model data (an S3 ``model.tar.gz``), the
serve image (an ECR URI), MLflow reachable and the version in its registry, the smoke set readable.  Then
`endpoint_client.rollout` creates or canary-updates the endpoint and sends the smoke set — held-out test reviews
whose answers evaluate already knows (`components.deploy.smoke`) — through ``sagemaker-runtime``
InvokeEndpoint; each must come back with evaluate's label.  ``created`` and ``promoted`` move ``champion``;
``no_op`` (this version already serves) leaves it; ``failed`` and ``rolled_back`` raise `DeploymentError` and
leave it, as does a timeout.
"""

from __future__ import annotations

import contextlib
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from components.common import tracking
from components.deploy.core import (
    DEPLOYED,
    PROMOTING_ACTIONS,
    DeploymentError,
    DeploymentReport,
    check_version,
    write_report,
)
from components.deploy.smoke import SmokeResult, SmokeReview, compare, smoke_set
from components.sagemaker import endpoint as E
from components.sagemaker import endpoint_client
from components.sagemaker.jobs import Clock
from components.sagemaker.settings import SageMakerSettings

BACKEND = "sagemaker"


def deploy(
    settings: SageMakerSettings,
    *,
    model_data_url: str,
    model_version: str,
    reason: str,
    reviews: list[SmokeReview],
    max_seq_length: int,
    tracking_uri: str = "",
    registered_model_name: str = "",
    pipeline_run_id: str = "",
    clients: tuple[Any, Any] | None = None,
    clock: Clock | None = None,
    now: datetime | None = None,
    out: TextIO = sys.stdout,
) -> DeploymentReport:
    """Check, roll out, smoke-test, move ``champion`` on success (see the module docstring).

    Args:
        settings: The profile's ``sagemaker`` section.
        model_data_url: The training job's ``s3://…/model.tar.gz``.
        model_version: The registered version evaluate created.
        reason: Evaluate's reason for deploying.
        reviews: The smoke set (`smoke.smoke_set`).
        max_seq_length: Tokens per review in training and evaluation (the server cuts texts to it).
        tracking_uri: MLflow URI ("" → $MLFLOW_TRACKING_URI or the embedded store).
        registered_model_name: Registered model ("" → the project default).
        pipeline_run_id: The pipeline run's id (deploy's tags go to its MLflow run).
        clients: (sagemaker, sagemaker-runtime) boto3 clients; None: the pod's, in the profile's region.
        clock: Time as the waiting sees it (tests pass their own).
        now: The attempt's time, in the Model's and EndpointConfig's names (None: now).
        out: Where the endpoint's status changes are printed.

    Raises:
        ValueError: Bad input, before any call.
        DeploymentError, endpoint.EndpointBusyError, endpoint_client.EndpointTimeoutError: The rollout did not
            succeed; champion unchanged.
    """
    E.check(settings)
    version = E.check_model_version(model_version)
    E.check_model_data(model_data_url)
    if max_seq_length < 3:
        raise ValueError(f"--max-seq-length must be at least 3, got {max_seq_length}.")
    image = settings.image("serve")
    uri = tracking.usable_tracking_uri(tracking_uri)
    name = registered_model_name or tracking.DEFAULT_REGISTERED_MODEL
    check_version(uri, name, version)
    if clients is None:
        from components.sagemaker import aws

        clients = (aws.client("sagemaker", settings.region), aws.client("sagemaker-runtime", settings.region))
    smoked: list[SmokeResult] = []

    def smoke(predict: Any) -> str:
        result = compare(reviews, predict([r.text for r in reviews]))
        smoked.append(result)
        if not result.ok:
            raise endpoint_client.SmokeTestError(
                f"smoke test failed: endpoint {settings.hosting.endpoint_name} disagrees with evaluate: "
                f"{result.describe()}"
            )
        return f"smoke test passed: {result.describe()}"

    deployment = endpoint_client.Deployment(
        model_version=version,
        model_data_url=model_data_url,
        image=image,
        environment=E.serving_environment(max_seq_length, max((len(r.text) for r in reviews), default=0)),
        smoke=smoke,
        stamp=E.stamp(now),
    )
    report = DeploymentReport(DEPLOYED, reason, version, name, BACKEND, endpoint=settings.hosting.endpoint_name)
    mlflow_run = tracking.PipelineRun(
        uri, tracking.DEFAULT_EXPERIMENT, pipeline_run_id, tracking.lineage_tags(pipeline_run_id)
    )
    try:
        rollout = endpoint_client.rollout(clients[0], clients[1], settings, deployment, clock, out)
        if rollout.action in ("failed", "rolled_back"):
            raise DeploymentError(
                f"SageMaker rollout of version {version} {rollout.action.replace('_', ' ')}: {rollout.message}; "
                "champion left unchanged."
            )
    except Exception as error:
        with contextlib.suppress(Exception):  # the rollout's error is the one to report
            mlflow_run.set_tags({"deploy.decision": "failed", "deploy.error": " ".join(str(error).split())[:5000]})
            mlflow_run.end("FAILED")
        raise
    report.outcome, report.message, report.canary = rollout.action, rollout.message, rollout.to_dict()
    report.smoke = smoked[-1].to_dict() if smoked else None
    if report.outcome in PROMOTING_ACTIONS:
        tracking.promote(uri, name, version)
    report.champion = getattr(tracking.get_alias(uri, name, tracking.CHAMPION), "version", None)
    mlflow_run.set_tags(
        {
            "deploy.decision": report.decision,
            "deploy.backend": BACKEND,
            "deploy.outcome": report.outcome,
            "deploy.endpoint": report.endpoint or "",
            "deploy.model_version": version,
        }
    )
    mlflow_run.end()
    return report


def run(
    settings: SageMakerSettings,
    *,
    model_data_url: str,
    model_version: str,
    reason: str,
    predictions_path: str | Path,
    reviews_path: str | Path,
    smoke_reviews: int,
    max_seq_length: int,
    report_path: str | Path,
    tracking_uri: str = "",
    registered_model_name: str = "",
    pipeline_run_id: str = "",
    clients: tuple[Any, Any] | None = None,
    clock: Clock | None = None,
    now: datetime | None = None,
) -> DeploymentReport:
    """The step: build the smoke set, deploy (see `deploy`), write the report."""
    reviews = smoke_set(predictions_path, reviews_path, smoke_reviews)
    report = deploy(
        settings,
        model_data_url=model_data_url,
        model_version=model_version,
        reason=reason,
        reviews=reviews,
        max_seq_length=max_seq_length,
        tracking_uri=tracking_uri,
        registered_model_name=registered_model_name,
        pipeline_run_id=pipeline_run_id,
        clients=clients,
        clock=clock,
        now=now,
    )
    write_report(report, report_path)
    return report
