"""KFP components: deploy a model that passed the gate (local model server or KServe canary), or record the skip."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.common.image import COMPONENTS_IMAGE, SERVE_IMAGE


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def deploy_model(
    model: Input[Model],
    predictions: Input[Dataset],
    reviews: Input[Dataset],
    model_version: str,
    reason: str,
    max_seq_length: int,
    deploy_backend: str,
    canary_traffic_percent: int,
    inference_service: str,
    kserve_namespace: str,
    kserve_mode: str,
    serving_runtime: str,
    rollout_timeout_seconds: int,
    smoke_reviews: int,
    local_port: int,
    mlflow_tracking_uri: str,
    registered_model_name: str,
    pipeline_run_id: str,
    report: Output[Artifact],
    metrics: Output[Metrics],
    summary_md: Output[Markdown],
    kserve_service_account: str = "",
    kserve_resources: str = "",
) -> str:
    """Roll out the registered model version, smoke-test it against evaluate's answers, and make it the champion.

    Args:
        model: The trained model directory from train_classifier (served locally; its URI is what KServe serves).
        predictions: Evaluate's test-split predictions (the smoke test's expected answers).
        reviews: Prepare's reviews (the smoke reviews' texts).
        model_version: The MLflow model version evaluate registered (alias challenger).
        reason: Evaluate's reason for deploying.
        max_seq_length: Tokens per review in training (the server cuts texts to it).
        deploy_backend: local (model server subprocess, smoke test) or kserve (InferenceService canary).
        canary_traffic_percent: KServe: traffic share of the canary.
        inference_service: The InferenceService's name (locally: the model's name in the routes).
        kserve_namespace: KServe: namespace; empty: the pod's.
        kserve_mode: KServe deployment mode of a new InferenceService (Knative, Standard; empty: the cluster's).
        serving_runtime: KServe predictor: project (serve image) or huggingface.
        kserve_service_account: KServe: the predictor pods' ServiceAccount (model storage credentials); empty: the
            namespace's default.
        kserve_resources: KServe: the model server container's resources as JSON (requests, limits); empty: none.
        rollout_timeout_seconds: Wait at most this long for the server or the canary to become ready.
        smoke_reviews: Held-out reviews the served model must answer as evaluate did.
        local_port: local: the server's port on 127.0.0.1; 0: a free one.
        mlflow_tracking_uri: MLflow tracking URI; empty: $MLFLOW_TRACKING_URI, else the embedded store.
        registered_model_name: Registered model whose champion alias moves; empty: the project default.
        pipeline_run_id: The pipeline run's id (deploy's tags go to its MLflow run).
        report: Decision, reason, model version, endpoint, backend, canary outcome, smoke test (JSON).
        metrics: deployed (1), smoke reviews and matches.
        summary_md: What was deployed where and how the smoke test went, for the dashboard.

    Returns:
        The report's JSON (summary.json's `deployment`).
    """
    parameters = dict(locals())  # the step's options are handed on by name
    import json

    from components.common import options
    from components.deploy import core
    from components.deploy.config import DeployConfig

    config = options.from_mapping(DeployConfig, parameters, ignore_unknown=True)
    result = core.run(
        config,
        model_dir=model.path,
        storage_uri=model.uri,
        model_version=model_version,
        reason=reason,
        predictions_path=predictions.path,
        reviews_path=reviews.path,
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


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def skip_deployment(
    reason: str, model_version: str, deploy_backend: str, registered_model_name: str, summary_md: Output[Markdown]
) -> str:
    """Record that the model did not pass evaluate's gate: nothing is rolled out, the champion stays.

    Args:
        reason: Evaluate's reason for not deploying.
        model_version: The MLflow model version evaluate registered (alias challenger).
        deploy_backend: The backend a deployment would have used.
        registered_model_name: Registered model; empty: the project default.
        summary_md: That nothing was deployed, and why, for the dashboard.

    Returns:
        The skipped deployment's JSON (summary.json's `deployment`).
    """
    import json

    from components.deploy import core

    result = core.skipped(reason, model_version, deploy_backend, registered_model_name)
    core.write_summary(result, summary_md.path)
    return json.dumps(result.to_dict())
