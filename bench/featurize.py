"""Featurize speed on the real course CSV: our step vs. the course's tokenization and a raw batched call.

Texts: `Review Text` of the course CSV ($REVIEWS_CSV, default ../shared/data/...), missing ones dropped
(22,641 reviews).  Every figure is the median of ``--repeat`` runs, in reviews per second.

- ours: `components.featurize.core` on the prepared Parquet - read, validate, tokenize (Rust fast
  tokenizer, batched and parallel), split, build the Arrow table and write the features Parquet.
- course (baseline): the slow Python tokenizer (`BertTokenizerLegacy` in transformers 5) called per
  review in a pandas `apply`, padding every review to 128 tokens and turning the tensors back into
  lists, as the course's processing script did.
- raw batch: one batched call of the fast tokenizer, ``tokenizer(texts, max_length=128, truncation=True)``,
  nothing written.

``identical`` says whether our (unpadded) ids equal the course's ids with the padding removed and the
reference per-review call's ids, for every review.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import pandas as pd

from bench._util import median_seconds, result

_DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "womens_clothing_ecommerce_reviews.csv"


def course_csv() -> Path:
    """The course CSV: $REVIEWS_CSV, else ../shared/data/ beside the project."""
    path = Path(os.environ.get("REVIEWS_CSV") or _DEFAULT_CSV)
    if not path.is_file():
        raise SystemExit(f"error: the course CSV is not at {path}; set REVIEWS_CSV to its path")
    return path


def prepared_reviews(csv: Path, rows: int | None) -> pd.DataFrame:
    """The CSV in prepare_data's schema (texts as they are; ids from the row number)."""
    raw = pd.read_csv(csv).dropna(subset=["Review Text"])
    if rows:
        raw = raw.head(rows)
    stars = raw["Rating"].astype(int)
    return pd.DataFrame(
        {
            "review_id": [hashlib.sha1(str(i).encode()).hexdigest()[:16] for i in raw.index],
            "review_body": raw["Review Text"].astype(str).to_numpy(),
            "star_rating": stars.to_numpy(),
            "sentiment": stars.map(lambda s: -1 if s <= 2 else (0 if s == 3 else 1)).astype("int8").to_numpy(),
            "product_category": raw["Class Name"].fillna("unknown").to_numpy(),
        }
    )


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench featurize")
    parser.add_argument("--rows", type=int, default=0, help="first N reviews only (0: all)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--course-repeat", type=int, default=3)
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from transformers import BertTokenizerLegacy

    from components.common import modeling
    from components.featurize import core

    frame = prepared_reviews(course_csv(), args.rows or None)
    texts = frame["review_body"].tolist()
    n = len(texts)
    config = core.FeaturizeConfig(max_seq_length=args.max_seq_length)
    tokenizer = core.load_tokenizer(config.base_model)
    legacy = BertTokenizerLegacy.from_pretrained(modeling.bundled_model_path())
    length = args.max_seq_length

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "reviews.parquet", Path(tmp) / "features.parquet"
        frame.to_parquet(source, index=False)

        def ours() -> list[list[int]]:
            table, _ = core.featurize(core.read_reviews(source), tokenizer, config)
            core.write_features(table, target)
            return table["input_ids"].to_pylist()

        def raw_batch() -> list[list[int]]:
            return tokenizer(texts, max_length=length, truncation=True)["input_ids"]

        def course() -> list[list[int]]:
            df = pd.DataFrame({"review_body": texts})
            df["input_ids"] = df["review_body"].apply(
                lambda text: legacy(
                    text, max_length=length, truncation=True, padding="max_length", return_tensors="pt"
                )["input_ids"][0].tolist()
            )
            return df["input_ids"].tolist()

        ours_s, ours_ids = median_seconds(ours, args.repeat)
        raw_s, raw_ids = median_seconds(raw_batch, args.repeat)
        course_s, course_ids = median_seconds(course, args.course_repeat)
        features_mb = target.stat().st_size / 1e6

    pad = legacy.pad_token_id
    unpadded = [ids[: len(ids) - next((i for i, t in enumerate(reversed(ids)) if t != pad), 0)] for ids in course_ids]
    reference = [tokenizer(t, max_length=length, truncation=True)["input_ids"] for t in texts]
    identical = ours_ids == reference == raw_ids == unpadded
    return result(
        "featurize",
        n / ours_s,
        n / course_s,
        "reviews/s",
        rows=n,
        max_seq_length=length,
        seconds=round(ours_s, 3),
        course_seconds=round(course_s, 2),
        course_tokenizer=type(legacy).__name__,
        raw_batch_rows_per_s=round(n / raw_s, 1),
        ratio_vs_raw_batch=round(raw_s / ours_s, 2),
        identical=identical,
        features_parquet_mb=round(features_mb, 2),
        padded_tokens_course=n * length,
        tokens_ours=sum(len(i) for i in ours_ids),
        cpu_count=os.cpu_count(),
    )
