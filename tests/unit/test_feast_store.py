"""feast_ingest core and the read-back functions, on a real embedded Feast store (SQLite + DuckDB/Parquet).

Consistency (online == historical == tokenizer), idempotent re-ingest, point-in-time reads, that a
failed ingest leaves the registry and the earlier features as they were, the options' validation, and
two ingests into one store from two processes at once.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common import features as F
from components.common import schema
from components.feast_ingest import core
from components.featurize import core as featurize
from tests.unit.test_featurize import reviews_table

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_cluster_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEAST_OFFLINE_PATH", "FEAST_REGISTRY_PATH", "FEAST_REDIS_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tokenizer():
    return featurize.load_tokenizer("")


@pytest.fixture(scope="module")
def reviews() -> pa.Table:
    return reviews_table(120, text="review {i}: the fabric is {q}, sizing runs small")


def make_features(tokenizer, reviews: pa.Table, path: Path, when: datetime = T0, max_seq_length: int = 64) -> Path:
    config = featurize.FeaturizeConfig(max_seq_length=max_seq_length)
    table, _ = featurize.featurize(featurize.validate_reviews(reviews), tokenizer, config, when)
    featurize.write_features(table, path)
    return path


@pytest.fixture
def features(tmp_path: Path, tokenizer, reviews: pa.Table) -> Path:
    return make_features(tokenizer, reviews, tmp_path / "features.parquet")


@pytest.fixture
def store_dir(tmp_path: Path, features: Path) -> Path:
    """A store with the features ingested once."""
    core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "store")))
    return tmp_path / "store"


def state(store_dir: Path) -> dict:
    """Everything a reader could see: registry bytes, offline rows, online rows."""
    data = store_dir / "data"
    online = data / "online_store.db"
    rows = []
    if online.exists():
        conn = sqlite3.connect(online)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            rows += conn.execute(f'SELECT * FROM "{table}" ORDER BY entity_key, feature_name').fetchall()
        conn.close()
    offline = data / "offline" / "review_features"
    files = sorted(offline.glob("*.parquet")) if offline.exists() else []
    return {
        "registry": (data / "registry.db").read_bytes() if (data / "registry.db").exists() else None,
        "offline": sorted(
            (r for f in files for r in pq.read_table(f).to_pylist()),
            key=lambda r: (r[schema.REVIEW_ID], r[F.EVENT_TIMESTAMP]),
        ),
        "online": rows,
        "files": sorted(str(p.relative_to(data)) for p in data.rglob("*") if ".lock" not in p.name)
        if data.exists()
        else [],
    }


@contextmanager
def locked_online_store(store_dir: Path) -> Iterator[None]:
    """Another connection holds the SQLite online store's write lock: Feast's writes fail with "database is
    locked" after its 5 s busy timeout - a real failure after validation, no mock."""
    path = store_dir / "data" / "online_store.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


# --- names -------------------------------------------------------------------------------------------


def test_feature_repo_names_match_the_shared_constants() -> None:
    from feature_repo import review_features as repo

    view, labels = repo.review_bert_features, repo.review_labels
    assert view.name == F.FEATURE_VIEW and labels.name == F.LABEL_VIEW and repo.review.name == F.ENTITY
    assert repo.review.join_key == schema.REVIEW_ID
    assert [f.name for f in view.features] == list(F.ONLINE_FEATURES)
    assert [f.name for f in labels.features] == list(F.LABEL_FEATURES)
    assert (view.online, labels.online) == (True, False)
    assert sorted(F.FEATURES) == sorted(F.ONLINE_FEATURES + F.LABEL_FEATURES)
    assert view.batch_source.timestamp_field == labels.batch_source.timestamp_field == F.EVENT_TIMESTAMP
    assert repo.DEFAULT_OFFLINE_PATH == F.DEFAULT_OFFLINE_PATH
    assert view.batch_source.path == str(F.feature_repo_dir() / F.DEFAULT_OFFLINE_PATH)
    assert list(core.FEATURES_SCHEMA.names) == list(F.FEATURE_COLUMNS)


