"""Put the BERT features into the Feast feature store: registry, offline Parquet and online store.

`ingest` validates everything first (the features, the configuration, that the store directory is
writable and the online store reachable), then

1. writes the merged offline Parquet to a temporary file beside the target,
2. snapshots the registry and applies the definitions (`FeatureStore.apply`),
3. writes the online store - SQLite in one transaction (bulk, see below), other stores through Feast's
   `OnlineStore.online_write_batch` in large batches,
4. renames the offline file into place and commits the online transaction.

Any failure in 2-4 rolls the online transaction back, restores the registry file and leaves the
previous offline file, so the store reads as it did before.  Re-ingesting the same features is
idempotent: offline rows are keyed by (review_id, event_timestamp), online rows by entity key.

SQLite bulk path: the rows Feast's `SqliteOnlineStore.online_write_batch` would write (entity key from
`serialize_entity_key`'s layout, `ValueProto` bytes, Feast's timestamp adaptation), sorted by key and
written with one `executemany` in one transaction.  Before using it, `ingest` writes sample rows with
Feast's own `online_write_batch` into a scratch database and checks that both paths produce the same
bytes; if they differ (a Feast upgrade changed the layout), it falls back to Feast's writer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import sqlite3
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common import features as F
from components.common import schema

if TYPE_CHECKING:  # pragma: no cover - typing only
    from feast import FeatureView
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.repo_config import RepoConfig

#: The features table as ingest expects it (what featurize writes).
FEATURES_SCHEMA = F.FEATURES_SCHEMA
_NUM_CLASSES = len(schema.LABEL_TO_ID)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    """Where and how to ingest."""

    #: The store directory: relative paths of the feature_store.yaml resolve here (the run's directory
    #: locally, a PVC mount on a cluster).
    store_dir: str
    #: `local` (SQLite + Parquet), `cluster` (Redis + PVC/S3) or a path to a feature_store.yaml.
    feast_config: str = "local"
    #: Offline Parquet location: relative to store_dir, or an s3:// URI; empty: `DEFAULT_OFFLINE_PATH`.
    offline_path: str = ""
    #: Rows per `online_write_batch` call on the generic (non-SQLite) path.
    online_batch_size: int = 20_000
    #: Use the SQLite bulk path where the online store is SQLite (off: Feast's writer, for comparison).
    sqlite_bulk: bool = True

    @property
    def offline(self) -> str:
        return self.offline_path.strip() or F.DEFAULT_OFFLINE_PATH


@dataclass
class IngestReport:
    """What ingest wrote, for `summary.json` (`feature_store`) and the step's outputs."""

    feature_view: str
    entity: str
    project: str
    store: str
    config_file: str
    registry: str
    online_store: dict[str, str]
    offline_uri: str
    rows_written: int
    rows_offline: int
    rows_per_split: dict[str, int]
    online_write: str
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- validation ----------------------------------------------------------------------------------------


