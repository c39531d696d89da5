"""Read product reviews, map their columns, derive the sentiment label, clean and balance them.

Pure functions on pandas frames; `prepare` is what the component and the CLI call.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import pandas as pd

from components.common import options, schema

#: File suffixes we read, with the reader each one gets.
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz", ".zst")
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
        metadata={"help": "Seeded cap on the rows passed on after the bias check (0: no cap).", "min": 0},
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


#: Characters no review text holds: C0 controls other than tab, newline and carriage return, and DEL.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CONTROL_RE = re.compile(_CONTROL)
#: A letter of any script (a word character that is neither a digit nor the underscore).
_LETTER = r"[^\W\d_]"
#: How much of a text file's start is checked for binary content and parsed for the header.
_HEAD_CHARS = 1 << 16
#: How much of its end is kept to check that the last row is complete.
_TAIL_CHARS = 1 << 16


def _one_line(err: object, limit: int = 300) -> str:
    """An exception's text on one line (library messages often end in or contain newlines)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _NotText(Exception):
    """Raised from inside the CSV reader when the file's first characters are binary, not text."""


class _TextTap:
    """A text file handle for `pd.read_csv` that notes what passes through it.

    It keeps the first characters (the header, and a check that the file is text at all), the last ones
    and the number of newlines, so that a file cut short can be told by the line where it ends.
    """

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self.head = ""
        self.tail = ""
        self.newlines = 0
        self.chars = 0

    def read(self, size: int = -1) -> str:
        chunk = self._handle.read(size)
        if len(self.head) < _HEAD_CHARS:
            self.head += chunk[: _HEAD_CHARS - len(self.head)]
            self._check_text()
        self.tail = (self.tail + chunk)[-_TAIL_CHARS:]
        self.newlines += chunk.count("\n")
        self.chars += len(chunk)
        return chunk

    def _check_text(self) -> None:
        controls = _CONTROL_RE.findall(self.head)
        if "\x00" in controls or len(controls) > max(8, len(self.head) // 100):
            raise _NotText(f"{len(controls)} control character(s) in its first {len(self.head)} characters")

    @property
    def whole(self) -> bool:
        """Whether `tail` holds the whole file."""
        return self.chars <= _TAIL_CHARS

    @property
    def last_line(self) -> int:
        """The (1-based) line the text read so far ends on."""
        return self.newlines + (0 if self.tail.endswith(("\n", "\r")) else 1)


def _first_record(text: str, sep: str) -> list[str]:
    """The first non-blank record of CSV/TSV text (the header), as the csv module splits it."""
    for record in csv.reader(io.StringIO(text), delimiter=sep):
        if any(field.strip() for field in record):
            return [field.lstrip("\ufeff") if i == 0 else field for i, field in enumerate(record)]
    return []


def _last_record(tap: _TextTap, sep: str) -> list[str] | None:
    """The fields of the file's last record, found in the kept tail; None when the tail cannot tell.

    The reader has seen the file end outside quotes, so a line starts a record exactly when the text from
    it to the end holds an even number of quote characters (an escaped quote counts two).
    """
    lines = tap.tail.split("\n")
    quotes = 0
    for start in range(len(lines) - 1, -1, -1):
        quotes += lines[start].count('"')
        if quotes % 2 == 0 and (start > 0 or tap.whole):
            return next(csv.reader(io.StringIO("\n".join(lines[start:])), delimiter=sep), [])
    return None


def _check_complete(tap: _TextTap, header: list[str], sep: str, path: str) -> None:
    """Raise when the last line ends mid-row: it has fewer fields than the header and no line break."""
    if not header or tap.tail.endswith(("\n", "\r")):
        return
    last = _last_record(tap, sep)
    if last is not None and any(value.strip() for value in last) and len(last) < len(header):
        raise ValueError(
            f"Input file {path!r} looks cut short at line {tap.last_line}: its last row has {len(last)} of the "
            f"header's {len(header)} fields and no line break (a truncated download?). "
            "Download or export the file again."
        )


def _check_unique_columns(names: Sequence[object], path: str) -> None:
    """Raise when column names repeat (the CSV reader would silently rename the second 'Rating' 'Rating.1')."""
    counts = Counter(str(n) for n in names if str(n).strip())
    repeated = [name for name, n in counts.items() if n > 1]
    if repeated:
        listed = ", ".join(f"{name!r} ({counts[name]} times)" for name in repeated)
        raise ValueError(
            f"Input file {path!r} has duplicated column name(s): {listed}. Rename the columns in the header "
            "so that each name occurs once, then pass the right one to the column options."
        )


def _open_filesystem(path: str) -> tuple[object, str]:
    """`fsspec.core.url_to_fs`, with the errors of an unknown scheme or a missing package explained."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as err:
        protocol = path.split("://", 1)[0]
        package = _missing_package(err, protocol)
        if package:
            need, fix = f"the {package} package, which is not installed", f"pip install {package}"
        else:
            need, fix = f"a package that is not installed ({_one_line(err)})", "install it"
        raise ValueError(
            f"--data {path!r}: reading {protocol}:// URIs needs {need}. "
            f"Install it ({fix}) or copy the file to a local path."
        ) from err
    except ValueError as err:
        if "Protocol not known" not in str(err):
            raise ValueError(f"--data {path!r} is not a path or URI that can be opened: {_one_line(err)}") from err
        protocol = path.split("://", 1)[0]
        raise ValueError(
            f"--data {path!r} uses the unknown URI scheme {protocol!r}. Pass a local path or an fsspec URI "
            "(s3://, gs://, az://, http(s)://, ...)."
        ) from err
    except OSError as err:
        raise ValueError(f"--data {path!r} cannot be opened: {_one_line(err)}") from err


def _missing_package(err: ImportError, protocol: str) -> str:
    """The package whose absence ``err`` reports, from the import that failed or fsspec's registry."""
    cause = err.__cause__ or err.__context__
    if isinstance(cause, ImportError) and cause.name:
        return cause.name.split(".")[0]
    if err.name:
        return err.name.split(".")[0]
    from fsspec.registry import known_implementations

    module = known_implementations.get(protocol, {}).get("class", "").split(".")[0]
    return module if module and module != "fsspec" else ""


def _file_info(fs: object, fs_path: str, path: str) -> dict:
    """The file's fsspec info; raises when it does not exist or cannot be reached (with the reason)."""
    try:
        return fs.info(fs_path)  # type: ignore[attr-defined]
    except FileNotFoundError as err:
        # fsspec's HTTP filesystem reports every failure as FileNotFoundError; the cause tells them apart.
        cause = err.__cause__
        status = getattr(cause, "status", None)
        if cause is None or isinstance(cause, FileNotFoundError) or status in (404, 410):
            raise ValueError(
                f"Input file {path!r} does not exist. "
                "Pass --data with the path of a CSV, TSV or Parquet file of reviews."
            ) from err
        if status:
            reason = f"the server answered HTTP {status} {getattr(cause, 'message', '')}".strip()
            raise ValueError(f"Input file {path!r} cannot be read: {reason}. Check the --data URI.") from err
        raise _unreachable(path, cause) from err
    except PermissionError as err:
        raise ValueError(
            f"Input file {path!r} cannot be read: permission denied ({_one_line(err)}). "
            "Check --data and the file's permissions or credentials."
        ) from err
    except Exception as err:  # any filesystem's network or credential errors
        raise _unreachable(path, err) from err


def _unreachable(path: str, cause: BaseException) -> ValueError:
    return ValueError(
        f"Input file {path!r} cannot be reached: {type(cause).__name__}: {_one_line(cause)}. "
        "Check the --data URI, the network and the credentials, or copy the file to a local path."
    )


def read_reviews(path: str) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file from a local path or an fsspec URI (s3://, gs://, http://...).

    Raises:
        ValueError: the URI's filesystem package is missing; the file is missing, unreachable, empty,
            binary, undecodable, cut short, not a table, or repeats a column name.
    """
    import fsspec

    fmt = detect_format(path)
    fs, fs_path = _open_filesystem(path)
    info = _file_info(fs, fs_path, path)
    if info.get("type") == "directory":
        raise ValueError(f"Input {path!r} is a directory. Pass --data with the path of one file.")
    if info.get("size") == 0:
        raise ValueError(f"Input file {path!r} is empty (0 bytes). Pass a file with a header row and reviews.")
    sep = "\t" if fmt == "tsv" else ","
    tap: _TextTap | None = None
    try:
        if fmt == "parquet":
            with fs.open(fs_path, "rb") as pf:  # type: ignore[attr-defined]
                frame = pd.read_parquet(pf)
        else:
            with fsspec.open(path, "rt", encoding="utf-8", compression="infer", newline="") as fh:
                tap = _TextTap(fh)
                frame = pd.read_csv(tap, sep=sep, low_memory=False)
    except _NotText as err:
        raise ValueError(
            f"Input file {path!r} is binary, not {fmt.upper()} text ({err}). Pass --data with a CSV, TSV or "
            "Parquet file of reviews (UTF-16 text: re-save it as UTF-8)."
        ) from err
    except UnicodeDecodeError as err:
        raise ValueError(
            f"Input file {path!r} is not valid UTF-8 text (byte {err.start}: {err.reason}). "
            "Re-save it as UTF-8 CSV/TSV, or pass a Parquet file."
        ) from err
    except EOFError as err:  # a compressed stream that stops early
        line = f" at line {tap.last_line}" if tap else ""
        raise ValueError(
            f"Input file {path!r} looks cut short{line}: {_one_line(err)}. Download or export the file again."
        ) from err
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"Input file {path!r} has no columns. Pass a file with a header row and reviews.") from err
    except pd.errors.ParserError as err:
        if tap is not None and "EOF inside string" in str(err):
            raise ValueError(
                f"Input file {path!r} looks cut short at line {tap.last_line}: it ends inside a quoted field "
                "(a truncated download, or a quote that is never closed). Download or export the file again."
            ) from err
        raise ValueError(f"Input file {path!r} is not a well-formed {fmt.upper()} file: {_one_line(err)}") from err
    except (OSError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise ValueError(f"Input file {path!r} does not exist.") from err
        if fmt == "parquet" and "magic bytes" in str(err).lower():
            raise ValueError(
                f"Input file {path!r} is not a complete Parquet file (cut short, or not Parquet): "
                f"{_one_line(err)}. Download or export the file again."
            ) from err
        raise ValueError(f"Cannot read input file {path!r} as {fmt.upper()}: {_one_line(err)}") from err
    if tap is None:
        _check_unique_columns(list(frame.columns), path)
        return frame
    header = _first_record(tap.head, sep)
    _check_unique_columns(header or list(frame.columns), path)
    _check_complete(tap, header, sep, path)
    return frame


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
    return values.str.contains(_LETTER, regex=True) & ~values.str.contains(_CONTROL, regex=True)


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
    _check_unique_columns(list(raw.columns), source)
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
    }


def balance_classes(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Down-sample every sentiment class to the size of the smallest one (seeded), keeping row order."""
    smallest = int(frame[schema.LABEL].value_counts().min())
    sample = frame.groupby(schema.LABEL, group_keys=False).sample(n=smallest, random_state=seed)
    return frame.loc[sample.index.sort_values()].reset_index(drop=True)


def cap_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """A seeded random sample of at most ``max_rows`` rows (0: all), in their original order."""
    if not max_rows or len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)


def prepare(
    raw: pd.DataFrame, config: PrepareConfig, source: str = "input"
) -> tuple[pd.DataFrame, pd.DataFrame, PrepareReport]:
    """Clean, then balance and cap: returns (cleaned, prepared, report).

    ``cleaned`` is every usable row (what the bias check sees); ``prepared`` is what featurization gets.
    """
    options.check(config)
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
            "label": config.label_column or None,
            "facet": config.facet_column,
            "group": config.group_column or None,
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
