"""Feast definitions: the `review` entity and the BERT feature view that training and serving share.

`feast -c feature_repo plan|apply` imports this module and registers the module-level objects.  The
pipeline's `feast_ingest` step calls `definitions()` with the offline location it was configured with,
so both register the same objects.

The offline Parquet location is the one environment-dependent part (a file under the store directory
by default; an `s3://` URI on clusters that keep offline data in S3/MinIO), so the module-level objects
read it from `FEAST_OFFLINE_PATH` (and `FEAST_S3_ENDPOINT_URL` for MinIO) as Feast repositories
conventionally do.  These literals match `components/common/features.py` (a unit test checks).
"""

from __future__ import annotations

import os
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Int32, Int64, String

PROJECT_TAGS = {"team": "ml", "course": "practical-data-science"}
DEFAULT_OFFLINE_PATH = "data/offline/review_features.parquet"

review = Entity(
    name="review",
    join_keys=["review_id"],
    value_type=ValueType.STRING,
    description="One product review; review_id is stable across runs (derived from the review by prepare_data).",
)


def review_features_source(path: str = DEFAULT_OFFLINE_PATH, s3_endpoint_override: str | None = None) -> FileSource:
    """The offline Parquet data the `feast_ingest` step writes (relative paths resolve in the store directory)."""
    return FileSource(
        name="review_features_source",
        path=path,
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        s3_endpoint_override=s3_endpoint_override or None,
        description="BERT token ids, label ids and split assignment per review (written by feast_ingest).",
    )


def review_feature_view(source: FileSource) -> FeatureView:
    """BERT features per review: unpadded token ids, class id, split, facet value."""
    return FeatureView(
        name="review_bert_features",
        entities=[review],
        ttl=timedelta(0),  # no expiry: a review's features stay valid until re-featurized
        schema=[
            Field(name="review_id", dtype=String),
            Field(name="input_ids", dtype=Array(Int32), description="Token ids, truncated, not padded."),
            Field(name="label_id", dtype=Int64, description="Class id 0/1/2 = sentiment -1/0/1."),
            Field(name="split", dtype=String, description="train, validation or test."),
            Field(name="product_category", dtype=String, description="Facet value (for per-facet evaluation)."),
        ],
        source=source,
        online=True,
        description="Model inputs of the review-sentiment classifier; training and serving read these.",
        tags=PROJECT_TAGS,
    )


def definitions(offline_path: str = DEFAULT_OFFLINE_PATH, s3_endpoint_override: str | None = None) -> list:
    """The objects to apply: the entity and the feature view (which carries its source)."""
    return [review, review_feature_view(review_features_source(offline_path, s3_endpoint_override))]


# What the Feast CLI registers.
review_bert_features = review_feature_view(
    review_features_source(
        os.environ.get("FEAST_OFFLINE_PATH") or DEFAULT_OFFLINE_PATH, os.environ.get("FEAST_S3_ENDPOINT_URL")
    )
)
