"""Read product reviews, map their columns, derive the sentiment label, clean, de-duplicate and balance them.

Pure functions on pandas frames; `prepare` is what the component and the CLI call.

Duplicates: the rows passed on to featurization hold each text once (`deduplicate`; texts compared by
`schema.text_key`, i.e. without differences in whitespace).  A text that occurs with one label is kept
once (the first row); a text that occurs with more than one label is dropped altogether, since no split can
hold it without teaching or testing a contradiction.  Both counts are in the report (`dropped_duplicate`,
`dropped_conflicting_label`).  The bias check still sees every cleaned row, as the course computed it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from components.common import options, schema
from components.prepare_data.reading import CONTROL, LETTER, check_unique_columns, read_reviews

log = logging.getLogger("components.prepare_data")

#: A column whose missing values drop more than this share of the rows gets a warning (and a report line).
DROPPED_WARN_SHARE = 0.2

_LABEL_WORDS = {"negative": -1, "neutral": 0, "positive": 1, "-1": -1, "0": 0, "1": 1}


@dataclass(frozen=True)
class PrepareConfig:
    """How to read and clean the reviews (the defaults fit the course CSV).

    Each field is one option of the step, declared once: its default, help and bounds give the
    component's, the pipeline's and `python -m pipelines run`'s (see `components.common.options`).
    """

    text_column: str = field(default="Review Text", metadata={"help": "Column with the review text."})
    rating_column: str = field(default="Rating", metadata={"help": "Column with 1–5 star ratings."})
    label_column: str = field(
        default="",
        metadata={
            "help": "Column with categorical labels (negative/neutral/positive or -1/0/1) instead of ratings; "
            "empty: use ratings."
        },
    )
    facet_column: str = field(
        default="Class Name", metadata={"help": "Column the bias check compares across (e.g. product category)."}
    )
    group_column: str = field(
        default="", metadata={"help": "Optional column for the conditional bias metric CDDL; empty: none."}
    )
    min_facet_rows: int = field(
        default=11, metadata={"help": "Facet values with fewer rows are dropped (the course: <= 10).", "min": 1}
    )
    balance: bool = field(
        default=True, metadata={"help": "Down-sample every sentiment class to the smallest (seeded)."}
    )
    max_rows: int = field(
        default=0,
        metadata={
            "help": "Seeded cap on the rows passed on after the bias check (0: no cap); with --balance an equal "
            "share per class (max_rows // classes each).",
            "min": 0,
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of every random choice (balancing, cap, split, training)."})


@dataclass
class PrepareReport:
    """What preparation did, for `summary.json` and the step's metrics."""

    source: str
    rows_in: int
    rows_clean: int
    rows_out: int
    #: Rows without review text, label or facet value (empty or whitespace-only values count as missing).
    dropped_missing: int
    #: Rows that have all three but no --group-column value (always 0 without a group column).
    dropped_missing_group: int
    #: Rows of facet values with fewer than --min-facet-rows rows.
    dropped_rare_facet: int
    rare_facet_values: list[str]
    #: Rows whose text (and label) an earlier row already has: each text is passed on once.
    dropped_duplicate: int
    #: Rows whose text occurs with more than one label: all of them are dropped.
    dropped_conflicting_label: int
    facet_values: int
    class_counts_clean: dict[str, int]
    class_counts_out: dict[str, int]
    balanced: bool
    #: --max-rows: the seeded cap on rows_out (0: none).
    max_rows: int = 0
    columns: dict[str, str | None] = field(default_factory=dict)
    #: SHA-256 of the input file's bytes: the data's lineage tag in MLflow.
    data_sha256: str = ""
    #: Warnings about the data, e.g. a column whose missing values drop many rows.
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _require_columns(df: pd.DataFrame, wanted: dict[str, str], source: str) -> None:
    missing = [f"{flag} {name!r}" for flag, name in wanted.items() if name not in df.columns]
    if missing:
        present = ", ".join(repr(c) for c in df.columns)
        raise ValueError(
            f"Input {source!r} has no column {' and no column '.join(missing)}. "
            f"Columns present: {present}. Name the right ones with those options."
        )