def _examples(values: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    return shown + (", ..." if len(values) > limit else "")


def read_features(path: str | Path) -> pa.Table:
    """The features Parquet written by featurize, validated (see `validate_features`)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise ValueError(f"Cannot read features {str(path)!r} as Parquet: {error}") from error
    return validate_features(table, str(path))


def validate_features(table: pa.Table, source: str = "features") -> pa.Table:
    """Check every row before anything is written; returns the table cast to `FEATURES_SCHEMA`.

    Raises:
        ValueError: Missing columns or wrong types, no rows, missing or duplicate review ids, empty or
            negative token ids, label ids outside 0-2, unknown splits, missing timestamps or facet values.
            The message names the column and some offending review ids.
    """
    missing = [c for c in FEATURES_SCHEMA.names if c not in table.column_names]
    if missing:
        raise ValueError(
            f"Features {source!r} lack column(s) {missing} (have {table.column_names}); "
            "ingest reads featurize's output."
        )
    if table.num_rows == 0:
        raise ValueError(f"Features {source!r} hold no rows; nothing to ingest.")
    columns = {}
    for column in FEATURES_SCHEMA:
        try:
            columns[column.name] = table[column.name].cast(column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ValueError(
                f"Column {column.name!r} of {source!r} is {table[column.name].type}, expected {column.type}: {error}"
            ) from error
    table = pa.table(columns, schema=FEATURES_SCHEMA).combine_chunks()
    ids = table[schema.REVIEW_ID]

    def fail(mask: pa.ChunkedArray | pa.Array, what: str) -> None:
        mask = pc.fill_null(mask, True)
        if pc.any(mask).as_py():
            bad = ids.filter(mask).to_pylist()
            raise ValueError(
                f"{len(bad)} row(s) of {source!r} {what} (review_id {_examples(bad)}); nothing was written. "
                "Re-run featurize on clean input."
            )

    if ids.null_count:
        raise ValueError(f"{ids.null_count} row(s) of {source!r} have no review_id; nothing was written.")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        dupes = [v["values"] for v in pc.value_counts(ids).to_pylist() if v["counts"] > 1]
        raise ValueError(f"review_id is not unique in {source!r}: {_examples(dupes)}; nothing was written.")
    token_ids = table[F.INPUT_IDS]
    fail(pc.less_equal(pc.list_value_length(token_ids), 0), "have no token ids")
    flat = pc.list_flatten(token_ids)
    if flat.null_count or (len(flat) and pc.min(flat).as_py() < 0):
        parents = pc.list_parent_indices(token_ids)
        bad_rows = pc.unique(parents.filter(pc.fill_null(pc.less(flat, 0), True)))
        mask = pc.is_in(pa.array(range(table.num_rows)), value_set=bad_rows)
        fail(mask, "have missing or negative token ids")
    fail(
        pc.invert(pc.and_(pc.greater_equal(table[F.LABEL_ID], 0), pc.less(table[F.LABEL_ID], _NUM_CLASSES))),
        f"have a label_id outside 0-{_NUM_CLASSES - 1}",
    )
    fail(pc.invert(pc.is_in(table[F.SPLIT], value_set=pa.array(F.SPLITS))), f"have a split other than {F.SPLITS}")
    fail(pc.is_null(table[F.EVENT_TIMESTAMP]), "have no event_timestamp")
    fail(pc.is_null(table[schema.FACET]), f"have no {schema.FACET}")
    return table


# --- the store -------------------------------------------------------------------------------------------


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as error:
        raise ValueError(
            f"Cannot write the feature store at {directory}: {error}. Choose a writable --output/store directory."
        ) from error


def _local_path(config: RepoConfig, path: str) -> Path | None:
    """``path`` resolved against the store directory, or None for remote URIs (s3://, gs://, ...)."""
    if "://" in path:
        return None
    p = Path(path)
    return p if p.is_absolute() else Path(str(config.repo_path)) / p


def _registry_file(config: RepoConfig) -> Path | None:
    registry = config.registry
    if getattr(registry, "registry_type", "file") != "file":
        return None
    return _local_path(config, str(registry.path))


def _sqlite_path(config: RepoConfig) -> Path | None:
    if config.online_store.type not in ("sqlite",) and not str(config.online_store.type).endswith("SqliteOnlineStore"):
        return None
    return _local_path(config, str(config.online_store.path))


def describe_online_store(config: RepoConfig) -> dict[str, str]:
    """Type and location of the online store (without credentials)."""
    kind = str(config.online_store.type)
    sqlite_path = _sqlite_path(config)
    if sqlite_path is not None:
        return {"type": "sqlite", "path": str(sqlite_path)}
    connection = str(getattr(config.online_store, "connection_string", "") or "")
    location = connection.split(",", 1)[0].rsplit("@", 1)[-1]
    return {"type": kind, "location": location} if location else {"type": kind}


def check_online_store(config: RepoConfig, view: FeatureView) -> None:
    """Fail early (before any write) when the online store cannot be written or reached.

    SQLite: the database can be opened and write-locked.  Other stores: one read of an unknown key
    through Feast's `OnlineStore.online_read` (a network round trip).
    """
    sqlite_path = _sqlite_path(config)
    if sqlite_path is not None:
        _check_writable(sqlite_path.parent)
        if not sqlite_path.exists():
            return  # a writable directory is enough; Feast creates the database at apply
        try:
            conn = sqlite3.connect(sqlite_path, timeout=10, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except sqlite3.Error as error:
            raise ValueError(f"Cannot write the SQLite online store {sqlite_path}: {error}.") from error
        return
    from feast.infra.provider import get_provider
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    where = describe_online_store(config)
    probe = EntityKey(join_keys=[schema.REVIEW_ID], entity_values=[Value(string_val="__connectivity_check__")])
    try:
        get_provider(config).online_store.online_read(config, view, [probe], None)
    except Exception as error:  # client libraries raise their own connection errors
        raise ValueError(
            f"The online store ({where.get('type')} at {where.get('location', '?')}) is unreachable: "
            f"{type(error).__name__}: {error}. Check FEAST_REDIS_CONNECTION_STRING and that the service runs; "
            "nothing was written (registry and stores are unchanged)."
        ) from error


class RegistrySnapshot:
    """The registry file's bytes before apply, to put back if the ingest fails (file registries only)."""

    def __init__(self, config: RepoConfig) -> None:
        self.path = _registry_file(config)
        self.content = self.path.read_bytes() if self.path is not None and self.path.exists() else None

    def restore(self) -> None:
        if self.path is None:
            return
        if self.content is None:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(f".{self.path.name}.restore-{os.getpid()}")
        tmp.write_bytes(self.content)
        os.replace(tmp, self.path)


# --- offline ---------------------------------------------------------------------------------------------


def _row_keys(table: pa.Table) -> pa.Array:
    """One string per row: review_id and event time (microseconds), the offline table's key."""
    micros = pc.cast(pc.cast(table[F.EVENT_TIMESTAMP], pa.int64()), pa.string())
    return pc.binary_join_element_wise(table[schema.REVIEW_ID], micros, "\x00").combine_chunks()


def merge_offline(existing: pa.Table | None, new: pa.Table) -> pa.Table:
    """Offline rows after ingesting ``new``: rows with the same (review_id, event_timestamp) are replaced."""
    if existing is None or existing.num_rows == 0:
        merged = new
    else:
        try:
            existing = existing.select(FEATURES_SCHEMA.names).cast(FEATURES_SCHEMA)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ValueError(
                f"The existing offline data does not match the feature schema ({error}); "
                "use a new store directory or remove the old offline file."
            ) from error
        replaced = pc.is_in(_row_keys(existing), value_set=_row_keys(new))
        kept = existing.filter(pc.invert(replaced))
        merged = pa.concat_tables([kept, new])
    return merged.sort_by([(schema.REVIEW_ID, "ascending"), (F.EVENT_TIMESTAMP, "ascending")])


class OfflineWrite:
    """Writes the offline Parquet to a temporary file first; `commit` renames it into place, `rollback` undoes."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.local = None if "://" in uri else Path(uri)
        self.tmp: Path | None = None
        self.backup: Path | None = None
        self.table: pa.Table | None = None
        self.committed = False

    def read_existing(self) -> pa.Table | None:
        try:
            if self.local is not None:
                return pq.read_table(self.local) if self.local.exists() else None
            from pyarrow import fs

            filesystem, path = fs.FileSystem.from_uri(self.uri)
            if filesystem.get_file_info(path).type == fs.FileType.NotFound:
                return None
            return pq.read_table(path, filesystem=filesystem)
        except (OSError, pa.ArrowInvalid) as error:
            raise ValueError(f"Cannot read the existing offline store file {self.uri}: {error}") from error

    def prepare(self, table: pa.Table) -> None:
        self.table = table
        if self.local is None:
            return  # an object store PUT is atomic; written at commit
        try:
            self.local.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.local.with_name(f".{self.local.name}.tmp-{os.getpid()}")
            pq.write_table(table, self.tmp, compression="zstd")
        except OSError as error:
            self.discard()
            raise ValueError(f"Cannot write the offline store file {self.local}: {error}") from error

    def commit(self) -> None:
        if self.local is None:
            from pyarrow import fs

            filesystem, path = fs.FileSystem.from_uri(self.uri)
            pq.write_table(self.table, path, filesystem=filesystem, compression="zstd")
        else:
            if self.tmp is None:
                raise RuntimeError("OfflineWrite.commit() before prepare()")
            if self.local.exists():
                self.backup = self.local.with_name(f".{self.local.name}.bak-{os.getpid()}")
                os.link(self.local, self.backup)  # the previous file, kept until the ingest has finished
            os.replace(self.tmp, self.local)
            self.tmp = None
        self.committed = True

    def rollback(self) -> None:
        """Undo `commit` (put the previous file back, or remove a first one) and drop temporary files."""
        if self.committed and self.local is not None:
            if self.backup is not None:
                os.replace(self.backup, self.local)
                self.backup = None
            else:
                self.local.unlink(missing_ok=True)
            self.committed = False
        self.discard()

    def discard(self) -> None:
        """Drop the temporary and backup files (after success, or as part of rollback)."""
        for path in (self.tmp, self.backup):
            if path is not None:
                path.unlink(missing_ok=True)
        self.tmp = self.backup = None


# --- online ----------------------------------------------------------------------------------------------


def _value_protos(table: pa.Table) -> Iterator[tuple[str, dict[str, Value], datetime]]:
    """(review_id, {feature: ValueProto}, event time) per row, as Feast's writers take them."""
    from feast.protos.feast.types.Value_pb2 import Int32List, Value

    cache: dict[tuple[str, Any], Any] = {}

    def scalar(name: str, value: Any) -> Any:
        key = (name, value)
        if key not in cache:
            cache[key] = Value(int64_val=value) if name == F.LABEL_ID else Value(string_val=value)
        return cache[key]

    columns = [table[c].to_pylist() for c in (schema.REVIEW_ID, F.INPUT_IDS, F.LABEL_ID, F.SPLIT, schema.FACET)]
    times = table[F.EVENT_TIMESTAMP].to_pylist()
    for (rid, ids, label, split, facet), when in zip(zip(*columns, strict=True), times, strict=True):
        yield (
            rid,
            {
                F.INPUT_IDS: Value(int32_list_val=Int32List(val=ids)),
                F.LABEL_ID: scalar(F.LABEL_ID, label),
                F.SPLIT: scalar(F.SPLIT, split),
                schema.FACET: scalar(schema.FACET, facet),
            },
            when,
        )


def feast_rows(table: pa.Table) -> list[tuple[EntityKey, dict[str, Value], datetime, datetime | None]]:
    """Rows in the form of `OnlineStore.online_write_batch` (entity key proto, values, event ts, created ts)."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [
        (EntityKey(join_keys=[schema.REVIEW_ID], entity_values=[Value(string_val=rid)]), values, when, None)
        for rid, values, when in _value_protos(table)
    ]


def write_online_feast(config: RepoConfig, view: FeatureView, table: pa.Table, batch_size: int) -> None:
    """Write through Feast's `OnlineStore.online_write_batch` (any online store), ``batch_size`` rows a call."""
    from feast.infra.provider import get_provider

    online_store = get_provider(config).online_store
    for start in range(0, table.num_rows, batch_size):
        online_store.online_write_batch(config, view, feast_rows(table.slice(start, batch_size)), None)


_UPSERT = (
    "INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
    "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
    "created_ts = excluded.created_ts;"
)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _sqlite_table(config: RepoConfig, view: FeatureView) -> str:
    """The (unquoted) name of the feature view's table in Feast's SQLite online store."""
    from feast.infra.online_stores.helpers import compute_table_id

    versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
    return compute_table_id(config.project, view, versioning)


def sqlite_bulk_supported(config: RepoConfig) -> bool:
    """The bulk path writes the columns Feast's SQLite store writes without vector/numeric extras."""
    online = config.online_store
    return (
        _sqlite_path(config) is not None
        and not getattr(online, "vector_enabled", False)
        and not getattr(online, "enable_openai_compatible_store", False)
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def int32_list_value_bytes(token_ids: pa.ListArray | pa.ChunkedArray) -> list[bytes]:
    """``Value(int32_list_val=Int32List(val=ids)).SerializeToString()`` for every row, vectorised.

    Protobuf's canonical encoding of a packed repeated int32 (non-negative values, which validation
    guarantees): field tag, length, then one base-128 varint per id.  The varints of all rows are built
    at once with numpy; each row then takes its slice behind a two-field header.  Field numbers come
    from the message descriptors, and a unit test compares the bytes with `SerializeToString`.
    """
    from feast.protos.feast.types.Value_pb2 import Int32List, Value

    if isinstance(token_ids, pa.ChunkedArray):
        token_ids = token_ids.combine_chunks()
    outer_tag = _varint(Value.DESCRIPTOR.fields_by_name["int32_list_val"].number << 3 | 2)
    inner_tag = _varint(Int32List.DESCRIPTOR.fields_by_name["val"].number << 3 | 2)
    offsets = np.asarray(token_ids.offsets, dtype=np.int64)
    values = np.asarray(token_ids.values, dtype=np.int64)[offsets[0] : offsets[-1]].astype(np.uint32)
    offsets = offsets - offsets[0]
    nbytes = np.ones(len(values), dtype=np.int64)
    for shift in (7, 14, 21, 28):
        nbytes += values >= (1 << shift)
    starts = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(nbytes, out=starts[1:])
    buffer = np.empty(int(starts[-1]), dtype=np.uint8)
    for k in range(5):  # byte k of every value that has more than k bytes
        chosen = np.flatnonzero(nbytes > k)
        if not len(chosen):
            break
        byte = (values[chosen] >> np.uint32(7 * k)) & np.uint32(0x7F)
        byte |= np.where(nbytes[chosen] > k + 1, np.uint32(0x80), np.uint32(0))
        buffer[starts[chosen] + k] = byte.astype(np.uint8)
    # Each row: outer tag, varint(inner length), inner tag, varint(payload size), then its payload.
    # Headers are built as an (rows x 6) byte matrix with a mask, and inserted before each payload.
    payload_start = starts[offsets]
    sizes = np.diff(payload_start)
    if len(sizes) and sizes.max() >= 1 << 14:  # pragma: no cover - ids lists far beyond any max_seq_length
        raise ValueError("token id lists this long are not supported by the bulk encoder")
    inner_len = len(inner_tag) + 1 + (sizes >= 128) + sizes
    if len(outer_tag) != 1 or len(inner_tag) != 1:  # pragma: no cover - field numbers below 16 in Feast's proto
        raise ValueError("unexpected field numbers in Feast's Value proto")
    fields = [
        (np.full(len(sizes), outer_tag[0]), True),
        (np.where(inner_len >= 128, (inner_len & 0x7F) | 0x80, inner_len), True),
        (inner_len >> 7, inner_len >= 128),
        (np.full(len(sizes), inner_tag[0]), True),
        (np.where(sizes >= 128, (sizes & 0x7F) | 0x80, sizes), True),
        (sizes >> 7, sizes >= 128),
    ]
    header = np.stack([np.asarray(v, dtype=np.uint8) for v, _ in fields], axis=1)
    mask = np.stack([np.broadcast_to(m, sizes.shape) for _, m in fields], axis=1)
    header_len = mask.sum(axis=1)
    out = np.insert(buffer, np.repeat(payload_start[:-1], header_len), header[mask])
    row_start = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(header_len + sizes, out=row_start[1:])
    data = out.tobytes()
    bounds = row_start.tolist()
    return list(map(data.__getitem__, map(slice, bounds[:-1], bounds[1:])))


def sqlite_rows(table: pa.Table, entity_key_serialization_version: int = 3) -> Iterator[tuple[Any, ...]]:
    """The SQLite rows (entity_key, feature_name, value, value_text, event_ts, created_ts), sorted by key.

    Entity keys follow `serialize_entity_key` (a prefix from Feast's `serialize_entity_key_prefix`,
    then type, length and UTF-8 bytes of the id); values are `ValueProto` bytes; `value_text` is what
    Feast's `extract_text_and_num` gives; event times are adapted exactly as Feast's SQLite store has
    them adapted (`to_naive_utc`, then sqlite3's registered datetime adapter).  Rows come sorted by
    (entity key, feature name), which makes the B-tree inserts sequential.
    """
    import feast.infra.online_stores.sqlite  # noqa: F401 - registers Feast's sqlite3 datetime adapters
    from feast.infra.key_encoding_utils import serialize_entity_key_prefix
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.protos.feast.types.Value_pb2 import Value, ValueType
    from feast.utils import to_naive_utc

    prefix = serialize_entity_key_prefix([schema.REVIEW_ID], entity_key_serialization_version)
    prefix += struct.pack("<I", ValueType.STRING)
    pack = struct.Struct("<I").pack
    scalar_cache: dict[tuple[str, Any], tuple[bytes, str | None]] = {}

    def scalar(name: str, value: Any) -> tuple[bytes, str | None]:
        key = (name, value)
        if key not in scalar_cache:
            proto = Value(int64_val=value) if name == F.LABEL_ID else Value(string_val=value)
            scalar_cache[key] = (proto.SerializeToString(), extract_text_and_num(proto, False)[0])
        return scalar_cache[key]

    ids = table[schema.REVIEW_ID].to_pylist()
    keys = [prefix + pack(len(b)) + b for b in (rid.encode("utf8") for rid in ids)]
    order = np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)

    def in_order(values: Sequence[Any]) -> list[Any]:
        return np.asarray(values, dtype=object)[order].tolist()

    def by_value(column: pa.ChunkedArray, encode: Any) -> list[Any]:
        """encode(value) per row (sorted), computed once per distinct value."""
        encoded = pc.dictionary_encode(column).combine_chunks()
        distinct = np.empty(len(encoded.dictionary), dtype=object)
        distinct[:] = [encode(v) for v in encoded.dictionary.to_pylist()]
        return distinct[np.asarray(encoded.indices)[order]].tolist()

    sorted_keys = in_order(keys)
    sorted_ts = by_value(
        table[F.EVENT_TIMESTAMP], lambda when: sqlite3.adapt(to_naive_utc(when), sqlite3.PrepareProtocol)
    )
    none = itertools.repeat(None)
    columns = {
        F.INPUT_IDS: zip(
            sorted_keys,
            itertools.repeat(F.INPUT_IDS),
            in_order(int32_list_value_bytes(table[F.INPUT_IDS])),
            none,
            sorted_ts,
            none,
        )
    }
    for name in (F.LABEL_ID, schema.FACET, F.SPLIT):
        encoded = by_value(table[name], lambda v, name=name: scalar(name, v))
        blobs, texts = [e[0] for e in encoded], [e[1] for e in encoded]
        columns[name] = zip(sorted_keys, itertools.repeat(name), blobs, texts, sorted_ts, none)
    # Interleave the features in name order: rows come out sorted by (entity key, feature name).
    return itertools.chain.from_iterable(zip(*(columns[name] for name in sorted(columns)), strict=True))


@contextlib.contextmanager
def sqlite_transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction on the SQLite online store: committed on success, rolled back on error."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB page cache for this connection's bulk insert
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


def write_sqlite_rows(conn: sqlite3.Connection, table_name: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """Upsert ``rows`` into the (unquoted) table, as Feast's SQLite writer does."""
    conn.executemany(_UPSERT.format(table=_quote(table_name)), rows)


def bulk_load_sqlite(conn: sqlite3.Connection, table_name: str, rows: Iterable[tuple[Any, ...]], count: int) -> None:
    """`write_sqlite_rows` inside the caller's transaction; for a load at least as large as the table, the
    secondary indexes (Feast's `<table>_ek`) are dropped first and re-created from their own SQL after,
    which is faster than maintaining them row by row.  A rollback restores them with everything else."""
    existing = conn.execute(f"SELECT max(rowid) FROM {_quote(table_name)}").fetchone()[0] or 0
    indexes: list[tuple[str, str]] = []
    if count >= existing:
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
            (table_name,),
        ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {_quote(name)}")
    write_sqlite_rows(conn, table_name, rows)
    for _, sql in indexes:
        conn.execute(sql)


def sqlite_bulk_matches_feast(config: RepoConfig, view: FeatureView, sample: pa.Table) -> bool:
    """Whether the bulk path writes exactly the rows Feast's own SQLite writer writes for ``sample``."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore
    from feast.repo_config import RepoConfig as _RepoConfig

    with tempfile.TemporaryDirectory(prefix="feast-check-") as scratch:
        scratch_config = _RepoConfig(
            project=config.project,
            provider="local",
            registry=str(Path(scratch) / "registry.db"),
            online_store={"type": "sqlite", "path": str(Path(scratch) / "feast.db")},
            offline_store={"type": "file"},
            entity_key_serialization_version=config.entity_key_serialization_version,
            repo_path=Path(scratch),
        )
        store = SqliteOnlineStore()
        store.update(scratch_config, [], [view], [], [], partial=False)
        store.online_write_batch(scratch_config, view, feast_rows(sample), None)
        table_name = _sqlite_table(scratch_config, view)
        query = f"SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM {_quote(table_name)}"
        conn = sqlite3.connect(Path(scratch) / "feast.db")
        try:
            expected = sorted(conn.execute(query).fetchall())
            conn.execute(f"DELETE FROM {_quote(table_name)}")
            conn.commit()
            write_sqlite_rows(conn, table_name, sqlite_rows(sample, config.entity_key_serialization_version))
            conn.commit()
            ours = sorted(conn.execute(query).fetchall())
        finally:
            conn.close()
            del store  # drops the store's cached connection to the scratch database
    return expected == ours


# --- the step --------------------------------------------------------------------------------------------


def _copy_repo_files(config_file: Path, store_dir: Path) -> None:
    """Make the store directory a Feast repository of its own (`feast -c <store> ...` works there)."""
    repo = F.feature_repo_dir()
    if store_dir.resolve() == repo:
        return
    for source, name in ((config_file, "feature_store.yaml"), (repo / "review_features.py", "review_features.py")):
        target = store_dir / name
        if target.exists() and target.read_bytes() == source.read_bytes():
            continue
        tmp = target.with_name(f".{name}.tmp-{os.getpid()}")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


def ingest(features_path: str | Path, config: IngestConfig) -> IngestReport:
    """Validate, then write the registry, offline and online store (see the module docstring).

    Raises:
        ValueError: Bad features, an invalid or incomplete configuration, an unwritable store directory or
            an unreachable online store; nothing has been changed then.
    """
    from feature_repo import review_features as definitions

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    table = read_features(features_path)
    if config.online_batch_size < 1:
        raise ValueError(f"online_batch_size must be at least 1, got {config.online_batch_size}.")
    store_dir = Path(config.store_dir).expanduser().resolve()
    _check_writable(store_dir)
    repo_config = F.load_store_config(store_dir, config.feast_config)
    config_file = F.store_config_path(config.feast_config)
    objects = definitions.definitions(config.offline, os.environ.get("FEAST_S3_ENDPOINT_URL"))
    view = objects[1]
    registry_file = _registry_file(repo_config)
    if registry_file is not None:
        _check_writable(registry_file.parent)
    check_online_store(repo_config, view)
    from feast.infra.offline_stores.file_source import FileSource

    offline_uri = FileSource.get_uri_for_file_path(store_dir, config.offline)
    seconds["validate"] = time.perf_counter() - started

    started = time.perf_counter()
    offline = OfflineWrite(offline_uri)
    offline.prepare(merge_offline(offline.read_existing(), table))
    seconds["offline"] = time.perf_counter() - started

    snapshot = RegistrySnapshot(repo_config)
    sqlite_path = _sqlite_path(repo_config)
    method = "feast-online_write_batch"
    try:
        started = time.perf_counter()
        store = F.feature_store(store_dir, config.feast_config)
        store.apply(objects)
        registered = store.get_feature_view(F.FEATURE_VIEW)
        seconds["apply"] = time.perf_counter() - started

        started = time.perf_counter()
        bulk = (
            config.sqlite_bulk
            and sqlite_bulk_supported(repo_config)
            and sqlite_bulk_matches_feast(repo_config, registered, table.slice(0, 3))
        )
        if config.sqlite_bulk and sqlite_path is not None and not bulk:
            logger.warning("SQLite bulk path disagrees with this Feast version's writer; using online_write_batch")
        if bulk and sqlite_path is not None:
            method = "sqlite-bulk"
            rows = sqlite_rows(table, repo_config.entity_key_serialization_version)
            with sqlite_transaction(sqlite_path) as conn:
                bulk_load_sqlite(conn, _sqlite_table(repo_config, registered), rows, 4 * table.num_rows)
                offline.commit()
        else:
            # SQLite: one call, so Feast's writer commits all rows in one transaction (or none).
            batch = table.num_rows if sqlite_path is not None else config.online_batch_size
            write_online_feast(repo_config, registered, table, batch)
            offline.commit()
        seconds["online"] = time.perf_counter() - started
    except BaseException:
        offline.rollback()
        snapshot.restore()
        raise
    offline.discard()
    _copy_repo_files(config_file, store_dir)

    split_counts = {s: int(pc.sum(pc.equal(table[F.SPLIT], s)).as_py() or 0) for s in F.SPLITS}
    rows_offline = offline.table.num_rows if offline.table is not None else table.num_rows
    return IngestReport(
        feature_view=F.FEATURE_VIEW,
        entity=F.ENTITY,
        project=repo_config.project,
        store=str(store_dir),
        config_file=str(config_file),
        registry=str(registry_file) if registry_file is not None else str(repo_config.registry.path),
        online_store=describe_online_store(repo_config),
        offline_uri=offline_uri,
        rows_written=table.num_rows,
        rows_offline=rows_offline,
        rows_per_split=split_counts,
        online_write=method,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def write_report(report: IngestReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=2))


def metric_items(report: IngestReport) -> list[tuple[str, float]]:
    """Headline numbers for the step's KFP Metrics."""
    items: list[tuple[str, float]] = [("rows_written", report.rows_written), ("rows_offline", report.rows_offline)]
    items += [(f"rows_{s}", n) for s, n in report.rows_per_split.items()]
    return items
