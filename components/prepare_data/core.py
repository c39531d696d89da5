"""Read product reviews, map their columns, derive the sentiment label, clean and balance them.

Pure functions on pandas frames; `prepare` is what the component and the CLI call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from components.common import schema

#: File suffixes we read, with the reader each one gets.
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz", ".zst")
_LABEL_WORDS = {"negative": -1, "neutral": 0, "positive": 1, "-1": -1, "0": 0, "1": 1}


@dataclass(frozen=True)
class PrepareConfig:
    """How to read and clean the reviews (the defaults fit the course CSV)."""

    text_column: str = "Review Text"
    rating_column: str = "Rating"
    facet_column: str = "Class Name"
    #: Optional column that groups reviews for the conditional bias metric CDDL.
    group_column: str | None = None
    #: Set to use an already-categorical label (negative/neutral/positive or -1/0/1) instead of ratings.
    label_column: str | None = None
    #: Facet values with fewer rows than this are dropped (the course dropped values with <= 10 rows).
    min_facet_rows: int = 11
    balance: bool = True
    max_rows: int | None = None
    seed: int = 42


@dataclass
class PrepareReport:
    """What preparation did, for `summary.json` and the step's metrics."""

    source: str
    rows_in: int
    rows_clean: int
    rows_out: int
    dropped_missing: int
    dropped_rare_facet: int
    rare_facet_values: list[str]
    facet_values: int
    class_counts_clean: dict[str, int]
    class_counts_out: dict[str, int]
    balanced: bool
    columns: dict[str, str | None] = field(default_factory=dict)
    #: SHA-256 of the input file's bytes: the data's lineage tag in MLflow.
    data_sha256: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def detect_format(path: str) -> str:
    """Return ``csv``, ``tsv`` or ``parquet`` from the file name, or raise with the fix."""
    name = PurePosixPath(path.split("?", 1)[0]).name.lower()
    for comp in _COMPRESSIONS:
        if name.endswith(comp):
            name = name[: -len(comp)]
    suffix = PurePosixPath(name).suffix
    if suffix not in _FORMATS:
        raise ValueError(
            f"Cannot tell the format of input {path!r} from its suffix {suffix or '(none)'!r}. "
            "Use a file ending in .csv, .tsv or .parquet (optionally compressed, e.g. .csv.gz)."
        )
    return _FORMATS[suffix]