# --- consistency ---------------------------------------------------------------------------------------


def test_online_equals_historical_equals_tokenizer(store_dir: Path, tokenizer, reviews: pa.Table) -> None:
    store = F.open_store(store_dir)
    texts = dict(zip(reviews[schema.TEXT].to_pylist(), reviews[schema.REVIEW_ID].to_pylist(), strict=True))
    by_id = {v: k for k, v in texts.items()}
    sample = sorted(by_id)[::7]
    online = F.get_online_features(store, sample).set_index(schema.REVIEW_ID)
    entity_df = pd.DataFrame({schema.REVIEW_ID: sample, F.EVENT_TIMESTAMP: pd.Timestamp(T0 + timedelta(hours=1))})
    offline = F.get_historical_features(store, entity_df).set_index(schema.REVIEW_ID)
    assert len(offline) == len(sample)
    for rid in sample:
        expected = tokenizer(by_id[rid], max_length=64, truncation=True)["input_ids"]
        assert online.loc[rid, F.INPUT_IDS] == offline.loc[rid, F.INPUT_IDS] == expected
        assert online.loc[rid, schema.FACET] == offline.loc[rid, schema.FACET]


def test_labels_and_splits_are_offline_only(store_dir: Path, features: Path) -> None:
    """The online store holds the model inputs and the facet, never a review's label or split (their view is
    online=False); training still reads both point-in-time from the offline store."""
    conn = sqlite3.connect(store_dir / "data" / "online_store.db")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    stored = {r[0] for t in tables for r in conn.execute(f'SELECT DISTINCT feature_name FROM "{t}"')}
    conn.close()
    assert stored == {F.INPUT_IDS, schema.FACET}
    store = F.open_store(store_dir)
    assert [v.name for v in store.list_feature_views() if not v.online] == [F.LABEL_VIEW]
    with pytest.raises(ValueError, match=r"\['label_id', 'split'\] are not served online: review_labels"):
        F.get_online_features(store, ["id-00001"], [F.INPUT_IDS, F.LABEL_ID, F.SPLIT])
    written = pq.read_table(features).to_pandas().set_index(schema.REVIEW_ID)
    for split, frame in F.get_training_features(store).items():
        assert (frame[F.LABEL_ID].to_numpy() == written.loc[frame[schema.REVIEW_ID], F.LABEL_ID].to_numpy()).all()
        assert (written.loc[frame[schema.REVIEW_ID], F.SPLIT] == split).all()


def test_split_features_come_back_point_in_time(store_dir: Path, features: Path) -> None:
    store = F.open_store(store_dir)
    written = pq.read_table(features).to_pandas()
    for split in F.SPLITS:
        got = F.get_split_features(store, split, as_of=T0 + timedelta(minutes=1))
        want = written[written[F.SPLIT] == split].sort_values(schema.REVIEW_ID)
        assert got[schema.REVIEW_ID].tolist() == want[schema.REVIEW_ID].tolist()
        assert got[F.INPUT_IDS].tolist() == [list(v) for v in want[F.INPUT_IDS]]
        assert (got[F.LABEL_ID].to_numpy() == want[F.LABEL_ID].to_numpy()).all()
    assert F.get_split_features(store, "train", as_of=T0 - timedelta(seconds=1)).empty  # before the features existed


