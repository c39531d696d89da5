"""bench scale's own parts: the synthetic reviews follow the CSV they are drawn from and read as the course CSV
reads, and the growth-exponent arithmetic; one slow run of the whole benchmark on two tiny sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import scale

#: Words per review of the course-like file, with how many of its rows have each (None: no text).
_WORDS = {2: 60, 7: 90, 25: 30, 60: 15, None: 5}
_CLASSES = {"Dresses": 100, "Knits": 60, "Blouses": 40}


def _course_like(path: Path) -> Path:
    """A small CSV in the course's layout (an unnamed index column first) with known distributions."""
    rng = np.random.default_rng(0)
    counts = [n for n, rows in _WORDS.items() for _ in range(rows)]
    vocabulary = ["fits", "lovely,", "fabric", "small", "true", "to", "size.", "returned", "soft", "colour!"]
    texts = [None if n is None else " ".join(rng.choice(vocabulary, size=n)) for n in counts]
    classes = [c for c, rows in _CLASSES.items() for _ in range(rows)]
    frame = pd.DataFrame(
        {
            "Clothing ID": rng.integers(1, 1200, len(texts)),
            "Age": rng.integers(18, 90, len(texts)),
            "Title": ["Nice"] * len(texts),
            "Review Text": texts,
            "Rating": [1 + i % 5 for i in range(len(texts))],
            "Recommended IND": [i % 2 for i in range(len(texts))],
            "Class Name": classes,
        }
    )
    frame.to_csv(path)  # the index as the course CSV has it: a column with an empty name
    return path


def test_synthetic_reviews_follow_the_course_csv_and_read_as_it_does(tmp_path: Path) -> None:
    from components.prepare_data.reading import read_reviews

    course_csv = _course_like(tmp_path / "course.csv")
    profile = scale.course_profile(course_csv)
    out = tmp_path / "synthetic.csv"
    words = scale.write_reviews(out, 30_000, profile, seed=1, chunk_rows=7_000)

    course, synthetic = read_reviews(str(course_csv)), read_reviews(str(out))  # prepare's reader
    assert list(synthetic.columns) == list(course.columns)
    assert synthetic[course.columns[0]].tolist() == list(range(30_000))
    assert synthetic.dtypes.to_dict() == course.dtypes.to_dict()
    text = synthetic["Review Text"]
    found = text.dropna().str.split().str.len()
    assert found.tolist() == words.tolist()
    total = sum(_WORDS.values())
    assert text.isna().mean() == pytest.approx(_WORDS[None] / total, abs=0.01)
    shares = found.value_counts(normalize=True) * (1 - text.isna().mean())
    for n, rows in _WORDS.items():
        if n is not None:
            assert shares[n] == pytest.approx(rows / total, abs=0.01), n
    assert set(found) == {n for n in _WORDS if n is not None}
    classes = synthetic["Class Name"].value_counts(normalize=True)
    for name, rows in _CLASSES.items():
        assert classes[name] == pytest.approx(rows / total, abs=0.01), name
    assert synthetic["Rating"].value_counts(normalize=True).sort_index().tolist() == pytest.approx([0.2] * 5, abs=0.01)
    # Each row keeps its course row's columns together (here: Title is always "Nice", ratings 1-5 as drawn).
    assert set(synthetic["Title"]) == {"Nice"}
    # Every word comes from the course's texts.
    vocabulary = {w for t in course["Review Text"].dropna() for w in t.split()}
    assert {w for t in text.dropna().head(500) for w in t.split()} <= vocabulary


def test_the_same_seed_writes_the_same_file(tmp_path: Path) -> None:
    profile = scale.course_profile(_course_like(tmp_path / "course.csv"))
    scale.write_reviews(tmp_path / "a.csv", 1000, profile, seed=3, chunk_rows=300)
    scale.write_reviews(tmp_path / "b.csv", 1000, profile, seed=3, chunk_rows=300)
    scale.write_reviews(tmp_path / "c.csv", 1000, profile, seed=4, chunk_rows=300)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_growth_exponents() -> None:
    assert scale.growth_exponent(100_000, 10.0, 1_000_000, 100.0) == pytest.approx(1.0)
    assert scale.growth_exponent(100_000, 10.0, 1_000_000, 1000.0) == pytest.approx(2.0)
    assert scale.growth_exponent(100_000, 10.0, 1_000_000, 10.0) == 0.0
    assert scale.exponents([1, 2, 4], [1.0, 2.0, 8.0]) == {"1->2": 1.0, "2->4": 2.0, "1->4": 1.5}
    assert scale.exponents([10, 1000], [1.0, 10.0]) == {"10->1000": 0.5}


@pytest.mark.parametrize("sizes", ["100000", "300000,100000", "100,100", "0,10", "1e5,1e6"])
def test_sizes_must_be_two_or_more_increasing_counts(sizes: str) -> None:
    with pytest.raises(SystemExit, match="--sizes"):
        scale.main(["--sizes", sizes])


@pytest.mark.slow  # five step processes per size (the tokenizer, Feast): about a minute on 2 cores
def test_the_benchmark_runs_every_step_on_every_size(tmp_path: Path) -> None:
    course_csv = _course_like(tmp_path / "course.csv")
    out = scale.main(["--sizes", "400,800", "--csv", str(course_csv), "--workdir", str(tmp_path / "work")])
    assert out["name"] == "scale" and out["baseline"] == scale.EXPONENT_GOAL and out["balance"] is False
    assert [m["reviews"] for m in out["measured"]] == [400, 800]
    for measured in out["measured"]:
        steps = measured["steps"]
        assert list(steps) == list(scale.STEPS)
        assert steps["check"]["rows"] == steps["prepare"]["rows"] == measured["reviews"]
        assert steps["bias"]["rows"] == steps["prepare"]["rows_clean"]
        assert steps["featurize"]["rows"] == steps["ingest"]["rows"] == steps["prepare"]["rows_out"]
        assert all(s["peak_rss_mb"] > 50 and s["seconds"] > 0 for s in steps.values())
    assert set(out["exponents"]) == {*scale.STEPS, "total", "total_process", "total_with_check"}
    assert out["value"] == out["exponents"]["total"]["400->800"]
