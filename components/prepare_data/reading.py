"""Read a reviews file (CSV, TSV or Parquet; local path or fsspec URI) into a frame, or say clearly why not.

What a user can get wrong before any row is looked at: a missing filesystem package or an unreachable
URI, a file that is not a regular file (a FIFO), empty, binary, not UTF-8, cut short, or has duplicated
column names.  A CSV's field separator is the suffix's (``,``; ``.tsv``: tab) unless that leaves the header
one field: then it is the one of comma, semicolon, tab and pipe found in the first lines (`choose_separator`),
and a file that still does not parse is reported with the separator it was read with.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import IO

import pandas as pd

#: File suffixes we read, with the reader each one gets.
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz", ".zst")


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
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
CONTROL_RE = re.compile(CONTROL)
#: A letter of any script (a word character that is neither a digit nor the underscore).
LETTER = r"[^\W\d_]"
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
        self._ahead = ""  # read by `peek`, not yet handed out by `read`

    def peek(self) -> str:
        """The file's first characters (up to `_HEAD_CHARS`), read ahead: `read` hands them out first."""
        if not self.chars:
            self._ahead = self._take(_HEAD_CHARS)
        return self.head

    def read(self, size: int = -1) -> str:
        if self._ahead:
            if 0 <= size < len(self._ahead):
                chunk, self._ahead = self._ahead[:size], self._ahead[size:]
                return chunk
            chunk, self._ahead = self._ahead, ""
            rest = size - len(chunk) if size >= 0 else -1
            return chunk + (self._take(rest) if rest else "")
        return self._take(size)

    def _take(self, size: int) -> str:
        chunk = self._handle.read(size)
        if len(self.head) < _HEAD_CHARS:
            self.head += chunk[: _HEAD_CHARS - len(self.head)]
            self._check_text()
        self.tail = (self.tail + chunk)[-_TAIL_CHARS:]
        self.newlines += chunk.count("\n")
        self.chars += len(chunk)
        return chunk

    def _check_text(self) -> None:
        controls = CONTROL_RE.findall(self.head)
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


#: Field separators a reviews file may use, with their names in messages.
SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
#: How many first lines `choose_separator` looks at.
_SNIFF_LINES = 50


def choose_separator(head: str, expected: str) -> str:
    """The separator of CSV/TSV text whose first characters are ``head``: ``expected`` (from the file's
    suffix) when it splits the header, else the one of `SEPARATORS` that `csv.Sniffer` finds in the first
    lines (a semicolon file or a TSV named ``.csv``), else the one that splits the header into most fields.
    """
    if len(_first_record(head, expected)) > 1:
        return expected
    lines = head.splitlines(keepends=True)
    sample = "".join(lines[: max(1, min(len(lines) - 1, _SNIFF_LINES))])  # the last line may be cut
    try:
        found = csv.Sniffer().sniff(sample, delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        found = max(SEPARATORS, key=lambda sep: len(_first_record(head, sep)))
    return found if len(_first_record(head, found)) > 1 else expected


def describe_separator(sep: str, expected: str) -> str:
    """How a file was read, for messages: ``semicolon-separated (detected; its suffix says comma)``."""
    if sep == expected:
        return f"{SEPARATORS[sep]}-separated (from its suffix)"
    return f"{SEPARATORS[sep]}-separated (detected in its first lines; its suffix says {SEPARATORS[expected]})"


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


def check_unique_columns(names: Sequence[object], path: str) -> None:
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


def _kind(fs_path: str, info: dict) -> str:
    """What a file that is not a regular one is: a named pipe (FIFO), a device, a socket."""
    import os
    import stat

    try:
        mode = os.stat(fs_path).st_mode
    except OSError:
        return f"fsspec type {info.get('type')!r}"
    for test, name in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return f"fsspec type {info.get('type')!r}"


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
    if info.get("type") not in (None, "file", "link"):
        raise ValueError(
            f"Input {path!r} is not a regular file ({_kind(fs_path, info)}): it can be read only once, and the "
            "pipeline reads its input twice (checks, then the prepare step). Save it to a file and pass that "
            "to --data."
        )
    if info.get("size") == 0:
        raise ValueError(f"Input file {path!r} is empty (0 bytes). Pass a file with a header row and reviews.")
    expected = sep = "\t" if fmt == "tsv" else ","
    tap: _TextTap | None = None
    try:
        if fmt == "parquet":
            with fs.open(fs_path, "rb") as pf:  # type: ignore[attr-defined]
                frame = pd.read_parquet(pf)
        else:
            with fsspec.open(path, "rt", encoding="utf-8", compression="infer", newline="") as fh:
                tap = _TextTap(fh)
                sep = choose_separator(tap.peek(), expected)
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
        if tap is None:
            raise ValueError(f"Input file {path!r} is not a well-formed {fmt.upper()} file: {_one_line(err)}") from err
        raise ValueError(
            f"Input file {path!r} is not a well-formed {fmt.upper()} file (read as "
            f"{describe_separator(sep, expected)}): {_one_line(err)}. Every row needs the header's fields, "
            f"separated by one {' or '.join(SEPARATORS.values())} throughout; put a field that holds the "
            "separator in double quotes."
        ) from err
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
        check_unique_columns(list(frame.columns), path)
        return frame
    header = _first_record(tap.head, sep)
    check_unique_columns(header or list(frame.columns), path)
    _check_complete(tap, header, sep, path)
    return frame