def test_a_process_that_read_the_offline_store_exits_without_nanobind_leak_blocks(store_dir: Path) -> None:
    """DuckDB 2's nanobind bindings print ``nanobind: leaked …`` at interpreter exit for every object still alive;
    ibis held Feast's DuckDB connection until then, so every process that read the offline store printed them
    (the last lines of `make test`, eight blocks in run.log). `close_duckdb_connection` runs at exit."""
    script = (
        "import sys; from datetime import datetime, UTC; from components.common import features as F; "
        "frame = F.get_split_features(F.open_store(sys.argv[1]), 'train', as_of=datetime.now(UTC)); "
        "print(len(frame))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(store_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 0  # it did read through DuckDB
    assert "nanobind" not in done.stderr, done.stderr[-2000:]


def test_unknown_ids_read_back_as_missing(store_dir: Path) -> None:
    frame = F.get_online_features(F.open_store(store_dir), ["no-such-review"])
    assert frame[F.INPUT_IDS].tolist() == [None] and frame[schema.FACET].isna().all()


def test_each_ingest_adds_its_own_offline_file(store_dir: Path, tmp_path: Path, tokenizer, reviews: pa.Table) -> None:
    later = make_features(tokenizer, reviews, tmp_path / "later.parquet", T0 + timedelta(days=1), max_seq_length=8)
    first = sorted((store_dir / "data" / "offline" / "review_features").glob("*.parquet"))
    report = core.ingest(later, core.IngestConfig(store_dir=str(store_dir)))
    files = sorted((store_dir / "data" / "offline" / "review_features").glob("*.parquet"))
    assert len(first) == 1 and set(files) == {*first, Path(report.offline_file)}
    assert pq.read_table(first[0]).num_rows == pq.read_table(report.offline_file).num_rows == 120
    assert not report.registry_changed  # the same definitions: the registry is not rewritten


_OFFLINE_NAME_MEMORY = """
import hashlib, numpy as np, pyarrow as pa
from components.feast_ingest.core import OfflineFile
rows = 200_000
offsets = pa.array(np.arange(0, rows * 50 + 1, 50, dtype=np.int32))
table = pa.table({"review_id": [f"{i:016x}" for i in range(rows)],
                  "input_ids": pa.ListArray.from_arrays(offsets, pa.array(np.arange(rows * 50, dtype=np.int32)))})
table = pa.concat_tables([table.slice(0, 1000), table.slice(1000)])  # two record batches in the stream
pool = pa.default_memory_pool()
before = pool.max_memory()
name = OfflineFile("/nowhere", table).name
grew = pool.max_memory() - before
sink = pa.BufferOutputStream()
with pa.ipc.new_stream(sink, table.schema) as writer:
    writer.write_table(table)
print(name == f"features-{hashlib.sha256(sink.getvalue()).hexdigest()[:24]}.parquet", grew, table.nbytes)
"""


def test_the_offline_file_is_named_by_its_ipc_stream_without_holding_the_stream() -> None:
    """The name is the SHA-256 of the rows' Arrow IPC stream, which was built whole in memory to be hashed: a
    second copy of every feature (about 400 MB at 1M reviews). Now the stream is hashed as it is written: the
    same name, and Arrow's memory does not grow by the stream (in a fresh process: its high-water mark)."""
    done = subprocess.run([sys.executable, "-c", _OFFLINE_NAME_MEMORY], capture_output=True, text=True, check=True)
    same, grew, size = done.stdout.split()
    assert same == "True"
    assert int(grew) < int(size) / 4, (grew, size)


def test_report_names_view_rows_and_location(tmp_path: Path, features: Path) -> None:
    report = core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "s")))
    assert report.feature_view == "review_bert_features" and report.rows_written == 120
    assert report.rows_per_split == {"train": 108, "validation": 6, "test": 6}
    assert report.online_store == {"type": "sqlite", "path": str(tmp_path / "s" / "data" / "online_store.db")}
    assert report.offline_uri == str(tmp_path / "s" / "data" / "offline" / "review_features")
    assert Path(report.offline_file).parent == Path(report.offline_uri) and report.registry_changed
    assert report.online_write == "write_to_online_store (one SQLite transaction)"
    assert (tmp_path / "s" / "feature_store.yaml").is_file() and (tmp_path / "s" / "review_features.py").is_file()