def read_reviews(path: str) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file from a local path or an fsspec URI (s3://, gs://, http://...).

    Raises:
        ValueError: the file is missing, empty, undecodable or not a table.
    """
    import fsspec

    fmt = detect_format(path)
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        raise ValueError(
            f"Input file {path!r} does not exist. Pass --data with the path of a CSV, TSV or Parquet file of reviews."
        )
    if fs.isdir(fs_path):
        raise ValueError(f"Input {path!r} is a directory. Pass --data with the path of one file.")
    if fs.size(fs_path) == 0:
        raise ValueError(f"Input file {path!r} is empty (0 bytes). Pass a file with a header row and reviews.")
    try:
        if fmt == "parquet":
            with fs.open(fs_path, "rb") as fh:
                return pd.read_parquet(fh)
        with fsspec.open(path, "rt", encoding="utf-8", compression="infer", newline="") as fh:
            return pd.read_csv(fh, sep="\t" if fmt == "tsv" else ",", low_memory=False)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"Input file {path!r} is not valid UTF-8 text (byte {err.start}: {err.reason}). "
            "Re-save it as UTF-8 CSV/TSV, or pass a Parquet file."
        ) from err
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"Input file {path!r} has no columns. Pass a file with a header row and reviews.") from err
    except pd.errors.ParserError as err:
        raise ValueError(f"Input file {path!r} is not a well-formed {fmt.upper()} file: {err}") from err
    except (OSError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise ValueError(f"Input file {path!r} does not exist.") from err
        raise ValueError(f"Cannot read input file {path!r} as {fmt.upper()}: {err}") from err


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
    keys = (
        frame[schema.TEXT].astype(str)
        + "\x1f"
        + frame[schema.FACET].astype(str)
        + "\x1f"
        + frame[schema.LABEL].astype(str)
    )
    occurrence = keys.groupby(keys).cumcount()
    return pd.Series(
        [hashlib.sha1(f"{k}\x1f{n}".encode()).hexdigest()[:16] for k, n in zip(keys, occurrence, strict=True)],
        index=frame.index,
        dtype="string",
    )


def _class_counts(sentiment: pd.Series) -> dict[str, int]:
    counts = sentiment.value_counts()
    return {name: int(counts.get(value, 0)) for value, name in schema.SENTIMENTS.items()}


def clean_reviews(raw: pd.DataFrame, config: PrepareConfig, source: str = "input") -> tuple[pd.DataFrame, dict]:
    """Map columns, derive sentiment, drop unusable rows and rare facet values.

    Returns the cleaned frame (columns `schema.PREPARED_COLUMNS`) and counts of what was dropped.

    Raises:
        ValueError: columns are missing, labels are invalid, or too little data is left to learn from.
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

    text = raw[config.text_column].astype("string")
    text = text.where(text.str.strip().str.len() > 0)
    facet = raw[config.facet_column].astype("string")
    facet = facet.where(facet.str.strip().str.len() > 0)
    if config.label_column:
        sentiment = labels_to_sentiment(raw[config.label_column], config.label_column)
        rating = pd.Series(pd.NA, index=raw.index, dtype="Int8")
    else:
        sentiment = ratings_to_sentiment(raw[config.rating_column], config.rating_column)
        rating = pd.to_numeric(raw[config.rating_column], errors="coerce").astype("Int8")

    frame = pd.DataFrame({schema.TEXT: text, schema.RATING: rating, schema.LABEL: sentiment, schema.FACET: facet})
    if config.group_column:
        frame[schema.GROUP] = raw[config.group_column].astype("string")
    frame = frame.dropna(subset=[c for c in (schema.TEXT, schema.LABEL, schema.FACET, schema.GROUP) if c in frame])
    dropped_missing = len(raw) - len(frame)
    if frame.empty:
        raise ValueError(
            f"Every row of {source!r} was dropped: none has review text, a label and a facet value "
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
        "dropped_missing": dropped_missing,
        "dropped_rare_facet": int(sizes[rare].sum()),
        "rare_facet_values": rare,
    }


def balance_classes(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Down-sample every sentiment class to the size of the smallest one (seeded), keeping row order."""
    smallest = int(frame[schema.LABEL].value_counts().min())
    sample = frame.groupby(schema.LABEL, group_keys=False).sample(n=smallest, random_state=seed)
    return frame.loc[sample.index.sort_values()].reset_index(drop=True)


def cap_rows(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """A seeded random sample of at most ``max_rows`` rows, in their original order."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    if max_rows < 1:
        raise ValueError(f"--max-rows must be at least 1, got {max_rows}.")
    return frame.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)


def prepare(
    raw: pd.DataFrame, config: PrepareConfig, source: str = "input"
) -> tuple[pd.DataFrame, pd.DataFrame, PrepareReport]:
    """Clean, then balance and cap: returns (cleaned, prepared, report).

    ``cleaned`` is every usable row (what the bias check sees); ``prepared`` is what featurization gets.
    """
    if config.min_facet_rows < 1:
        raise ValueError(f"--min-facet-rows must be at least 1, got {config.min_facet_rows}.")
    if config.max_rows is not None and config.max_rows < 1:
        raise ValueError(f"--max-rows must be at least 1, got {config.max_rows}.")
    cleaned, dropped = clean_reviews(raw, config, source)
    prepared = balance_classes(cleaned, config.seed) if config.balance else cleaned
    prepared = cap_rows(prepared, config.max_rows, config.seed)
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
        columns={
            "text": config.text_column,
            "rating": None if config.label_column else config.rating_column,
            "label": config.label_column,
            "facet": config.facet_column,
            "group": config.group_column,
        },
        **dropped,
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
        ("rows_out", report.rows_out),
        ("facet_values", report.facet_values),
    ]
    items += [(f"class_{name}", n) for name, n in report.class_counts_out.items()]
    return items
