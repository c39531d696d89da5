"""prepare_data core: reading, label mapping, cleaning, balancing and every bad-input rule."""

from __future__ import annotations

import hashlib
import tracemalloc
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
    assert dropped == {
        "dropped_missing": 4,
        "dropped_missing_group": 0,
        "dropped_rare_facet": 2,
        "rare_facet_values": ["Rare"],
        "warnings": [],
    }
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


def _joined_key_ids(frame: pd.DataFrame) -> list[str]:
    """`core.review_ids` as first written (a joined text/facet/label key per row): the reference its ids keep."""
    keys = frame[schema.TEXT].astype(str) + "\x1f" + frame[schema.FACET].astype(str)
    keys = keys + "\x1f" + frame[schema.LABEL].astype(str)
    occurrence = keys.groupby(keys).cumcount()
    return [hashlib.sha1(f"{k}\x1f{n}".encode()).hexdigest()[:16] for k, n in zip(keys, occurrence, strict=True)]


@pytest.mark.parametrize(
    ("texts", "facets"),
    [
        (["soft", "soft", "soft ", "tight", "soft", "tight"], ["Knits", "Knits", "Knits", "Knits", "Pants", "Knits"]),
        # The separator inside a text and a facet value: both rows have one joined key, so they are told apart
        # by their occurrence number (grouping by the three columns would give them one id).
        (["b\x1fKnits", "b", "b\x1fKnits"], ["Pants", "Knits\x1fPants", "Pants"]),
    ],
)
def test_review_ids_equal_the_joined_key_ids(texts: list[str], facets: list[str]) -> None:
    frame = pd.DataFrame(
        {
            schema.TEXT: pd.array(texts, dtype="string"),
            schema.FACET: pd.array(facets, dtype="string"),
            schema.LABEL: pd.array([1, 1, 1, 0, 1, 1][: len(texts)], dtype="int8"),
        },
        index=[7, 7, 3, 3, 9, 9][: len(texts)],  # a frame's index need not be unique
    )
    ids = core.review_ids(frame)
    assert ids.tolist() == _joined_key_ids(frame)
    assert ids.is_unique


def test_review_ids_and_deduplicate_hold_no_second_copy_of_the_texts() -> None:
    """The ids and the duplicate check of a million reviews held every text a second time (a joined key per row,
    a respaced key per row): 400 MB more at 1M course-like reviews. Now neither copies a text in key form."""
    words = " ".join(["soft fabric, true to size"] * 160)  # about 4 kB, whitespace already single
    texts = [f"review {i} {words}" for i in range(4000)]
    frame = pd.DataFrame(
        {
            schema.TEXT: pd.array(texts, dtype="string"),
            schema.FACET: pd.array(["Knits", "Pants"] * 2000, dtype="string"),
            schema.LABEL: pd.array([1, 0, -1, 1] * 1000, dtype="int8"),
        }
    )
    text_bytes = sum(len(t) for t in texts)
    for work in (lambda: core.review_ids(frame), lambda: core.deduplicate(frame)):
        tracemalloc.start()
        try:
            work()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < text_bytes / 4, (peak, text_bytes)
    assert schema.text_key(texts[0]) is texts[0]
    assert schema.text_key(f" {texts[0]}\n") == texts[0]


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