def test_sqlite_is_written_in_batches_with_the_same_rows(tmp_path: Path, features: Path) -> None:
    """Feast holds every row of a write_to_online_store call as protobuf values (about 6 KB a row: 6.2 GB for 1M
    reviews in one call); the online store is written online_batch_size rows a call, one SQLite transaction each,
    and holds the same rows as one call writes."""
    batched = core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "b"), online_batch_size=50))
    whole = core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "w")))
    assert batched.online_write == "write_to_online_store (batches of 50 rows, one SQLite transaction each)"
    assert whole.online_write == "write_to_online_store (one SQLite transaction)"
    assert len(state(tmp_path / "b")["online"]) == 2 * 120  # a row per online feature and review
    assert state(tmp_path / "b")["online"] == state(tmp_path / "w")["online"]
    assert state(tmp_path / "b")["offline"] == state(tmp_path / "w")["offline"]


# --- idempotence and history ---------------------------------------------------------------------------


def test_reingesting_the_same_features_is_idempotent(store_dir: Path, features: Path) -> None:
    before = state(store_dir)
    core.ingest(features, core.IngestConfig(store_dir=str(store_dir)))
    after = state(store_dir)
    assert after == before  # same offline file, same online rows, registry not rewritten
    store = F.open_store(store_dir)
    ids = [r[schema.REVIEW_ID] for r in before["offline"]]
    entity_df = pd.DataFrame({schema.REVIEW_ID: ids, F.EVENT_TIMESTAMP: pd.Timestamp(T0 + timedelta(days=1))})
    historical = F.get_historical_features(store, entity_df)
    assert len(historical) == len(ids) and historical[schema.REVIEW_ID].is_unique


def test_refeaturized_data_is_versioned_by_event_time(
    store_dir: Path, tmp_path: Path, tokenizer, reviews: pa.Table
) -> None:
    later = make_features(tokenizer, reviews, tmp_path / "later.parquet", T0 + timedelta(days=1), max_seq_length=8)
    core.ingest(later, core.IngestConfig(store_dir=str(store_dir)))
    store = F.open_store(store_dir)
    rid = reviews[schema.REVIEW_ID][0].as_py()
    entity_df = pd.DataFrame(
        {schema.REVIEW_ID: [rid, rid], F.EVENT_TIMESTAMP: [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(days=2))]}
    )
    old, new = F.get_historical_features(store, entity_df)[F.INPUT_IDS].tolist()
    assert len(old) > 8 and len(new) == 8
    assert len(F.get_online_features(store, [rid])[F.INPUT_IDS][0]) == 8
    assert len(F.get_split_features(store, "test")) == 6  # one row per review, the latest version


# --- failures leave the store as it was --------------------------------------------------------------------


def _bad_rows(features: Path, target: Path, **columns) -> Path:
    table = pq.read_table(features)
    for name, (index, value) in columns.items():
        values = table[name].to_pylist()
        values[index] = value
        table = table.set_column(table.column_names.index(name), name, pa.array(values, table.schema.field(name).type))
    pq.write_table(table, target)
    return target


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({F.LABEL_ID: (60, 7)}, r"1 row\(s\) .* have a label_id outside 0-2 \(review_id 'id-00060'\)"),
        ({F.INPUT_IDS: (61, [])}, r"have no token ids \(review_id 'id-00061'\)"),
        ({F.INPUT_IDS: (62, [101, -5, 102])}, r"missing or negative token ids \(review_id 'id-00062'\)"),
        ({F.SPLIT: (63, "holdout")}, r"have a split other than"),
        ({F.EVENT_TIMESTAMP: (64, None)}, r"have no event_timestamp \(review_id 'id-00064'\)"),
        ({schema.REVIEW_ID: (65, "id-00000")}, r"review_id is not unique .*'id-00000'"),
    ],
)
def test_a_bad_row_mid_way_changes_nothing(
    store_dir: Path, features: Path, tmp_path: Path, columns: dict, message: str
) -> None:
    before = state(store_dir)
    bad = _bad_rows(features, tmp_path / "bad.parquet", **columns)
    with pytest.raises(ValueError, match=message):
        core.ingest(bad, core.IngestConfig(store_dir=str(store_dir)))
    assert state(store_dir) == before
    assert len(F.get_online_features(F.open_store(store_dir), ["id-00060"])[F.INPUT_IDS][0]) > 0