def ratings_to_sentiment(ratings: pd.Series, column: str) -> pd.Series:
    """Map 1–5 star ratings to sentiment −1 (1–2★), 0 (3★), +1 (4–5★); missing ratings stay missing.

    Raises:
        ValueError: a rating is not a number or not a whole number from 1 to 5.
    """
    numbers = pd.to_numeric(ratings, errors="coerce")
    bad_text = ratings[numbers.isna() & ratings.notna()]
    if len(bad_text):
        examples = ", ".join(repr(v) for v in bad_text.astype(str).unique()[:5])
        raise ValueError(
            f"Column {column!r} must hold star ratings 1–5, but {len(bad_text)} value(s) are not numbers "
            f"(e.g. {examples}). Fix the data, or pass --label-column if the labels are already categories."
        )
    present = numbers.dropna()
    bad = present[(present < 1) | (present > 5) | (present != present.round())]
    if len(bad):
        examples = ", ".join(f"{float(v):g}" for v in sorted(bad.unique())[:5])
        raise ValueError(
            f"Column {column!r} must hold whole star ratings from 1 to 5, but {len(bad)} value(s) are "
            f"outside that (e.g. {examples}). Fix the data or choose another --rating-column."
        )
    sentiment = pd.Series(pd.NA, index=ratings.index, dtype="Int8")
    sentiment[numbers <= 2] = -1
    sentiment[numbers == 3] = 0
    sentiment[numbers >= 4] = 1
    return sentiment


def labels_to_sentiment(labels: pd.Series, column: str) -> pd.Series:
    """Map categorical labels (negative/neutral/positive or −1/0/1, any case) to −1/0/+1.

    Raises:
        ValueError: a label is none of those; the message lists the unknown values.
    """
    present = labels.dropna()
    text = present.astype(str).str.strip().str.lower()
    # "1.0" from a float column means 1.
    text = text.str.replace(r"^([+-]?\d+)\.0+$", r"\1", regex=True).str.lstrip("+")
    mapped = text.map(_LABEL_WORDS)
    unknown = present[mapped.isna()]
    if len(unknown):
        values = ", ".join(repr(v) for v in sorted(unknown.astype(str).unique())[:10])
        raise ValueError(
            f"Column {column!r} has unknown label value(s): {values}. Labels must be negative/neutral/"
            "positive or -1/0/1 (any case); use --rating-column instead for 1–5 star ratings."
        )
    sentiment = pd.Series(pd.NA, index=labels.index, dtype="Int8")
    sentiment[mapped.index] = mapped.astype("int8")
    return sentiment


def review_ids(frame: pd.DataFrame) -> pd.Series:
    """A stable id per review: a hash of its text, facet value and label, plus the occurrence number.

    The same file gives the same ids on every run and every machine, and so does a re-ordered file
    (identical duplicate reviews are told apart by their order of appearance).
    """
    parts = [frame[column].astype(str) for column in (schema.TEXT, schema.FACET, schema.LABEL)]
    if any(part.str.contains("\x1f", regex=False).any() for part in parts[:2]):
        # The separator inside a text or facet value: only the joined key tells such rows apart as it always did.
        keys = parts[0] + "\x1f" + parts[1] + "\x1f" + parts[2]
        occurrence = keys.groupby(keys, sort=False).cumcount()
    else:  # the same occurrence numbers without a joined copy of every text
        columns = pd.DataFrame({i: part.to_numpy() for i, part in enumerate(parts)})
        occurrence = columns.groupby([0, 1, 2], sort=False).cumcount().to_numpy()
    rows = zip(*parts, occurrence, strict=True)
    return pd.Series(
        [hashlib.sha1(f"{t}\x1f{f}\x1f{label}\x1f{n}".encode()).hexdigest()[:16] for t, f, label, n in rows],
        index=frame.index,
        dtype="string",
    )


def _class_counts(sentiment: pd.Series) -> dict[str, int]:
    counts = sentiment.value_counts()
    return {name: int(counts.get(value, 0)) for value, name in schema.SENTIMENTS.items()}


def _stripped(values: pd.Series) -> pd.Series:
    """Values as strings without surrounding whitespace; empty ones missing."""
    text = values.astype("string").str.strip()
    return text.where(text.str.len() > 0)


def _holds_strings(values: pd.Series) -> bool:
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
    return pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)


def _text_like(values: pd.Series) -> pd.Series:
    """Whether each (string) value reads as text: it has a letter and no control characters."""
    return values.str.contains(LETTER, regex=True) & ~values.str.contains(CONTROL, regex=True)


