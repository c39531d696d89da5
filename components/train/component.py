"""KFP component: fine-tune the review-sentiment classifier on the features in the Feast store."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Markdown, Metrics, Model, Output

from components.common.image import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_classifier(
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
    checkpoint_root: str,
    mlflow_tracking_uri: str,
    pipeline_run_id: str,
    data_hash: str,
    model: Output[Model],
    metrics: Output[Metrics],
    report: Output[Artifact],
    curve_html: Output[HTML],
    summary_md: Output[Markdown],
) -> None:
    """Fine-tune AutoModelForSequenceClassification (3 labels) on the train split, early-stopping on validation.

    Uses every GPU of the pod (torchrun/DDP when there are several), mixed precision on GPU, fp32 on CPU.

    Args:
        feature_store: Feast store directory: ingest_features' `store` output (train and validation splits).
        feast_config: Feast configuration: local, cluster, or a feature_store.yaml path.
        base_model: Hugging Face model id (local cache) or directory; empty: the bundled MiniLM.
        num_train_epochs: Passes over the training split (early stopping may end sooner).
        learning_rate: Peak AdamW learning rate.
        per_device_train_batch_size: Reviews per batch and GPU.
        max_seq_length: Longer reviews are cut to this many tokens.
        seed: Seed of initialisation, dropout and data order.
        hyperparameters: Overrides from tuning, by training option name (e.g. {"warmup_ratio": 0.06}).
        health_policy: report (record firing health rules) or stop (end training when one fires).
        checkpoint_root: Persistent directory (e.g. a PVC) for checkpoints, so a retried task resumes; empty:
            a temporary directory.
        mlflow_tracking_uri: MLflow tracking URI; empty: $MLFLOW_TRACKING_URI (a KFP pod gets it from the
            profile), else the embedded SQLite store (locally).
        pipeline_run_id: The pipeline run's id (one MLflow run per pipeline run).
        data_hash: Hash of the input data file, recorded as a lineage tag.
        model: Hugging Face save_pretrained directory: weights, config with id2label, tokenizer.
        metrics: Validation accuracy/F1/loss of the final model, training loss, throughput, health rules.
        report: Training report JSON (history, health rules, MLflow run) for summary.json's `training`.
        curve_html: Training and validation loss, validation accuracy and macro-F1 per evaluation (a chart).
        summary_md: Validation figures, how training ended and its history, for the dashboard.
    """
    parameters = dict(locals())  # every parameter by name: the training options are handed on by name
    from components.train import cli
    from components.train import report as dashboard

    values = cli.component_options(parameters, hyperparameters, checkpoint_root, model.path, report.path)
    cli.run_component(values, keep_checkpoints=bool(checkpoint_root))
    for name, value in cli.metric_items(report.path):
        metrics.log_metric(name, value)
    dashboard.write_outputs(report.path, curve_html.path, summary_md.path)
