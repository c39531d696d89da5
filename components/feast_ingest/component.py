"""KFP component: register the BERT features in Feast and write its offline and online stores."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from components.common.image import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def ingest_features(
    features: Input[Dataset],
    store_dir: str,
    feast_config: str,
    offline_path: str,
    report: Output[Artifact],
    metrics: Output[Metrics],
    summary_md: Output[Markdown],
) -> NamedTuple("IngestOutputs", feature_view=str, store=str, rows_written=int):  # type: ignore[valid-type]
    """Apply the Feast definitions (entity `review`, view `review_bert_features`) and ingest the features.

    Writes through Feast's public API. Validates everything first; a failure leaves the registry and earlier
    features as they were, except that a Redis online store is not transactional (see feast_ingest/core.py).

    Args:
        features: Features (Parquet) from featurize_reviews.
        store_dir: Store directory: relative paths of the feature_store.yaml resolve here (run dir or PVC).
        feast_config: `local` (SQLite + Parquet), `cluster` (Redis + PVC/S3) or a feature_store.yaml path.
        offline_path: Directory of the offline Parquet files, relative to store_dir or s3://; empty (the
            usual choice): FEAST_OFFLINE_PATH if set, else data/offline/review_features. Setting both differently
            is an error.
        report: What was written where (JSON; summary `feature_store`).
        metrics: Rows written, per split.
        summary_md: What was written where, for the dashboard.

    Returns:
        feature_view: Name of the feature view training and serving read.
        store: The store directory (pass it with feast_config to the reading steps).
        rows_written: Rows written to the online and offline stores.
    """
    from components.common import report_md
    from components.feast_ingest import core

    config = core.IngestConfig(store_dir=store_dir, feast_config=feast_config, offline_path=offline_path)
    result = core.ingest(features.path, config)
    core.write_report(result, report.path)
    items = core.metric_items(result)
    for name, value in items:
        metrics.log_metric(name, value)
    notes = [
        f"Feature view {result.feature_view} (entity {result.entity}) of project {result.project}.",
        f"Offline store: {result.offline_uri}; online store: {result.online_store.get('type', '')}.",
    ]
    report_md.write(summary_md.path, "Feast ingest", items, notes)
    outputs = NamedTuple("IngestOutputs", feature_view=str, store=str, rows_written=int)  # type: ignore[misc]  # noqa: UP014
    return outputs(result.feature_view, result.store, result.rows_written)  # type: ignore[call-arg]
