"""The course's data for the benchmarks that train (quality, train, tune): the CSV and its features."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def course_csv(value: str) -> str:
    """``value`` (``--csv``), else ``$REVIEWS_CSV``: the course CSV.

    Raises:
        SystemExit: Neither names a file.
    """
    path = value or os.environ.get("REVIEWS_CSV", "")
    if not path or not Path(path).is_file():
        raise SystemExit(
            "error: pass --csv or set REVIEWS_CSV to the course CSV (womens_clothing_ecommerce_reviews.csv)"
        )
    return path


def course_features(csv: str, max_seq_length: int, seed: int = 42) -> tuple[Any, dict[str, Any]]:
    """The course's balanced data, featurized and split 90/5/5 by the project's own steps.

    Returns:
        (features DataFrame with `split`, token-length statistics)
    """
    import pyarrow as pa

    from components.featurize import core as featurize
    from components.prepare_data import core as prepare

    _, prepared, _ = prepare.prepare(prepare.read_reviews(csv), prepare.PrepareConfig(seed=seed), source=csv)
    table = featurize.validate_reviews(pa.Table.from_pandas(prepared, preserve_index=False))
    config = featurize.FeaturizeConfig(max_seq_length=max_seq_length, seed=seed)
    features, stats = featurize.featurize(table, featurize.load_tokenizer(""), config)
    return features.to_pandas(), stats


def all_data_features(csv: str, max_seq_length: int, seed: int = 42) -> tuple[Any, dict[str, Any]]:
    """`course_features`' validation and test splits (the balanced ones), and every other cleaned review as the
    train split: the data the course's down-sampling throws away, with its class imbalance.

    Returns:
        (features DataFrame with `split`, token-length statistics of all the reviews)
    """
    import pyarrow as pa

    from components.featurize import core as featurize
    from components.prepare_data import core as prepare

    balanced, _ = course_features(csv, max_seq_length, seed)
    held_out = balanced[balanced["split"] != "train"].set_index("review_id")["split"]
    config = prepare.PrepareConfig(seed=seed, balance=False)
    _, prepared, _ = prepare.prepare(prepare.read_reviews(csv), config, source=csv)
    table = featurize.validate_reviews(pa.Table.from_pandas(prepared, preserve_index=False))
    features, stats = featurize.featurize(
        table, featurize.load_tokenizer(""), featurize.FeaturizeConfig(max_seq_length=max_seq_length, seed=seed)
    )
    frame = features.to_pandas()
    frame["split"] = frame["review_id"].map(held_out).fillna("train")
    missing = set(held_out.index) - set(frame["review_id"])
    if missing:  # (the same cleaning gives the same review ids with and without balancing)
        raise RuntimeError(f"{len(missing)} held-out review(s) not among the unbalanced reviews")
    return frame, stats
