"""KFP component: deploy a model that passed the gate to a SageMaker endpoint (canary update), the SageMaker
target's stand-in for `components.deploy.component.deploy_model`."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.common.image import SERVE_IMAGE


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def deploy_sagemaker_endpoint(
    model: Input[Model],
    predictions: Input[Dataset],
    reviews: Input[Dataset],
    model_version: str,
    reason: str,
    max_seq_length: int,
    smoke_reviews: int,
    mlflow_tracking_uri: str,
    registered_model_name: str,
    pipeline_run_id: str,
    report: Output[Artifact],
    metrics: Output[Metrics],
    summary_md: Output[Markdown],
) -> str:
    """Roll the registered model version out to the profile's SageMaker endpoint (a blue/green canary once it
    exists), smoke-test it against evaluate's answers, and make it the champion.

    Args:
        model: The SageMaker training step's model (its model.tar.gz in S3: metadata `model_data_url`, else the URI).
        predictions: Evaluate's test-split predictions (the smoke test's expected answers).
        reviews: Prepare's reviews (the smoke reviews' texts).
        model_version: The MLflow model version evaluate registered (alias challenger).
        reason: Evaluate's reason for deploying.
        max_seq_length: Tokens per review in training (the endpoint's server cuts texts to it).
        smoke_reviews: Held-out reviews the endpoint must answer as evaluate did.
        mlflow_tracking_uri: MLflow tracking URI; empty: $MLFLOW_TRACKING_URI.
        registered_model_name: Registered model whose champion alias moves; empty: the project default.
        pipeline_run_id: The pipeline run's id (deploy's tags go to its MLflow run).
        report: Decision, reason, model version, endpoint, backend, rollout outcome, smoke test (JSON).
        metrics: deployed (1), smoke reviews and matches.
        summary_md: What was deployed where and how the smoke test went, for the dashboard.

    Returns:
        The report's JSON (summary.json's `deployment`).
    """
    import json

    from components.deploy import core
    from components.sagemaker import endpoint_step
    from components.sagemaker.settings import SageMakerSettings

    result = endpoint_step.run(
        SageMakerSettings.from_env(),
        model_data_url=str(model.metadata.get("model_data_url") or model.uri),
        model_version=model_version,
        reason=reason,
        predictions_path=predictions.path,
        reviews_path=reviews.path,
        smoke_reviews=smoke_reviews,
        max_seq_length=max_seq_length,
        report_path=report.path,
        tracking_uri=mlflow_tracking_uri,
        registered_model_name=registered_model_name,
        pipeline_run_id=pipeline_run_id,
    )
    for name, value in result.headline().items():
        metrics.log_metric(name, value)
    core.write_summary(result, summary_md.path)
    return json.dumps(result.to_dict())
