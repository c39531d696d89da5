"""KFP component: test-split quality, per-facet accuracy, and the deploy decision against the champion."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.common.image import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def evaluate_classifier(
    feature_store: str,
    feast_config: str,
    model: Input[Model],
    data_report: Input[Artifact],
    reviews: Input[Dataset],
    max_seq_length: int,
    min_accuracy: float,
    mlflow_tracking_uri: str,
    registered_model_name: str,
    pipeline_run_id: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report_html: Output[HTML],
    report_json: Output[Artifact],
    predictions: Output[Dataset],
    summary_md: Output[Markdown],
) -> NamedTuple("EvaluateOutputs", [("deploy", bool), ("reason", str), ("model_version", str)]):
    """Score the model on the test split, compare it with the registry's champion and decide on deployment.

    Args:
        feature_store: Feast store directory: ingest_features' `store` output (test split).
        feast_config: Feast configuration: local, cluster, or a feature_store.yaml path.
        model: The trained model directory from train_classifier.
        data_report: prepare_reviews' report (input URI, data hash, row counts, balance, max_rows): logged to
            MLflow with the rows as the run's dataset; its hash is compared with the champion's.
        reviews: prepare_reviews' rows (what featurize split into train/validation/test): the MLflow dataset.
        max_seq_length: Tokens per review in training; the MLflow model logged for the registry cuts texts to it.
        min_accuracy: The gate's floor: deploy only at or above this test accuracy (and only when the model also
            beats the no-skill baseline of the test split, trained healthy and is not below the champion).
        mlflow_tracking_uri: MLflow tracking URI; empty: $MLFLOW_TRACKING_URI (a KFP pod gets it from the
            profile), else the embedded SQLite store (locally).
        registered_model_name: Registered model whose `champion` alias is compared; this model becomes its
            `challenger`. Empty: the project default.
        pipeline_run_id: The pipeline run's id (one MLflow run per pipeline run).
        metrics: Accuracy, macro-F1, per-class precision/recall, facet accuracy gap, champion accuracy, deploy.
        classification: Confusion matrix (negative, neutral, positive).
        report_html: Confusion matrix, per-class table and per-facet accuracy chart.
        report_json: Full report JSON (summary.json's `evaluation`).
        predictions: Each test review's predicted label and class probabilities (Parquet; deploy's smoke test
            checks the model server against them).
        summary_md: The decision, its warnings and the headline figures, for the dashboard.
    """
    from components.common import report_md
    from components.evaluate import core

    test_rows = core.read_test_split(feature_store, feast_config)
    report = core.run(
        test_rows,
        model.path,
        report_json.path,
        report_html.path,
        min_accuracy=min_accuracy,
        tracking_uri=mlflow_tracking_uri,
        registered_model_name=registered_model_name,
        pipeline_run_id=pipeline_run_id,
        predictions_path=predictions.path,
        max_seq_length=max_seq_length,
        data=core.read_input_data(data_report.path, reviews.path),
    )
    classification.log_confusion_matrix(report.categories, report.confusion_matrix)
    for name, value in report.headline().items():
        metrics.log_metric(name, value)
    verdict = "Deploy" if report.decision["deploy"] else "Do not deploy"
    notes = [f"{verdict}: {report.decision['reason']}", *(f"Warning: {w}" for w in report.warnings)]
    if report.registered_version:
        notes.append(f"Registered as version {report.registered_version} of {report.registered_model}.")
    report_md.write(summary_md.path, "Evaluate", report.headline(), notes)
    outputs = NamedTuple("EvaluateOutputs", [("deploy", bool), ("reason", str), ("model_version", str)])  # noqa: UP014
    return outputs(report.decision["deploy"], report.decision["reason"], report.registered_version or "")