def _present_strings(values: pd.Series, limit: int | None = None) -> pd.Series:
    """The non-missing, non-blank values as stripped strings (the first ``limit`` of them)."""
    present = values.dropna()
    if limit is not None:
        present = present.head(limit)
    text = present.astype("string").str.strip()
    return text[text.str.len() > 0]


def _examples(values: pd.Series, n: int = 3) -> str:
    shown = [str(v) if len(str(v)) <= 30 else str(v)[:29] + "…" for v in pd.unique(values)[:n]]
    return ", ".join(repr(v) for v in shown)


def _text_columns(raw: pd.DataFrame, exclude: str) -> list[str]:
    """Columns of ``raw`` whose values are mostly text (sampled), other than ``exclude``."""
    found = []
    for column in raw.columns:
        if column == exclude or not _holds_strings(raw[column]):
            continue
        sample = _present_strings(raw[column], limit=1000)
        if len(sample) and _text_like(sample).mean() >= 0.5:
            found.append(str(column))
    return found


def _check_text_column(raw: pd.DataFrame, column: str, source: str) -> None:
    """Raise when the text column holds numbers, or values that are mostly not text.

    The rule: a text column holds strings (not a numeric, boolean or date type), and at least half of its
    non-blank values have a letter and no control characters. A column with no values at all is left to
    the missing-text rule.
    """
    values = raw[column]
    if values.dropna().empty:
        return
    others = _text_columns(raw, exclude=column)
    hint = (
        f"Columns that hold text: {', '.join(repr(c) for c in others)}; pass --text-column with the one "
        "holding the reviews."
        if others
        else "No column of it holds text; check that --data is the file of reviews."
    )
    if not _holds_strings(values):
        raise ValueError(
            f"--text-column {column!r} of {source!r} holds {values.dtype} values, not review text "
            f"(e.g. {_examples(values.dropna())}). {hint}"
        )
    text = _present_strings(values)
    bad = text[~_text_like(text)]
    if len(text) and len(bad) > len(text) / 2:
        raise ValueError(
            f"--text-column {column!r} of {source!r} does not hold review text: {len(bad)} of its {len(text)} "
            f"values have no letters or hold control characters (e.g. {_examples(bad)}). {hint}"
        )


def clean_reviews(raw: pd.DataFrame, config: PrepareConfig, source: str = "input") -> tuple[pd.DataFrame, dict]:
    """Map columns, derive sentiment, drop unusable rows and rare facet values.

    Facet and group values are compared without surrounding whitespace (" Dresses" is "Dresses"); text,
    facet and group values that are empty or only whitespace count as missing.

    Returns the cleaned frame (columns `schema.PREPARED_COLUMNS`) and counts of what was dropped (see
    `PrepareReport`).

    Raises:
        ValueError: columns are missing or repeated, the text column does not hold text, labels are invalid,
            or too little data is left to learn from.
    """
    if raw.empty:
        raise ValueError(f"Input {source!r} has a header but no rows. Pass a file with reviews in it.")
    label_flag, label_col = (
        ("--label-column", config.label_column) if config.label_column else ("--rating-column", config.rating_column)
    )
    wanted = {"--text-column": config.text_column, label_flag: label_col, "--facet-column": config.facet_column}
    if config.group_column:
        wanted["--group-column"] = config.group_column
    _require_columns(raw, wanted, source)
    check_unique_columns(list(raw.columns), source)
    _check_text_column(raw, config.text_column, source)

    text = raw[config.text_column].astype("string")
    text = text.where(text.str.strip().str.len() > 0)
    if config.label_column:
        sentiment = labels_to_sentiment(raw[config.label_column], config.label_column)
        rating = pd.Series(pd.NA, index=raw.index, dtype="Int8")
    else:
        sentiment = ratings_to_sentiment(raw[config.rating_column], config.rating_column)
        rating = pd.to_numeric(raw[config.rating_column], errors="coerce").astype("Int8")

    frame = pd.DataFrame(
        {
            schema.TEXT: text,
            schema.RATING: rating,
            schema.LABEL: sentiment,
            schema.FACET: _stripped(raw[config.facet_column]),
        }
    )
    missing = frame[[schema.TEXT, schema.LABEL, schema.FACET]].isna().any(axis=1)
    missing_group = pd.Series(False, index=frame.index)
    if config.group_column:
        frame[schema.GROUP] = _stripped(raw[config.group_column])
        missing_group = frame[schema.GROUP].isna() & ~missing
    warnings = _dropped_warnings(frame, config, label_col, raw.index, source)
    frame = frame[~(missing | missing_group)]
    if frame.empty:
        group = f" and a --group-column {config.group_column!r} value" if config.group_column else ""
        raise ValueError(
            f"Every row of {source!r} was dropped: none has review text, a label and a facet value{group} "
            f"(columns {config.text_column!r}, {label_col!r}, {config.facet_column!r}). Check the column options."
        )

    sizes = frame[schema.FACET].value_counts()
    rare = sorted(str(v) for v in sizes[sizes < config.min_facet_rows].index)
    frame = frame[~frame[schema.FACET].isin(rare)]
    if frame.empty:
        raise ValueError(
            f"Every facet value of column {config.facet_column!r} has fewer than --min-facet-rows="
            f"{config.min_facet_rows} rows, so no rows are left. Lower --min-facet-rows or add data."
        )
    classes = sorted(int(v) for v in frame[schema.LABEL].unique())
    if len(classes) < 2:
        only = schema.SENTIMENTS[classes[0]]
        raise ValueError(
            f"After cleaning, {source!r} holds a single sentiment class ({only!r}, {len(frame)} rows); "
            "a classifier needs at least two. Add reviews of the other classes or check the label column."
        )
    if frame[schema.FACET].nunique() < 2:
        raise ValueError(
            f"After cleaning, facet column {config.facet_column!r} has a single value "
            f"({frame[schema.FACET].iloc[0]!r}); the bias check compares each value with the others. "
            "Choose another --facet-column or add data."
        )

    frame = frame.astype({schema.LABEL: "int8"})
    frame.insert(0, schema.REVIEW_ID, review_ids(frame))
    columns = list(schema.PREPARED_COLUMNS) + ([schema.GROUP] if config.group_column else [])
    frame = frame.reset_index(drop=True)[columns]
    return frame, {
        "dropped_missing": int(missing.sum()),
        "dropped_missing_group": int(missing_group.sum()),
        "dropped_rare_facet": int(sizes[rare].sum()),
        "rare_facet_values": rare,
        "warnings": warnings,
    }


