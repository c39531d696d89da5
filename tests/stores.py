"""Test data several test folders share: synthetic reviews featurized into a Parquet file and a Feast store."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from components.common import schema
from tests import testing


def synthetic_feature_store(root: Path, rows: int, seed: int) -> Path:
    """``rows`` synthetic reviews through the real featurize and feast_ingest cores (split 80/10/10, 32
    tokens): ``root/features.parquet`` and the Feast store ``root/fs``, which is returned."""
    from components.feast_ingest import core as ingest
    from components.featurize import core as featurize

    texts, labels, facets = testing.synthetic_reviews(rows, seed=seed)
    reviews = pa.table(
        {
            schema.REVIEW_ID: [f"id-{i:05d}" for i in range(rows)],
            schema.TEXT: texts,
            schema.RATING: pa.array([1 + 2 * v for v in labels], pa.int64()),
            schema.LABEL: pa.array([v - 1 for v in labels], pa.int8()),
            schema.FACET: facets,
        }
    )
    pq.write_table(reviews, root / "reviews.parquet")
    config = featurize.FeaturizeConfig(max_seq_length=32, validation_fraction=0.1, test_fraction=0.1, seed=1)
    featurize.run(root / "reviews.parquet", root / "features.parquet", config)
    ingest.ingest(root / "features.parquet", ingest.IngestConfig(store_dir=str(root / "fs"), feast_config="local"))
    return root / "fs"