def test_max_rows_keeps_the_classes_balanced() -> None:
    """--max-rows after balancing takes an equal, seeded share of every class (a plain sample of the balanced
    rows left class_counts_out unbalanced: 31/34/35 of 100 here)."""
    raw = make_reviews(300, seed=3)
    _, balanced, _ = core.prepare(raw, core.PrepareConfig(min_facet_rows=1, seed=5))
    _, capped, report = core.prepare(raw, core.PrepareConfig(min_facet_rows=1, seed=5, max_rows=100))
    classes = balanced[schema.LABEL].nunique()
    assert set(report.class_counts_out.values()) == {100 // classes}
    assert report.rows_out == len(capped) == classes * (100 // classes)
    assert set(capped[schema.REVIEW_ID]) <= set(balanced[schema.REVIEW_ID])
    again = core.prepare(raw, core.PrepareConfig(min_facet_rows=1, seed=5, max_rows=100))[1]
    pd.testing.assert_frame_equal(capped, again)
    with pytest.raises(ValueError, match="--max-rows=2 is fewer than the 3 sentiment classes"):
        core.prepare(raw, core.PrepareConfig(min_facet_rows=1, max_rows=2))


def test_duplicate_texts_are_passed_on_once_and_conflicting_ones_not_at_all() -> None:
    """Issue 19: 100k rows made of 300 distinct reviews leaked test reviews into training.  Whitespace does not
    make a text new; a text with two labels is dropped (both rows), one with one label is kept once."""
    raw = make_reviews(60, seed=3)
    raw["Rating"] = [1, 3, 5] * 20  # every class present, 20 each
    copies = raw.iloc[:10].copy()
    copies["Review Text"] = "  " + copies["Review Text"].str.replace(" ", "   ") + "\n"  # the same texts, respaced
    conflicting = raw.iloc[10:12].assign(Rating=[5, 1])  # rows 10 (1★) and 11 (3★) again, with other labels
    data = pd.concat([raw, copies, copies, conflicting], ignore_index=True)
    cleaned, prepared, report = core.prepare(data, core.PrepareConfig(min_facet_rows=1, balance=False))
    assert len(cleaned) == 82  # the bias check sees every usable row, as the course computed it
    assert (report.dropped_duplicate, report.dropped_conflicting_label) == (20, 4)
    assert len(prepared) == report.rows_out == 58
    keys = prepared[schema.TEXT].map(schema.text_key)
    assert keys.is_unique and not keys.isin(raw["Review Text"].iloc[10:12]).any()
    assert prepared[schema.TEXT].tolist()[:10] == raw["Review Text"].iloc[:10].tolist()  # the first row is kept
    assert dict(core.metric_items(report))["dropped_duplicate"] == 20


def test_duplicates_that_leave_one_class_are_refused() -> None:
    """Every negative review's text is also a positive one's: dropping the conflicts leaves one class."""
    raw = make_reviews(30, seed=1).assign(Rating=5)
    raw.loc[0:4, "Rating"] = 1
    raw.loc[5:9, "Review Text"] = raw.loc[0:4, "Review Text"].to_numpy()
    with pytest.raises(ValueError, match=r"After dropping duplicate texts \(0 repeated, 10 with conflicting labels\)"):
        core.prepare(raw, CONFIG)


def test_a_mostly_empty_column_is_warned_about(small_reviews: pd.DataFrame, caplog) -> None:
    """Issue 19: a facet column 90 % empty silently dropped 90 % of the rows."""
    raw = make_reviews(300, seed=4)
    raw.loc[raw.index % 10 != 0, "Class Name"] = None
    with caplog.at_level("WARNING", logger="components.prepare_data"):
        _, _, report = core.prepare(raw, CONFIG)
    expected = (
        "--facet-column 'Class Name' of 'input' is empty in 270 of 300 rows (90%); those rows are dropped. "
        "Check the column, or choose another."
    )
    assert report.warnings == [expected] and expected in caplog.text
    assert report.dropped_missing == 270 and report.to_dict()["warnings"] == [expected]
    few = make_reviews(300, seed=4)
    few.loc[few.index % 10 == 0, "Class Name"] = None  # 10 %: no warning
    assert core.prepare(few, CONFIG)[2].warnings == []


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
    # 7 texts occur twice with the same label (none with two labels); one is negative, the smallest class.
    assert (report.dropped_duplicate, report.dropped_conflicting_label) == (7, 0)
    assert report.class_counts_out == {"negative": 2369, "neutral": 2369, "positive": 2369}


def test_course_csv_passes_every_input_rule_unchanged(reviews_csv: Path) -> None:
    """The not-text, cut-short, duplicate-column and whitespace rules raise nothing on the course CSV and
    keep exactly the rows the Clarify transform keeps (858 without text, label or facet; 2 of rare facets)."""
    _, _, report = core.prepare(core.read_reviews(str(reviews_csv)), core.PrepareConfig(group_column="Age"))
    assert (report.rows_clean, report.dropped_missing, report.dropped_missing_group) == (22626, 858, 0)
    assert report.dropped_rare_facet == 2


def test_synthetic_sample_passes(tmp_path: Path) -> None:
    from pipelines.sample_data import write_sample_csv

    report = core.validate(str(write_sample_csv(tmp_path / "sample.csv")), core.PrepareConfig())
    assert (report.rows_in, report.rows_clean) == (2000, 1932)


# --- where the file lives: missing filesystem packages, unknown schemes, unreachable hosts ------------------


@pytest.mark.parametrize(("uri", "package"), [("gs://bucket/reviews.csv", "gcsfs"), ("az://box/reviews.csv", "adlfs")])
def test_uri_without_its_filesystem_package_names_the_package(uri: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(package):
        pytest.skip(f"{package} is installed here, so {uri} does not show the missing-package error")
    with pytest.raises(ValueError, match=rf"^--data '{uri}': .*needs the {package} package.*pip install {package}"):
        core.read_reviews(uri)


def test_unknown_uri_scheme() -> None:
    with pytest.raises(ValueError, match=r"^--data 'nosuch://x/reviews\.csv' uses the unknown URI scheme 'nosuch'"):
        core.read_reviews("nosuch://x/reviews.csv")


def _closed_loopback_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_uri_says_so_with_the_reason() -> None:
    uri = f"http://127.0.0.1:{_closed_loopback_port()}/reviews.csv"
    with pytest.raises(ValueError, match=r"cannot be reached: .*Cannot connect to host 127\.0\.0\.1.*--data") as err:
        core.read_reviews(uri)
    assert "does not exist" not in str(err.value)


@pytest.fixture
def http_dir(tmp_path: Path):
    """A real HTTP server on loopback serving ``tmp_path``; yields its base URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_uri_reads_and_a_missing_one_does_not_exist(
    http_dir: str, tmp_path: Path, small_reviews: pd.DataFrame
) -> None:
    small_reviews.to_csv(tmp_path / "reviews.csv", index=False)
    assert len(core.read_reviews(f"{http_dir}/reviews.csv")) == len(small_reviews)
    with pytest.raises(ValueError, match=r"does not exist"):
        core.read_reviews(f"{http_dir}/nothing.csv")


# --- text that is not text --------------------------------------------------------------------------------


def test_numeric_text_column_names_the_flag_and_the_text_columns(small_reviews: pd.DataFrame) -> None:
    raw = small_reviews.assign(Title="A title")
    with pytest.raises(
        ValueError,
        match=r"^--text-column 'Rating' of 'input' holds int64 values, not review text \(e\.g\. .*\)\. "
        r"Columns that hold text: 'Review Text', 'Class Name', 'Title'; pass --text-column",
    ):
        core.clean_reviews(raw, core.PrepareConfig(text_column="Rating", min_facet_rows=1))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["5", "4", "12", "3.5", "nice"], r"does not hold review text: 4 of its 5 values have no letters"),
        (["\x01\x02ab", "\x03\x04cd", "good"], r"2 of its 3 values have no letters or hold control characters"),
        ([True, False, True, False, True], r"holds bool values"),
    ],
)
def test_text_column_that_is_mostly_not_text_is_rejected(values: list, message: str) -> None:
    n = len(values)
    raw = pd.DataFrame({"Review Text": values, "Rating": [1, 5] * (n // 2) + [3] * (n % 2), "Class Name": "x"})
    with pytest.raises(ValueError, match=r"^--text-column 'Review Text' .*" + message):
        core.clean_reviews(raw, CONFIG)


def test_a_few_odd_texts_are_kept(small_reviews: pd.DataFrame) -> None:
    """No false alarm: numbers or emoji in a minority of reviews are still reviews, and are kept."""
    raw = small_reviews.copy()
    raw.loc[0:4, "Review Text"] = ["10/10", "👍", "!!!", "5", "★★★★★"]
    cleaned, dropped = core.clean_reviews(raw, CONFIG)
    assert len(cleaned) == len(raw) and dropped["dropped_missing"] == 0


def test_garbage_in_a_parquet_text_column_is_rejected(tmp_path: Path) -> None:
    garbage = ["".join(chr(c) for c in range(i, i + 20)) for i in range(0, 40, 4)]
    path = tmp_path / "garbage.parquet"
    pd.DataFrame({"Review Text": garbage, "Rating": [1, 5] * 5, "Class Name": "x"}).to_parquet(path)
    with pytest.raises(ValueError, match=r"--text-column 'Review Text' .* does not hold review text"):
        core.validate(str(path), CONFIG)


# --- whitespace and the group column ----------------------------------------------------------------------


def test_facet_and_group_values_are_compared_without_surrounding_whitespace(small_reviews: pd.DataFrame) -> None:
    raw = small_reviews.assign(Age=small_reviews["Age"].astype(str))
    raw.loc[0, "Class Name"] = " Dresses"
    raw.loc[1, "Class Name"] = "Dresses\t"
    raw.loc[2, "Age"] = f" {raw.loc[2, 'Age']} "
    raw.loc[3, "Review Text"] = " \t\u00a0"
    raw.loc[4, "Class Name"] = "   "
    cleaned, dropped = core.clean_reviews(raw, core.PrepareConfig(group_column="Age", min_facet_rows=1))
    assert sorted(cleaned[schema.FACET].unique()) == ["Blouses", "Dresses", "Knits"]
    assert (
        cleaned.loc[cleaned[schema.TEXT] == raw.loc[2, "Review Text"], schema.GROUP].iloc[0]
        == raw.loc[2, "Age"].strip()
    )
    assert dropped["dropped_missing"] == 2 and len(cleaned) == len(raw) - 2


def test_rows_without_a_group_value_are_counted_apart(small_reviews: pd.DataFrame) -> None:
    raw = small_reviews.assign(Age=small_reviews["Age"].astype(object))
    raw.loc[0:2, "Age"] = None
    raw.loc[3, "Age"] = " "
    raw.loc[4, "Review Text"] = None
    raw.loc[5, ["Review Text", "Age"]] = None  # no text: counted as missing, not as missing group
    cleaned, _, report = core.prepare(raw, core.PrepareConfig(group_column="Age", min_facet_rows=1, balance=False))
    assert (report.dropped_missing, report.dropped_missing_group) == (2, 4)
    assert report.rows_clean == len(cleaned) == len(raw) - 6
    _, _, without = core.prepare(raw, core.PrepareConfig(min_facet_rows=1, balance=False))
    assert (without.dropped_missing, without.dropped_missing_group) == (2, 0)


def test_no_row_with_a_group_value_names_the_group_column(small_reviews: pd.DataFrame) -> None:
    raw = small_reviews.assign(Age=None)
    with pytest.raises(ValueError, match=r"Every row .* and a --group-column 'Age' value"):
        core.clean_reviews(raw, core.PrepareConfig(group_column="Age", min_facet_rows=1))


def test_duplicated_columns_of_a_frame_are_rejected(small_reviews: pd.DataFrame) -> None:
    raw = pd.concat([small_reviews, small_reviews[["Rating"]]], axis=1)
    with pytest.raises(ValueError, match=r"duplicated column name\(s\): 'Rating' \(2 times\)"):
        core.clean_reviews(raw, CONFIG)


# --- files: binary, cut short, duplicated header names ----------------------------------------------------

ROWS = b"nice dress,5,Dresses\nbad knit,1,Knits\n"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("garbage.csv", bytes(range(128)) * 50, r"is binary, not CSV text \(.*control character"),
        ("garbage_rows.csv", HEADER + bytes(range(32)) * 40 + b"\n", r"is binary, not CSV text"),
        ("nul.tsv", b"Review Text\tRating\tClass Name\nni\x00ce\t5\tDresses\n", r"is binary, not TSV text"),
        ("quote.csv", HEADER + ROWS + b'"it was so', r"looks cut short at line 4: it ends inside a quoted field"),
        ("quote2.csv", HEADER + ROWS + b'"it was\nso nice\n', r"looks cut short at line 5: it ends inside a quoted"),
        (
            "short.csv",
            HEADER + ROWS + b"ok,3",
            r"looks cut short at line 4: its last row has 2 of the header's 3 fields",
        ),
        ("crlf.csv", HEADER + ROWS.replace(b"\n", b"\r\n") + b"ok,3", r"looks cut short at line 4: its last row has 2"),
        ("multi.csv", HEADER + ROWS + b'"so\n""nice""\nreally",3', r"looks cut short at line 6: its last row has 2"),
        ("dup.csv", b"Review Text,Rating,Class Name,Rating\n" + ROWS, r"has duplicated column name\(s\): 'Rating' \(2"),
        (
            "dup2.tsv",
            b"a\ta\tb\tb\n1\t2\t3\t4\n",
            r"has duplicated column name\(s\): 'a' \(2 times\), 'b' \(2 times\)\. Rename",
        ),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = _write(tmp_path, name, content)
    with pytest.raises(ValueError, match=rf"^Input file '{path}' " + message) as err:
        core.read_reviews(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "content",
    [
        HEADER + ROWS + b"ok dress,3,Dresses",  # no final line break, but complete
        HEADER + ROWS + b"ok dress,3,",  # complete: the last field is empty
        HEADER + ROWS.replace(b"\n", b"\r\n"),
        HEADER + ROWS + b'"so\n""nice""\nreally",3,Knits',  # a complete multi-line last row
        b",," + HEADER + b"1,2," + ROWS,  # two unnamed columns are not duplicates
        HEADER + ROWS + b"  ",  # only blanks after the last line break
        b"\xef\xbb\xbf" + HEADER + ROWS,  # a UTF-8 byte order mark
    ],
)
def test_complete_files_without_a_final_line_break_are_read(tmp_path: Path, content: bytes) -> None:
    frame = core.read_reviews(_write(tmp_path, "reviews.csv", content))
    assert {"Review Text", "Rating", "Class Name"} <= set(frame.columns)


def test_truncated_compressed_file_is_cut_short(tmp_path: Path) -> None:
    import gzip
    import random

    rng = random.Random(1)
    body = HEADER + b"".join(f"review {rng.random()},{rng.randint(1, 5)},Dresses\n".encode() for _ in range(20000))
    packed = gzip.compress(body)
    path = _write(tmp_path, "reviews.csv.gz", packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=r"looks cut short at line \d+: Compressed file ended"):
        core.read_reviews(path)


def test_truncated_parquet_is_not_complete(tmp_path: Path, small_reviews: pd.DataFrame) -> None:
    small_reviews.to_parquet(tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    path = _write(tmp_path, "cut.parquet", data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"is not a complete Parquet file \(cut short, or not Parquet\)"):
        core.read_reviews(path)


# --- files: field separators, FIFOs -----------------------------------------------------------------------

TEXTS = ["nice dress, lovely", "bad knit, returned it", "ok skirt; fits"]


@pytest.mark.parametrize(
    ("name", "sep"),
    [("semicolon.csv", ";"), ("tab-named.csv", "\t"), ("pipe.csv", "|"), ("comma-named.tsv", ","), ("semi.tsv", ";")],
)
def test_the_field_separator_is_found_when_the_suffixs_leaves_one_column(tmp_path: Path, name: str, sep: str) -> None:
    """A semicolon file (what a spreadsheet in many locales exports) or a TSV named .csv used to fail with
    "Expected 1 fields in line 3, saw 3"; the texts hold commas and semicolons, as real reviews do."""
    rows = [sep.join(["Review Text", "Rating", "Class Name"])]
    rows += [sep.join([f'"{t}"' if sep in t else t, str(r), "Dresses"]) for t, r in zip(TEXTS, (5, 1, 3), strict=True)]
    frame = core.read_reviews(_write(tmp_path, name, ("\n".join(rows) + "\n").encode()))
    assert list(frame.columns) == ["Review Text", "Rating", "Class Name"]
    assert frame["Review Text"].tolist() == TEXTS and frame["Rating"].tolist() == [5, 1, 3]


def test_a_file_that_still_does_not_parse_names_the_separator_it_was_read_with(tmp_path: Path) -> None:
    path = _write(tmp_path, "reviews.csv", b"Review Text;Rating;Class Name\nnice;5;Dresses\nbad;1;Knits;extra;x\n")
    with pytest.raises(ValueError, match=r"read as semicolon-separated \(detected .*suffix says comma\).*line 3"):
        core.read_reviews(path)
    path = _write(tmp_path, "plain.csv", HEADER + b"nice,5,Dresses\nbad,1,Knits,extra\n")
    with pytest.raises(ValueError, match=r"read as comma-separated \(from its suffix\)"):
        core.read_reviews(path)


def test_a_fifo_is_not_a_regular_file_not_an_empty_one(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "reviews.csv"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"is not a regular file \(a named pipe \(FIFO\)\).*Save it to a file"):
        core.read_reviews(str(fifo))
