"""feast_ingest core and the read-back functions, on a real embedded Feast store (SQLite + Parquet).

Consistency (online == historical == tokenizer), idempotent re-ingest, point-in-time reads, and that a
failed ingest leaves the registry and the earlier features exactly as they were.
"""

from __future__ import annotations

import os
import sqlite3
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
    offline = data / "offline" / "review_features.parquet"
    return {
        "registry": (data / "registry.db").read_bytes() if (data / "registry.db").exists() else None,
        "offline": pq.read_table(offline).to_pylist() if offline.exists() else None,
        "online": rows,
        "files": sorted(p.name for p in data.rglob("*")) if data.exists() else [],
    }


# --- names -------------------------------------------------------------------------------------------


def test_feature_repo_names_match_the_shared_constants() -> None:
    from feature_repo import review_features as repo

    view = repo.review_bert_features
    assert view.name == F.FEATURE_VIEW and repo.review.name == F.ENTITY
    assert repo.review.join_key == schema.REVIEW_ID
    assert [f.name for f in view.features] == list(F.FEATURES)
    assert view.batch_source.timestamp_field == F.EVENT_TIMESTAMP
    assert repo.DEFAULT_OFFLINE_PATH == F.DEFAULT_OFFLINE_PATH
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
        for name in (F.LABEL_ID, F.SPLIT, schema.FACET):
            assert online.loc[rid, name] == offline.loc[rid, name]


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


def test_unknown_ids_read_back_as_missing(store_dir: Path) -> None:
    frame = F.get_online_features(F.open_store(store_dir), ["no-such-review"])
    assert frame[F.INPUT_IDS].tolist() == [None] and frame[F.LABEL_ID].isna().all()


def test_the_bulk_sqlite_path_writes_what_feasts_writer_writes(tmp_path: Path, features: Path) -> None:
    bulk = core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "a")))
    feast = core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "b"), sqlite_bulk=False))
    assert (bulk.online_write, feast.online_write) == ("sqlite-bulk", "feast-online_write_batch")
    assert state(tmp_path / "a")["online"] == state(tmp_path / "b")["online"]
    assert state(tmp_path / "a")["offline"] == state(tmp_path / "b")["offline"]


def test_report_names_view_rows_and_location(tmp_path: Path, features: Path) -> None:
    report = core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "s")))
    assert report.feature_view == "review_bert_features" and report.rows_written == 120 == report.rows_offline
    assert report.rows_per_split == {"train": 108, "validation": 6, "test": 6}
    assert report.online_store == {"type": "sqlite", "path": str(tmp_path / "s" / "data" / "online_store.db")}
    assert report.offline_uri == str(tmp_path / "s" / "data" / "offline" / "review_features.parquet")
    assert (tmp_path / "s" / "feature_store.yaml").is_file() and (tmp_path / "s" / "review_features.py").is_file()


# --- idempotence and history ---------------------------------------------------------------------------


def test_reingesting_the_same_features_is_idempotent(store_dir: Path, features: Path) -> None:
    before = state(store_dir)
    core.ingest(features, core.IngestConfig(store_dir=str(store_dir)))
    after = state(store_dir)
    assert after["offline"] == before["offline"] and after["online"] == before["online"]
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


def test_a_failure_after_apply_rolls_everything_back(
    store_dir: Path, tmp_path: Path, tokenizer, reviews: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulates the disk failing while the offline file is renamed into place, after the registry was
    applied and the online rows written (a real disk error cannot be provoked here: tests run as root)."""
    before = state(store_dir)
    newer = make_features(tokenizer, reviews, tmp_path / "newer.parquet", T0 + timedelta(days=1), max_seq_length=8)

    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("review_features.parquet"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(core.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        core.ingest(newer, core.IngestConfig(store_dir=str(store_dir)))
    monkeypatch.undo()
    assert state(store_dir) == before
    online = F.get_online_features(F.open_store(store_dir), ["id-00001"])
    assert len(online[F.INPUT_IDS][0]) > 8


def test_a_failed_first_ingest_leaves_no_registry(
    tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same simulated disk failure on an empty store: no registry (and no features) afterwards."""
    monkeypatch.setattr(core, "write_sqlite_rows", lambda *args: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        core.ingest(features, core.IngestConfig(store_dir=str(tmp_path / "fresh")))
    after = state(tmp_path / "fresh")
    assert after["registry"] is None and after["offline"] is None and after["online"] == []


def test_an_unwritable_store_path_is_a_clear_error(tmp_path: Path, features: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"Cannot write the feature store at .*a-file/store"):
        core.ingest(features, core.IngestConfig(store_dir=str(blocker / "store")))


def test_an_unwritable_offline_path_changes_nothing(store_dir: Path, features: Path, tmp_path: Path) -> None:
    before = state(store_dir)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"Cannot write the offline store file"):
        core.ingest(features, core.IngestConfig(store_dir=str(store_dir), offline_path=str(blocker / "f.parquet")))
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


def test_bulk_layout_self_check_agrees_with_this_feast(features: Path, tmp_path: Path) -> None:
    config = F.load_store_config(tmp_path, "local")
    from feature_repo import review_features

    view = review_features.definitions()[1]
    assert core.sqlite_bulk_matches_feast(config, view, core.read_features(features).slice(0, 5))


def test_environment_is_not_needed_for_the_local_configuration(tmp_path: Path) -> None:
    for name in ("FEAST_REGISTRY_PATH", "FEAST_REDIS_CONNECTION_STRING"):
        assert name not in (F.feature_repo_dir() / "feature_store.yaml").read_text() or name not in os.environ
    config = F.load_store_config(tmp_path, "local")
    assert config.online_store.type == "sqlite" and config.project == "bert_reviews"


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_token_id_encoding_equals_protobuf(seed: int) -> None:
    import numpy as np
    from feast.protos.feast.types.Value_pb2 import Int32List, Value

    rng = np.random.default_rng(seed)
    edges = [[0], [127], [128], [16383], [16384], [2**21 - 1], [2**21], [2**28 - 1], [2**28], [2**31 - 1]]
    rows = [rng.integers(0, 2**31 - 1 if i % 7 == 0 else 50_000, rng.integers(1, 600)).tolist() for i in range(500)]
    rows += edges
    array = pa.array(rows, pa.list_(pa.int32()))
    expected = [Value(int32_list_val=Int32List(val=r)).SerializeToString() for r in rows]
    assert core.int32_list_value_bytes(array) == expected
    assert core.int32_list_value_bytes(array.slice(3, 40)) == expected[3:43]
    assert core.int32_list_value_bytes(pa.chunked_array([array.slice(0, 5), array.slice(5, 9)])) == expected[:14]


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
