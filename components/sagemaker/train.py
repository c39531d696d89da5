"""KFP component: the final training as a SageMaker training job on the project's train image."""

from kfp import dsl
from kfp.dsl import Artifact, Markdown, Metrics, Model, Output

from components.common.image import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def train_on_sagemaker(
    feature_store: str,
    feast_config: str,
    base_model: str,
    num_train_epochs: int,
    learning_rate: float,
    per_device_train_batch_size: int,
    max_seq_length: int,
    seed: int,
    hyperparameters: dict,
    health_policy: str,
    pipeline_run_id: str,
    data_hash: str,
    mlflow_tracking_uri: str,
    model: Output[Model],
    metrics: Output[Metrics],
    report: Output[Artifact],
    summary_md: Output[Markdown],
) -> None:
    """Fine-tune the classifier in a SageMaker training job; the model comes back into this step's Model directory.

    The train and validation splits are read from Feast and written to S3 as the job's channels; the job runs on
    the profile's instances (``sagemaker.training``), resumes from its S3 checkpoints after a spot interruption,
    and is stopped when this task is cancelled.

    Args:
        feature_store: Feast store directory: ingest_features' `store` output (train and validation splits).
        feast_config: Feast configuration: local, cluster, or a feature_store.yaml path.
        base_model: Hugging Face model id or directory in the train image; empty: the bundled MiniLM.
        num_train_epochs: Passes over the training split (early stopping may end sooner).
        learning_rate: Peak AdamW learning rate.
        per_device_train_batch_size: Reviews per batch and GPU.
        max_seq_length: Longer reviews are cut to this many tokens.
        seed: Seed of initialisation, dropout and data order.
        hyperparameters: Overrides from tuning, by training option name (e.g. {"learning_rate": 3e-05}).
        health_policy: report (record firing health rules) or stop (end training when one fires).
        pipeline_run_id: The pipeline run's id: names the job (a retried task finds it) and its S3 folder.
        data_hash: Hash of the input data file (a hyperparameter, for lineage).
        mlflow_tracking_uri: MLflow tracking URI (checked before the job starts; the job's hyperparameters, final
            metrics and report go to the pipeline run's MLflow run); empty: $MLFLOW_TRACKING_URI.
        model: The model directory the job wrote (model.tar.gz unpacked); metadata: the job, and the
            model.tar.gz URI as model_data_url.
        metrics: The job's final metrics (validation accuracy, F1 and loss; training loss).
        report: Training report JSON (job, status transitions, metrics, model_data, billable seconds).
        summary_md: The job, its final metrics and where the model is, for the dashboard.
    """
    parameters = dict(locals())  # the training options by name
    import json
    from pathlib import Path

    from components.common import report_md
    from components.sagemaker import aws, core
    from components.sagemaker.settings import SageMakerSettings

    settings = SageMakerSettings.from_env()
    outputs = ("hyperparameters", "model", "metrics", "report", "summary_md", "mlflow_tracking_uri")
    values = {k: v for k, v in parameters.items() if k not in outputs}
    run = core.open_mlflow_run(mlflow_tracking_uri, pipeline_run_id, data_hash, "train")
    outcome = core.train(
        settings, aws.clients(settings), {**values, **hyperparameters}, settings.image("train"), model.path
    )
    core.log_training(run, outcome)
    model.metadata.update({"sagemaker_training_job": outcome.job_name, "model_data_url": outcome.model_data})
    Path(report.path).write_text(json.dumps(outcome.report, indent=1, default=str))
    for name, value in sorted(outcome.metrics.items()):
        metrics.log_metric(name, value)
    notes = [f"SageMaker training job {outcome.job_name}; model: {outcome.model_data}."]
    report_md.write(summary_md.path, "Train (SageMaker)", sorted(outcome.metrics.items()), notes)