def _dropped_warnings(
    frame: pd.DataFrame, config: PrepareConfig, label_col: str, index: pd.Index, source: str
) -> list[str]:
    """One warning per column whose missing values alone drop more than `DROPPED_WARN_SHARE` of the rows."""
    columns = {
        schema.TEXT: ("--text-column", config.text_column),
        schema.LABEL: ("--label-column" if config.label_column else "--rating-column", label_col),
        schema.FACET: ("--facet-column", config.facet_column),
    }
    if config.group_column:
        columns[schema.GROUP] = ("--group-column", config.group_column)
    found = []
    for name, (flag, column) in columns.items():
        empty = int(frame[name].isna().sum())
        if len(index) and empty / len(index) > DROPPED_WARN_SHARE:
            message = (
                f"{flag} {column!r} of {source!r} is empty in {empty} of {len(index)} rows ({empty / len(index):.0%}); "
                "those rows are dropped. Check the column, or choose another."
            )
            log.warning(message)
            found.append(message)
    return found


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each text once (see the module docstring): the first row of a text with one label; no row of a text
    with several labels.  Returns the rows kept (in order) and the counts dropped."""
    keys = frame[schema.TEXT].map(schema.text_key)
    labels_per_text = frame.groupby(keys, sort=False)[schema.LABEL].transform("nunique")
    conflicting = labels_per_text > 1
    duplicate = keys.duplicated() & ~conflicting
    kept = frame[~(conflicting | duplicate)].reset_index(drop=True)
    return kept, {"dropped_duplicate": int(duplicate.sum()), "dropped_conflicting_label": int(conflicting.sum())}


def balance_classes(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Down-sample every sentiment class to the size of the smallest one (seeded), keeping row order."""
    smallest = int(frame[schema.LABEL].value_counts().min())
    sample = frame.groupby(schema.LABEL, group_keys=False).sample(n=smallest, random_state=seed)
    return frame.loc[sample.index.sort_values()].reset_index(drop=True)


