"""prepare_data core: reading, label mapping, cleaning, balancing and every bad-input rule."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from components.common import schema
from components.prepare_data import core
from tests.conftest import make_reviews

CONFIG = core.PrepareConfig(min_facet_rows=1)


@pytest.mark.parametrize(("stars", "expected"), [(1, -1), (2, -1), (3, 0), (4, 1), (5, 1), (4.0, 1), ("5", 1)])
def test_ratings_map_to_sentiment(stars: object, expected: int) -> None:
    assert core.ratings_to_sentiment(pd.Series([stars]), "Rating").iloc[0] == expected


@pytest.mark.parametrize(
    ("label", "expected"),
    [("negative", -1), ("Neutral", 0), ("POSITIVE", 1), (" positive ", 1), ("-1", -1), (0, 0), (1.0, 1), ("+1", 1)],
)
def test_categorical_labels_map_to_sentiment(label: object, expected: int) -> None:
    assert core.labels_to_sentiment(pd.Series([label], dtype=object), "label").iloc[0] == expected


def test_unknown_labels_are_listed() -> None:
    with pytest.raises(ValueError, match=r"unknown label value\(s\): 'great', 'meh'"):
        core.labels_to_sentiment(pd.Series(["positive", "meh", "great", "meh"]), "label")


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        (["5", "five", "3"], r"not numbers \(e\.g\. 'five'\)"),
        ([5, 0, 3], r"outside that \(e\.g\. 0"),
        ([5, 6, 3], r"outside that \(e\.g\. 6"),
        ([5, 3.5, 3], r"outside that \(e\.g\. 3\.5"),
    ],
)
def test_bad_ratings_are_rejected(ratings: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        core.ratings_to_sentiment(pd.Series(ratings, dtype=object), "Rating")


def test_clean_drops_missing_and_rare_and_keeps_schema(small_reviews: pd.DataFrame) -> None:
    raw = small_reviews.copy()
    raw.loc[0, "Review Text"] = None
    raw.loc[1, "Review Text"] = "   "
    raw.loc[2, "Rating"] = None
    raw.loc[3, "Class Name"] = None
    raw.loc[4:5, "Class Name"] = "Rare"
    cleaned, dropped = core.clean_reviews(raw, core.PrepareConfig(min_facet_rows=3))
    assert list(cleaned.columns) == list(schema.PREPARED_COLUMNS)
    assert dropped == {"dropped_missing": 4, "dropped_rare_facet": 2, "rare_facet_values": ["Rare"]}
    assert len(cleaned) == len(raw) - 6
    assert cleaned[schema.REVIEW_ID].is_unique


def test_review_ids_are_stable_and_order_independent(small_reviews: pd.DataFrame) -> None:
    raw = pd.concat([small_reviews, small_reviews.iloc[:3]], ignore_index=True)  # exact duplicates too
    first, _ = core.clean_reviews(raw, CONFIG)
    again, _ = core.clean_reviews(raw.copy(), CONFIG)
    shuffled, _ = core.clean_reviews(raw.sample(frac=1, random_state=3), CONFIG)
    assert first[schema.REVIEW_ID].is_unique
    assert first[schema.REVIEW_ID].tolist() == again[schema.REVIEW_ID].tolist()
    assert set(first[schema.REVIEW_ID]) == set(shuffled[schema.REVIEW_ID])


def test_balance_downsamples_to_the_smallest_class_seeded() -> None:
    raw = make_reviews(300, seed=1)
    cleaned, prepared, report = core.prepare(raw, core.PrepareConfig(min_facet_rows=1, seed=5))
    counts = prepared[schema.LABEL].value_counts()
    assert counts.nunique() == 1
    assert counts.iloc[0] == cleaned[schema.LABEL].value_counts().min()
    assert report.rows_out == len(prepared) and report.rows_clean == len(cleaned)
    again = core.prepare(raw, core.PrepareConfig(min_facet_rows=1, seed=5))[1]
    pd.testing.assert_frame_equal(prepared, again)


def test_no_balance_and_max_rows_cap() -> None:
    raw = make_reviews(300, seed=2)
    _, unbalanced, _ = core.prepare(raw, core.PrepareConfig(min_facet_rows=1, balance=False))
    assert len(unbalanced) == 300
    _, capped, report = core.prepare(raw, core.PrepareConfig(min_facet_rows=1, balance=False, max_rows=50))
    assert len(capped) == 50 and report.rows_out == 50
    assert set(capped[schema.REVIEW_ID]) <= set(unbalanced[schema.REVIEW_ID])


def test_label_column_and_group_column(small_reviews: pd.DataFrame) -> None:
    raw = small_reviews.assign(label=["negative", "neutral", "positive"] * 20).drop(columns="Rating")
    cleaned, _ = core.clean_reviews(raw, core.PrepareConfig(label_column="label", group_column="Age", min_facet_rows=1))
    assert cleaned[schema.LABEL].tolist()[:3] == [-1, 0, 1]
    assert cleaned[schema.RATING].isna().all()
    assert schema.GROUP in cleaned.columns


# --- files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".csv.gz"])
def test_reads_every_format(tmp_path: Path, small_reviews: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"reviews{suffix}"
    if suffix == ".parquet":
        small_reviews.to_parquet(path)
    else:
        small_reviews.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    frame = core.read_reviews(str(path))
    assert len(frame) == len(small_reviews)
    assert frame["Review Text"].tolist() == small_reviews["Review Text"].tolist()


def test_reads_an_fsspec_uri(small_reviews: pd.DataFrame) -> None:
    import fsspec

    with fsspec.open("memory://bucket/reviews.csv", "w") as fh:
        small_reviews.to_csv(fh, index=False)
    assert len(core.read_reviews("memory://bucket/reviews.csv")) == len(small_reviews)


def _write(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


HEADER = b"Review Text,Rating,Class Name\n"


@pytest.mark.parametrize(
    ("name", "content", "config", "message"),
    [
        ("missing.csv", None, CONFIG, r"does not exist"),
        ("latin1.csv", HEADER + b"caf\xe9 dress,5,Dresses\n", CONFIG, r"not valid UTF-8"),
        ("empty.csv", b"", CONFIG, r"is empty \(0 bytes\)"),
        ("header.csv", HEADER, CONFIG, r"has a header but no rows"),
        ("reviews.json", b"{}", CONFIG, r"Cannot tell the format"),
        (
            "nocol.csv",
            b"Text,Rating,Class Name\nnice,5,Dresses\n",
            CONFIG,
            r"no column --text-column 'Review Text'\. Columns present: 'Text', 'Rating', 'Class Name'",
        ),
        ("stars.csv", HEADER + b"nice,five,Dresses\nbad,1,Knits\n", CONFIG, r"'Rating' must hold star ratings"),
        ("range.csv", HEADER + b"nice,7,Dresses\nbad,1,Knits\n", CONFIG, r"whole star ratings from 1 to 5"),
        (
            "labels.csv",
            b"Review Text,label,Class Name\nnice,good,Dresses\nbad,negative,Knits\n",
            core.PrepareConfig(label_column="label", min_facet_rows=1),
            r"unknown label value\(s\): 'good'",
        ),
        ("alldropped.csv", HEADER + b",5,Dresses\n,1,Knits\n", CONFIG, r"Every row of .* was dropped"),
        ("oneclass.csv", HEADER + b"nice,5,Dresses\ngreat,4,Knits\n", CONFIG, r"single sentiment class \('positive'"),
        ("onefacet.csv", HEADER + b"nice,5,Dresses\nbad,1,Dresses\n", CONFIG, r"single value \('Dresses'\)"),
        ("rare.csv", HEADER + b"nice,5,Dresses\nbad,1,Knits\n", core.PrepareConfig(), r"fewer than --min-facet-rows"),
    ],
)
def test_bad_input_gets_one_clear_error(
    tmp_path: Path, name: str, content: bytes | None, config: core.PrepareConfig, message: str
) -> None:
    path = str(tmp_path / name) if content is None else _write(tmp_path, name, content)
    with pytest.raises(ValueError, match=message):
        core.validate(path, config)


def test_course_csv_cleans_to_the_clarify_rows(reviews_csv: Path) -> None:
    """The transform in ../shared/data/README.md: 22,626 rows, 17,433 / 2,823 / 2,370."""
    _, _, report = core.prepare(core.read_reviews(str(reviews_csv)), core.PrepareConfig())
    assert report.rows_in == 23486
    assert report.rows_clean == 22626
    assert report.class_counts_clean == {"negative": 2370, "neutral": 2823, "positive": 17433}
    assert report.facet_values == 18
    assert report.class_counts_out == {"negative": 2370, "neutral": 2370, "positive": 2370}