def test_a_failed_online_write_rolls_everything_back(
    store_dir: Path, tmp_path: Path, tokenizer, reviews: pa.Table
) -> None:
    """The online write of newer features fails after their offline file was written: both are undone."""
    before = state(store_dir)
    newer = make_features(tokenizer, reviews, tmp_path / "newer.parquet", T0 + timedelta(days=1), max_seq_length=8)
    with locked_online_store(store_dir), pytest.raises(sqlite3.OperationalError, match="database is locked"):
        core.ingest(newer, core.IngestConfig(store_dir=str(store_dir)))
    assert state(store_dir) == before
    online = F.get_online_features(F.open_store(store_dir), ["id-00001"])
    assert len(online[F.INPUT_IDS][0]) > 8


def test_a_failed_first_ingest_leaves_no_definitions_and_no_rows(tmp_path: Path, features: Path) -> None:
    """Registering fails (the online store cannot create its table): no feature view, no offline rows."""
    fresh = tmp_path / "fresh"
    with locked_online_store(fresh), pytest.raises(sqlite3.OperationalError, match="database is locked"):
        core.ingest(features, core.IngestConfig(store_dir=str(fresh)))
    after = state(fresh)
    assert after["offline"] == [] and after["online"] == []
    with pytest.raises(ValueError, match="run the feast_ingest step first"):
        F.open_store(fresh)


def test_an_unwritable_store_path_is_a_clear_error(tmp_path: Path, features: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"Cannot write the feature store at .*a-file/store"):
        core.ingest(features, core.IngestConfig(store_dir=str(blocker / "store")))


def test_an_unwritable_offline_path_changes_nothing(store_dir: Path, features: Path, tmp_path: Path) -> None:
    before = state(store_dir)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"Cannot write the offline store at .*blocker/offline"):
        core.ingest(features, core.IngestConfig(store_dir=str(store_dir), offline_path=str(blocker / "offline")))
    assert state(store_dir) == before


# --- configuration ---------------------------------------------------------------------------------------


def test_the_configuration_is_chosen_by_name_or_path(tmp_path: Path) -> None:
    assert F.store_config_path("local").name == "feature_store.yaml"
    assert F.store_config_path("cluster").name == "feature_store.cluster.yaml"
    custom = tmp_path / "mine.yaml"
    custom.write_text((F.feature_repo_dir() / "feature_store.yaml").read_text())
    assert F.store_config_path(str(custom)) == custom
    with pytest.raises(ValueError, match=r"neither one of \['cluster', 'local'\]"):
        F.store_config_path("redis-please")


def test_cluster_configuration_needs_its_environment(
    tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEAST_REDIS_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("FEAST_REGISTRY_PATH", str(tmp_path / "registry" / "registry.db"))
    with pytest.raises(ValueError, match=r"not set: FEAST_REDIS_CONNECTION_STRING"):
        core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "store"), feast_config="cluster"))
    assert not (tmp_path / "registry" / "registry.db").exists()


