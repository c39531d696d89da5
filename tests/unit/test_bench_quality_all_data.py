"""bench quality --all-data: the balanced run's validation and test splits kept, every other review trained on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench._course import all_data_features, course_features
from components.common.batching import balanced_class_weights


def test_all_data_keeps_the_held_out_splits_and_trains_on_the_rest(tmp_path: Path, reviews_csv: Path) -> None:
    csv = tmp_path / "reviews.csv"
    pd.read_csv(reviews_csv).head(3000).to_csv(csv, index=False)
    balanced, _ = course_features(str(csv), 32, seed=7)
    everything, _ = all_data_features(str(csv), 32, seed=7)
    for split in ("validation", "test"):
        kept = everything.loc[everything["split"] == split, "review_id"]
        assert sorted(kept) == sorted(balanced.loc[balanced["split"] == split, "review_id"])
    train = everything[everything["split"] == "train"]
    assert not set(train["review_id"]) & set(balanced.loc[balanced["split"] != "train", "review_id"])
    assert len(train) > 2 * (balanced["split"] == "train").sum()  # what balancing threw away is trained on
    counts = train["label_id"].value_counts().sort_index()
    assert counts.iloc[2] > 2 * counts.iloc[0]  # positive reviews dominate: hence the class weights
    weights = balanced_class_weights(train["label_id"])
    assert weights[0] > 1 > weights[2]
    assert sum(w * c for w, c in zip(weights, counts, strict=True)) == pytest.approx(len(train))  # same scale