def cap_rows(frame: pd.DataFrame, max_rows: int, seed: int, balanced: bool = False) -> pd.DataFrame:
    """A seeded random sample of at most ``max_rows`` rows (0: all), in their original order.

    ``balanced``: ``frame``'s classes are balanced and stay so: every class gives the same number of rows,
    ``max_rows`` // classes (so up to classes - 1 rows fewer than ``max_rows``); a plain sample of the whole would
    leave them unbalanced.

    Raises:
        ValueError: ``balanced`` and ``max_rows`` below the number of classes.
    """
    if not max_rows or len(frame) <= max_rows:
        return frame
    if not balanced:
        return frame.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)
    classes = int(frame[schema.LABEL].nunique())
    per_class = max_rows // classes
    if per_class < 1:
        raise ValueError(
            f"--max-rows={max_rows} is fewer than the {classes} sentiment classes balancing keeps equal; "
            "raise --max-rows or pass --no-balance."
        )
    sample = frame.groupby(schema.LABEL, group_keys=False).sample(n=per_class, random_state=seed)
    return frame.loc[sample.index.sort_values()].reset_index(drop=True)


def prepare(
    raw: pd.DataFrame, config: PrepareConfig, source: str = "input"
) -> tuple[pd.DataFrame, pd.DataFrame, PrepareReport]:
    """Clean, then balance and cap: returns (cleaned, prepared, report).

    ``cleaned`` is every usable row (what the bias check sees); ``prepared`` is what featurization gets.
    """
    options.check(config)
    cleaned, dropped = clean_reviews(raw, config, source)
    unique, duplicates = deduplicate(cleaned)
    if unique[schema.LABEL].nunique() < 2:
        raise ValueError(
            f"After dropping duplicate texts ({duplicates['dropped_duplicate']} repeated, "
            f"{duplicates['dropped_conflicting_label']} with conflicting labels), {source!r} holds a single "
            f"sentiment class ({len(unique)} rows); a classifier needs at least two distinct reviews of two classes."
        )
    prepared = balance_classes(unique, config.seed) if config.balance else unique
    prepared = cap_rows(prepared, config.max_rows, config.seed, balanced=config.balance)
    if prepared[schema.LABEL].nunique() < 2:
        raise ValueError(f"--max-rows={config.max_rows} leaves a single sentiment class; raise --max-rows.")
    report = PrepareReport(
        source=source,
        rows_in=len(raw),
        rows_clean=len(cleaned),
        rows_out=len(prepared),
        facet_values=int(cleaned[schema.FACET].nunique()),
        class_counts_clean=_class_counts(cleaned[schema.LABEL]),
        class_counts_out=_class_counts(prepared[schema.LABEL]),
        balanced=config.balance,
        max_rows=config.max_rows,
        columns={
            "text": config.text_column,
            "rating": None if config.label_column else config.rating_column,
            "label": config.label_column or None,
            "facet": config.facet_column,
            "group": config.group_column or None,
        },
        **dropped,
        **duplicates,
    )
    return cleaned, prepared, report


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a frame as Parquet with the project's schema."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def file_sha256(path: str, block: int = 1 << 20) -> str:
    """SHA-256 of a local file or fsspec URI, read in blocks."""
    import fsspec

    digest = hashlib.sha256()
    with fsspec.open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def run(
    data: str, config: PrepareConfig, cleaned_path: str, prepared_path: str, report_path: str | None = None
) -> PrepareReport:
    """Read ``data``, prepare it and write both Parquet outputs (and the report as JSON)."""
    cleaned, prepared, report = prepare(read_reviews(data), config, source=data)
    report.data_sha256 = file_sha256(data)
    write_parquet(cleaned, cleaned_path)
    write_parquet(prepared, prepared_path)
    if report_path:
        Path(report_path).write_text(json.dumps(report.to_dict(), indent=2))
    return report


def validate(data: str, config: PrepareConfig) -> PrepareReport:
    """Everything `run` checks, writing nothing: what entry points call before they start."""
    return prepare(read_reviews(data), config, source=data)[2]


def metric_items(report: PrepareReport) -> Sequence[tuple[str, float]]:
    """Headline numbers for the step's KFP Metrics."""
    items = [
        ("rows_in", report.rows_in),
        ("rows_clean", report.rows_clean),
        ("dropped_duplicate", report.dropped_duplicate),
        ("dropped_conflicting_label", report.dropped_conflicting_label),
        ("rows_out", report.rows_out),
        ("facet_values", report.facet_values),
    ]
    items += [(f"class_{name}", n) for name, n in report.class_counts_out.items()]
    return items
