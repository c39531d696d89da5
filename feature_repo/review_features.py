"""Feast definitions: the `review` entity, the BERT features that training and serving share, and the
training labels, which only training and evaluation read.

Two feature views over the one offline source (the Parquet files `feast_ingest` writes):

- `review_bert_features` (``online=True``): what serving reads by review id with
  `FeatureStore.get_online_features` — the token ids and the facet value;
- `review_labels` (``online=False``: Feast's `FeatureView` option "whether online retrieval is enabled for
  this feature view", feast/feature_view.py): the class id and the split.  They are read point-in-time with
  `get_historical_features` only, so they are never written to the online store and a served model cannot
  be handed a review's label.

`feast -c feature_repo plan|apply` imports this module and registers the module-level objects.  The
pipeline's `feast_ingest` step calls `definitions()` with the offline location it was configured with,
so both register the same objects.

The offline location is the one environment-dependent part, and `offline_path` below is the one place
that decides it, for the CLI and for the ingest step alike: an explicit path (the step's `offline_path`),
else `FEAST_OFFLINE_PATH` (the cluster profile's ConfigMap), else `DEFAULT_OFFLINE_PATH`; a relative path
resolves under the repository (store) directory and is registered absolute, because Feast's DuckDB
offline store reads the path as it is registered.  It names a directory of Parquet files: each ingest adds
its own file there, so runs that share a store never rewrite each other's rows.  `FEAST_S3_ENDPOINT_URL`
sets the S3 endpoint for MinIO.  These literals match `components/common/features.py` (a unit test checks).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Int32, Int64, String

PROJECT_TAGS = {"team": "ml", "course": "practical-data-science"}
DEFAULT_OFFLINE_PATH = "data/offline/review_features"


def offline_path(repo_dir: str | Path, override: str = "") -> str:
    """Where the offline Parquet files live: ``override``, else `FEAST_OFFLINE_PATH`, else the default.

    Relative paths resolve under ``repo_dir`` (the store directory) and come back absolute; URIs
    (`s3://...`) come back as they are.

    Raises:
        ValueError: ``override`` and `FEAST_OFFLINE_PATH` are both set and differ (two places deciding).
    """
    override = (override or "").strip()
    env = os.environ.get("FEAST_OFFLINE_PATH", "").strip()
    if override and env and override != env:
        raise ValueError(
            f"The offline path is set twice: --offline-path {override!r} and FEAST_OFFLINE_PATH={env!r}. "
            "Leave --offline-path empty to use FEAST_OFFLINE_PATH (the cluster profile's ConfigMap), "
            "or make them equal."
        )
    path = override or env or DEFAULT_OFFLINE_PATH
    if "://" in path:
        return path
    resolved = Path(path).expanduser()
    return str(resolved if resolved.is_absolute() else Path(repo_dir).resolve() / resolved)


review = Entity(
    name="review",
    join_keys=["review_id"],
    value_type=ValueType.STRING,
    description="One product review; review_id is stable across runs (derived from the review by prepare_data).",
)


def review_features_source(path: str, s3_endpoint_override: str | None = None) -> FileSource:
    """The offline Parquet files the `feast_ingest` step writes (``path``: from `offline_path`)."""
    return FileSource(
        name="review_features_source",
        path=path,
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        s3_endpoint_override=s3_endpoint_override or None,
        description="BERT token ids, label ids and split assignment per review (written by feast_ingest).",
    )


def review_feature_view(source: FileSource) -> FeatureView:
    """BERT features per review, served online: unpadded token ids and the facet value."""
    return FeatureView(
        name="review_bert_features",
        entities=[review],
        ttl=timedelta(0),  # no expiry: a review's features stay valid until re-featurized
        schema=[
            Field(name="review_id", dtype=String),
            Field(name="input_ids", dtype=Array(Int32), description="Token ids, truncated, not padded."),
            Field(name="product_category", dtype=String, description="Facet value (for per-facet evaluation)."),
        ],
        source=source,
        online=True,
        description="Model inputs of the review-sentiment classifier; training reads them offline, serving online "
        "by review id.",
        tags=PROJECT_TAGS,
    )


def review_label_view(source: FileSource) -> FeatureView:
    """Training labels per review, offline only (``online=False``): class id and split."""
    return FeatureView(
        name="review_labels",
        entities=[review],
        ttl=timedelta(0),
        schema=[
            Field(name="review_id", dtype=String),
            Field(name="label_id", dtype=Int64, description="Class id 0/1/2 = sentiment -1/0/1."),
            Field(name="split", dtype=String, description="train, validation or test."),
        ],
        source=source,
        online=False,  # labels and splits are for training and evaluation, never for the served model
        description="Training labels and split assignment; read with get_historical_features only.",
        tags=PROJECT_TAGS,
    )


def definitions(location: str, s3_endpoint_override: str | None = None) -> list:
    """The objects to apply: the entity and the two feature views (which carry their source at ``location``)."""
    source = review_features_source(location, s3_endpoint_override)
    return [review, review_feature_view(source), review_label_view(source)]


# What the Feast CLI registers (Feast repositories declare module-level objects; this file's directory is
# the repository directory).
review_bert_features, review_labels = definitions(
    offline_path(Path(__file__).parent), os.environ.get("FEAST_S3_ENDPOINT_URL")
)[1:]
