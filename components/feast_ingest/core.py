"""Put the BERT features into the Feast feature store, through Feast's public API only.

`ingest` validates everything first (the options with `IngestConfig.validate`, every feature row, that
the store directory is writable and the online store reachable), then

1. writes the rows as one new Parquet file into the offline directory (`offline_path` decides where),
   named by a digest of its content: runs that share a store each add their own file and never rewrite
   another's, and re-ingesting the same features writes the same file again (idempotent);
2. registers the entity and the feature view with `FeatureStore.apply`, only when the registry does not
   already hold exactly these definitions (under a lock file for a local file registry);
3. writes the online store with `FeatureStore.write_to_online_store`: the online view's columns only
   (`features.ONLINE_FEATURES`); labels and splits stay offline (their view has ``online=False``).

All-or-nothing where the store allows it: a failure in 2-3 removes the offline file this ingest added and
undoes its own registry change (definitions it created are deleted again, unless another ingest's offline
data already depends on them; definitions it replaced are re-applied).  Other runs' registry changes are
never overwritten by a snapshot.  The online store is written in `write_to_online_store` calls of
`online_batch_size` rows (50,000): Feast turns every row of a call into protobuf values in memory first, about
6 KB a row, so one call for 1M rows needed over 6 GB.  The SQLite online store (embedded default) commits each
call as one SQLite transaction: an ingest of up to `online_batch_size` rows (the course's data, balanced or not)
is all-or-nothing too; a larger one that fails part way leaves the batches already written (those rows' online
values updated) while the offline data and registry are rolled back.  **Redis is not transactional** at all:
a failure part way (Redis going away mid-ingest) can leave some rows of a batch updated.  Either way,
re-running the ingest converges.  Offline rows become visible to readers when their file lands (step 1),
before the online write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

from components.common import features as F
from components.common import options, schema
from components.common.logs import Progress
from components.feast_ingest.validation import FEATURES_SCHEMA, read_features, validate_features

__all__ = ["FEATURES_SCHEMA", "IngestConfig", "IngestReport", "ingest", "read_features", "validate_features"]

if TYPE_CHECKING:  # pragma: no cover - typing only
    from feast import FeatureStore
    from feast.repo_config import RepoConfig


@dataclass(frozen=True)
class IngestConfig:
    """Where and how to ingest."""

    store_dir: str = field(
        metadata={
            "help": "Store directory: relative paths of the feature_store.yaml resolve here "
            "(the run's directory locally, a PVC mount on a cluster)."
        }
    )
    feast_config: str = field(
        default="local",
        metadata={"help": "`local` (SQLite + Parquet/DuckDB), `cluster` (Redis + PVC/S3) or a feature_store.yaml."},
    )
    offline_path: str = field(
        default="",
        metadata={
            "help": "Directory of the offline Parquet files, relative to the store directory or s3://; "
            "empty: FEAST_OFFLINE_PATH, else data/offline/review_features."
        },
    )
    online_batch_size: int = field(
        default=50_000,
        metadata={
            "help": "Rows per write_to_online_store call (Feast holds a call's rows as protobuf values, about "
            "6 KB each); each call is one SQLite transaction, Redis is not transactional.",
            "min": 1,
        },
    )

    def validate(self) -> None:
        """Check the options and load the store configuration (Feast's own RepoConfig loading), writing nothing.

        Raises:
            ValueError: Naming the flag: a bound (`--online-batch-size`), an empty `--store-dir`, a missing,
                malformed or incomplete feature_store.yaml (`--feast-config`), or an offline path set twice
                (`--offline-path`).
        """
        options.check_fields(self)
        if not self.store_dir.strip():
            raise ValueError(f"{options.flag('store_dir')} is empty; name the feature store directory.")
        try:
            F.load_store_config(self.store_dir, self.feast_config)
        except ValueError as error:
            raise ValueError(f"{options.flag('feast_config')} {self.feast_config!r}: {error}") from error
        self.offline_location()

    def offline_location(self) -> str:
        """The offline directory (absolute) or URI, by the one rule of `features.offline_location`."""
        return F.offline_location(self.store_dir, self.offline_path)


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
    offline_file: str
    rows_written: int
    rows_per_split: dict[str, int]
    online_write: str
    registry_changed: bool
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the store -------------------------------------------------------------------------------------------


def _check_writable(directory: Path, what: str = "the feature store") -> None:
    """Fail unless ``directory`` exists writable or could be created (checked at its nearest existing parent)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except OSError as error:
        raise ValueError(
            f"Cannot write {what} at {directory}: {error}. Choose a writable --output/store directory."
        ) from error


def _local(config: RepoConfig, path: str) -> Path | None:
    """``path`` resolved against the store directory, or None for remote URIs (s3://, gs://, ...)."""
    if "://" in path:
        return None
    p = Path(path)
    return p if p.is_absolute() else Path(str(config.repo_path)) / p


def _registry_file(config: RepoConfig) -> Path | None:
    if getattr(config.registry, "registry_type", "file") != "file":
        return None
    return _local(config, str(config.registry.path))


def _transactional(config: RepoConfig) -> bool:
    """Whether a `write_to_online_store` call is all-or-nothing (Feast's SQLite store: one transaction)."""
    return str(config.online_store.type) in ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore")


def describe_online_store(config: RepoConfig) -> dict[str, str]:
    """Type and location of the online store (without credentials)."""
    kind = str(config.online_store.type)
    if _transactional(config):
        return {"type": "sqlite", "path": str(_local(config, str(config.online_store.path)))}
    connection = str(getattr(config.online_store, "connection_string", "") or "")
    location = connection.split(",", 1)[0].rsplit("@", 1)[-1]
    return {"type": kind, "location": location} if location else {"type": kind}


def check_online_store(store: FeatureStore, objects: list[Any]) -> None:
    """Fail early (before any write) when the online store cannot be reached or written.

    SQLite: its directory must be writable.  Other stores: one read of an unknown key with
    `FeatureStore.get_online_features` (a network round trip; the Redis client raises on a refused connection).
    The store's registry may not hold the feature view yet (a first ingest) and must not change before the
    checks pass, so the read goes through a throwaway `FeatureStore`: the same online store, a file registry
    in a temporary directory holding only ``objects`` (the entity and the feature view), registered with the
    registry's own ``apply_*`` methods (no infrastructure change).
    """
    config = store.config
    if _transactional(config):
        _check_writable(Path(describe_online_store(config)["path"]).parent, "the SQLite online store")
        return
    from feast import Entity, FeatureStore, FeatureView
    from feast.repo_config import RepoConfig

    where = describe_online_store(config)
    entities = [o for o in objects if isinstance(o, Entity)]
    view = next(o for o in objects if isinstance(o, FeatureView) and o.name == F.FEATURE_VIEW)
    with tempfile.TemporaryDirectory(prefix="feast-probe-") as tmp:
        probe = FeatureStore(
            repo_path=tmp,
            config=RepoConfig(
                project=config.project,
                provider=config.provider,
                registry=str(Path(tmp) / "registry.db"),
                online_store=config.online_store,
                offline_store=config.offline_store,
                entity_key_serialization_version=config.entity_key_serialization_version,
            ),
        )
        for entity in entities:
            probe.registry.apply_entity(entity, config.project, commit=False)
        probe.registry.apply_feature_view(view, config.project, commit=True)
        try:
            probe.get_online_features(
                features=[f"{view.name}:{view.features[0].name}"],
                entity_rows=[{schema.REVIEW_ID: "__connectivity_check__"}],
            )
        except Exception as error:  # client libraries raise their own connection errors
            raise ValueError(
                f"The online store ({where.get('type')} at {where.get('location', '?')}) is unreachable: "
                f"{type(error).__name__}: {error}. Check FEAST_REDIS_CONNECTION_STRING and that the service runs; "
                "nothing was written (registry and stores are unchanged)."
            ) from error


@contextlib.contextmanager
def registry_lock(config: RepoConfig) -> Iterator[None]:
    """An exclusive lock beside a local file registry (Feast rewrites that file whole on every change)."""
    path = _registry_file(config)
    if path is None:
        yield  # SQL or object-store registries: no local file to lock
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- offline ---------------------------------------------------------------------------------------------


class _Digest:
    """A write-only file that keeps only the SHA-256 of what is written to it."""

    closed = False

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class OfflineFile:
    """This ingest's own Parquet file in the offline directory (local or s3://), named by its content: the
    SHA-256 of the rows' Arrow IPC stream, hashed as it is written (never held whole in memory)."""

    def __init__(self, directory: str, table: pa.Table) -> None:
        digest = _Digest()
        with pa.ipc.new_stream(pa.PythonFile(digest, mode="w"), table.schema) as writer:
            writer.write_table(table)
        self.directory = directory.rstrip("/")
        self.name = f"features-{digest.sha256.hexdigest()[:24]}.parquet"
        self.uri = f"{self.directory}/{self.name}"
        self.table = table
        self.created = False

    def write(self) -> None:
        """Write the file under a hidden name, then rename it into place; nothing if it exists (same rows)."""
        filesystem, directory = fs.FileSystem.from_uri(self.directory)
        target, tmp = f"{directory}/{self.name}", f"{directory}/.{self.name}.tmp-{os.getpid()}"
        try:
            if filesystem.get_file_info(target).type != fs.FileType.NotFound:
                return
            filesystem.create_dir(directory, recursive=True)
            pq.write_table(self.table, tmp, filesystem=filesystem, compression="zstd")
            filesystem.move(tmp, target)  # a rename locally; object stores copy, then delete
            self.created = True
        except OSError as error:
            with contextlib.suppress(OSError):
                filesystem.delete_file(tmp)
            raise ValueError(f"Cannot write the offline store file {self.uri}: {error}") from error

    def remove(self) -> None:
        if self.created:
            filesystem, path = fs.FileSystem.from_uri(self.uri)
            filesystem.delete_file(path)
            self.created = False

    def others(self) -> bool:
        """Whether the directory holds other ingests' files (whose rows rely on the registered definitions)."""
        filesystem, directory = fs.FileSystem.from_uri(self.directory)
        infos = filesystem.get_file_info(fs.FileSelector(directory, allow_not_found=True))
        names = [info.base_name for info in infos]
        return any(n.endswith(".parquet") and not n.startswith(".") and n != self.name for n in names)


# --- registry ----------------------------------------------------------------------------------------------


def registered(store: FeatureStore, objects: list[Any]) -> list[Any]:
    """The registry's current version of each of ``objects`` (None where it has none), read afresh."""
    from feast import Entity
    from feast.errors import EntityNotFoundException, FeatureViewNotFoundException

    current: list[Any] = []
    for obj in objects:
        getter = store.get_entity if isinstance(obj, Entity) else store.get_feature_view
        try:
            current.append(getter(obj.name, allow_registry_cache=False))
        except (EntityNotFoundException, FeatureViewNotFoundException):
            current.append(None)
    return current


def _same(current: list[Any], objects: list[Any]) -> bool:
    return all(old is not None and old == new for old, new in zip(current, objects, strict=True))


def undo_register(store: FeatureStore, objects: list[Any], before: list[Any], keep_created: bool) -> None:
    """Undo this ingest's `apply`: re-apply what it replaced, delete what it created (unless ``keep_created``:
    another ingest's offline data relies on it).  Objects already as they were are left alone."""
    store.refresh_registry()
    now = registered(store, objects)
    restore = [old for old, cur in zip(before, now, strict=True) if old is not None and not _same([cur], [old])]
    delete = [] if keep_created else [cur for old, cur in zip(before, now, strict=True) if old is None and cur]
    if restore or delete:
        store.apply(restore, objects_to_delete=delete, partial=not delete)


# --- online --------------------------------------------------------------------------------------------


def write_online(store: FeatureStore, table: pa.Table, batch_rows: int) -> str:
    """Write the rows' online features (`features.ONLINE_FEATURES`, not the labels) with
    `FeatureStore.write_to_online_store`, ``batch_rows`` rows a call; returns how (for the report)."""
    table = table.select([schema.REVIEW_ID, *F.ONLINE_FEATURES, F.EVENT_TIMESTAMP])
    sqlite = _transactional(store.config)
    cache = {"allow_registry_cache": False} if sqlite else {}
    for start in range(0, table.num_rows, batch_rows):
        store.write_to_online_store(F.FEATURE_VIEW, table.slice(start, batch_rows).to_pandas(), **cache)
    if not sqlite:
        return f"write_to_online_store (batches of {batch_rows} rows, not transactional)"
    if table.num_rows <= batch_rows:
        return "write_to_online_store (one SQLite transaction)"
    return f"write_to_online_store (batches of {batch_rows} rows, one SQLite transaction each)"


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
    """Validate, then write the offline file, the registry and the online store (see the module docstring),
    saying where it is at least every `components.common.logs.PROGRESS_EVERY_S` seconds.

    Raises:
        ValueError: Bad options or features, an invalid or incomplete configuration, an unwritable store
            directory or an unreachable online store; nothing has been changed then.
    """
    with Progress("ingest") as progress:
        return _ingest(features_path, config, progress)


def _ingest(features_path: str | Path, config: IngestConfig, progress: Progress) -> IngestReport:
    from feature_repo import review_features as definitions

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    progress.update("checking the features and the stores")
    config.validate()
    table = read_features(features_path)
    store_dir = Path(config.store_dir).expanduser().resolve()
    _check_writable(store_dir)
    location = config.offline_location()
    if "://" not in location:
        _check_writable(Path(location), "the offline store")
    store = F.feature_store(store_dir, config.feast_config)
    objects = definitions.definitions(location, os.environ.get("FEAST_S3_ENDPOINT_URL"))
    registry_file = _registry_file(store.config)
    if registry_file is not None:
        _check_writable(registry_file.parent, "the feature store registry")
    check_online_store(store, objects)
    seconds["validate"] = time.perf_counter() - started

    started = time.perf_counter()
    progress.update(f"writing {table.num_rows} rows to the offline store")
    offline = OfflineFile(location, table)
    offline.write()
    seconds["offline"] = time.perf_counter() - started
    changed = False
    try:
        started = time.perf_counter()
        progress.update("registering the feature view")
        with registry_lock(store.config):
            before = registered(store, objects)
            changed = not _same(before, objects)
            if changed:
                store.apply(objects)
        seconds["apply"] = time.perf_counter() - started
        started = time.perf_counter()
        progress.update(f"writing {table.num_rows} rows to the online store")
        method = write_online(store, table, config.online_batch_size)
        seconds["online"] = time.perf_counter() - started
    except BaseException:
        with registry_lock(store.config):
            offline.remove()
            if changed:
                undo_register(store, objects, before, keep_created=offline.others())
        raise
    _copy_repo_files(F.store_config_path(config.feast_config), store_dir)

    return IngestReport(
        feature_view=F.FEATURE_VIEW,
        entity=F.ENTITY,
        project=store.config.project,
        store=str(store_dir),
        config_file=str(F.store_config_path(config.feast_config)),
        registry=str(registry_file) if registry_file is not None else str(store.config.registry.path),
        online_store=describe_online_store(store.config),
        offline_uri=location,
        offline_file=offline.uri,
        rows_written=table.num_rows,
        rows_per_split={s: int(pc.sum(pc.equal(table[F.SPLIT], s)).as_py() or 0) for s in F.SPLITS},
        online_write=method,
        registry_changed=changed,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def write_report(report: IngestReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=2))


def metric_items(report: IngestReport) -> list[tuple[str, float]]:
    """Headline numbers for the step's KFP Metrics."""
    items: list[tuple[str, float]] = [("rows_written", report.rows_written)]
    items += [(f"rows_{s}", n) for s, n in report.rows_per_split.items()]
    return items