def test_an_unreachable_online_store_leaves_no_registry(
    tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cluster configuration with Redis on a port nothing listens on."""
    registry = tmp_path / "registry" / "registry.db"
    monkeypatch.setenv("FEAST_REGISTRY_PATH", str(registry))
    monkeypatch.setenv("FEAST_REDIS_CONNECTION_STRING", "127.0.0.1:1")
    with pytest.raises(ValueError, match=r"unreachable"):
        core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "store"), feast_config="cluster"))
    assert not registry.exists()
    assert not (tmp_path / "store" / "data" / "offline").exists()


def test_open_store_before_any_ingest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"No feature store registry at .* run the feast_ingest step first"):
        F.open_store(tmp_path / "empty")


def test_unknown_features_and_splits_are_rejected(store_dir: Path) -> None:
    store = F.open_store(store_dir)
    with pytest.raises(ValueError, match=r"Unknown feature\(s\) \['attention_mask'\]"):
        F.get_online_features(store, ["id-00001"], ["attention_mask"])
    with pytest.raises(ValueError, match=r"Unknown split 'dev'"):
        F.get_split_features(store, "dev")


def test_the_local_configuration_needs_no_environment(tmp_path: Path) -> None:
    """With every FEAST_* variable unset (autouse fixture), the local configuration loads and ingests."""
    config = F.load_store_config(tmp_path, "local")
    assert (config.online_store.type, config.offline_store.type, config.project) == ("sqlite", "duckdb", "bert_reviews")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("project: [unclosed\n", r"--feast-config .* is not valid YAML"),
        ("- just\n- a list\n", r"--feast-config .*Invalid feature store configuration"),
        ("project: p\nprovider: local\nonline_store:\n  type: nosuch\n", r"--feast-config .*nosuch"),
        ("project: p\nregistry: ${NOT_SET_ANYWHERE}\n", r"--feast-config .*not set: NOT_SET_ANYWHERE"),
    ],
)
def test_validate_rejects_a_bad_feature_store_yaml_before_writing(tmp_path: Path, yaml_text: str, message: str) -> None:
    bad = tmp_path / "feature_store.yaml"
    bad.write_text(yaml_text)
    config = core.IngestConfig(store_dir=str(tmp_path / "store"), feast_config=str(bad))
    with pytest.raises(ValueError, match=message):
        config.validate()
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"feast_config": "no-such.yaml"}, r"--feast-config 'no-such.yaml': .*neither one of"),
        ({"online_batch_size": 0}, r"--online-batch-size"),
        ({"store_dir": " "}, r"--store-dir is empty"),
        ({"offline_path": "elsewhere"}, r"set twice: --offline-path 'elsewhere' and FEAST_OFFLINE_PATH='shared/x'"),
    ],
)
def test_validate_names_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, features: Path, changes: dict, message: str
) -> None:
    monkeypatch.setenv("FEAST_OFFLINE_PATH", "shared/x")
    config = core.IngestConfig(**{"store_dir": str(tmp_path / "store"), **changes})
    with pytest.raises(ValueError, match=message):
        config.validate()
    with pytest.raises(ValueError, match=message):
        core.ingest(features, config)
    assert not (tmp_path / "store" / "data").exists()


@pytest.mark.parametrize(
    ("argument", "environment", "expected"),
    [
        ("", "", "{store}/data/offline/review_features"),
        ("", "shared/offline", "{store}/shared/offline"),
        ("mine", "", "{store}/mine"),
        ("same", "same", "{store}/same"),
        ("/abs/dir", "", "/abs/dir"),
        ("", "s3://bucket/feast/reviews", "s3://bucket/feast/reviews"),
    ],
)
def test_one_rule_decides_the_offline_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argument: str, environment: str, expected: str
) -> None:
    monkeypatch.setenv("FEAST_OFFLINE_PATH", environment)
    store = tmp_path / "store"
    assert core.IngestConfig(str(store), offline_path=argument).offline_location() == expected.format(store=store)


def test_the_offline_path_from_the_environment_is_where_ingest_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, features: Path
) -> None:
    monkeypatch.setenv("FEAST_OFFLINE_PATH", "from-env")
    report = core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "s")))
    assert Path(report.offline_file).parent == tmp_path / "s" / "from-env"
    store = F.open_store(tmp_path / "s")
    assert F.offline_uri(store) == str(tmp_path / "s" / "from-env")
    assert sum(len(f) for f in F.get_training_features(store).values()) == 120


def _ingest_in_process(features: str, store: str) -> int:
    return core.ingest(features, core.IngestConfig(store_dir=store)).rows_written


def test_two_processes_ingesting_into_one_store_keep_both_rows(tmp_path: Path, tokenizer, reviews: pa.Table) -> None:
    """Two real processes ingest different reviews into the same (new) store at the same time."""
    other = reviews_table(80, seed=1, text="other {i}: the colour is {q}")
    other = other.set_column(0, schema.REVIEW_ID, pa.array([f"other-{i:05d}" for i in range(80)]))
    paths = [
        make_features(tokenizer, reviews, tmp_path / "a.parquet"),
        make_features(tokenizer, other, tmp_path / "b.parquet", T0 + timedelta(hours=1)),
    ]
    store = tmp_path / "shared-store"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = [pool.apply_async(_ingest_in_process, (str(path), str(store))) for path in paths]
        assert [r.get(timeout=600) for r in results] == [120, 80]
    opened = F.open_store(store)
    ids = sorted(rid for frame in F.get_training_features(opened).values() for rid in frame[schema.REVIEW_ID])
    assert ids == sorted([f"id-{i:05d}" for i in range(120)] + [f"other-{i:05d}" for i in range(80)])
    online = F.get_online_features(opened, ["id-00003", "other-00003", "other-00079"])
    assert all(len(v) > 0 for v in online[F.INPUT_IDS])


def test_real_reviews_online_equals_historical_equals_tokenizer(reviews_csv: Path, tokenizer, tmp_path: Path) -> None:
    """2,000 reviews of the course CSV through featurize and ingest; 100 of them read back both ways."""
    import hashlib

    raw = pd.read_csv(reviews_csv).dropna(subset=["Review Text", "Rating", "Class Name"]).sample(2000, random_state=5)
    stars = raw["Rating"].astype(int)
    reviews = pa.table(
        {
            schema.REVIEW_ID: [hashlib.sha1(str(i).encode()).hexdigest()[:16] for i in raw.index],
            schema.TEXT: raw["Review Text"].tolist(),
            schema.RATING: stars.tolist(),
            schema.LABEL: pa.array([-1 if s <= 2 else (0 if s == 3 else 1) for s in stars], pa.int8()),
            schema.FACET: raw["Class Name"].tolist(),
        }
    )
    features = make_features(tokenizer, reviews, tmp_path / "features.parquet", max_seq_length=128)
    core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "store")))
    store = F.open_store(tmp_path / "store")
    text_of = dict(zip(reviews[schema.REVIEW_ID].to_pylist(), reviews[schema.TEXT].to_pylist(), strict=True))
    sample = sorted(text_of)[::20]
    online = F.get_online_features(store, sample).set_index(schema.REVIEW_ID)
    entity_df = pd.DataFrame({schema.REVIEW_ID: sample, F.EVENT_TIMESTAMP: pd.Timestamp(T0 + timedelta(hours=1))})
    offline = F.get_historical_features(store, entity_df).set_index(schema.REVIEW_ID)
    for rid in sample:
        expected = tokenizer(text_of[rid], max_length=128, truncation=True)["input_ids"]
        assert online.loc[rid, F.INPUT_IDS] == offline.loc[rid, F.INPUT_IDS] == expected, rid


def test_training_features_hold_every_split_once(store_dir: Path, features: Path) -> None:
    splits = F.get_training_features(F.open_store(store_dir), features=[F.INPUT_IDS, F.LABEL_ID])
    written = pq.read_table(features).to_pandas()
    assert {s: len(f) for s, f in splits.items()} == written[F.SPLIT].value_counts().to_dict()
    assert list(splits["train"].columns) == [schema.REVIEW_ID, F.INPUT_IDS, F.LABEL_ID]
    ids = [rid for frame in splits.values() for rid in frame[schema.REVIEW_ID]]
    assert sorted(ids) == sorted(written[schema.REVIEW_ID])
