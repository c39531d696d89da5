"""The cluster Feast configuration (feature_repo/feature_store.cluster.yaml: Redis online store, DuckDB over
Parquet offline, file registry) against a real `redis-server` on a free loopback port.

Skipped, saying so, where the `redis-server` binary is absent (`.ci/run` installs Debian's package).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from components.common import features as F
from components.common import schema
from components.feast_ingest import core
from components.featurize import core as featurize
from tests.unit.test_feast_store import T0, make_features
from tests.unit.test_featurize import reviews_table


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One `redis-server` process without persistence; `stop` ends it (the fixture does at the end)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (Debian: apt-get install -y redis-server; .ci/run does)")
        self.port = _free_port()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"redis-server did not listen on port {self.port} within 30 s")

    @property
    def connection_string(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokenizer():
    return featurize.load_tokenizer("")


@pytest.fixture
def cluster_env(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The variables the cluster profile sets from its ConfigMap and Secret; returns the registry path."""
    registry = tmp_path / "pvc" / "registry.db"
    monkeypatch.setenv("FEAST_REGISTRY_PATH", str(registry))
    monkeypatch.setenv("FEAST_REDIS_CONNECTION_STRING", redis_server.connection_string)
    monkeypatch.setenv("FEAST_OFFLINE_PATH", "offline/reviews")
    return registry


def _ingest(features: Path, store: Path) -> core.IngestReport:
    return core.ingest(features, core.IngestConfig(store_dir=str(store), feast_config="cluster", online_batch_size=50))


def test_cluster_store_reads_back_from_redis_and_duckdb(tmp_path: Path, cluster_env: Path, tokenizer) -> None:
    reviews = reviews_table(120)
    features = make_features(tokenizer, reviews, tmp_path / "features.parquet")
    report = _ingest(features, tmp_path / "pvc")
    assert report.online_store["type"] == "redis" and report.online_store["location"].startswith("127.0.0.1:")
    assert report.online_write == "write_to_online_store (batches of 50 rows, not transactional)"
    assert Path(report.offline_file).parent == tmp_path / "pvc" / "offline" / "reviews" and cluster_env.is_file()

    store = F.open_store(tmp_path / "pvc", "cluster")
    sample = [f"id-{i:05d}" for i in range(0, 120, 9)]
    online = F.get_online_features(store, sample).set_index(schema.REVIEW_ID)
    entity_df = pd.DataFrame({schema.REVIEW_ID: sample, F.EVENT_TIMESTAMP: pd.Timestamp(T0 + timedelta(hours=1))})
    offline = F.get_historical_features(store, entity_df).set_index(schema.REVIEW_ID)
    texts = dict(zip(reviews[schema.REVIEW_ID].to_pylist(), reviews[schema.TEXT].to_pylist(), strict=True))
    for rid in sample:
        expected = tokenizer(texts[rid], max_length=64, truncation=True)["input_ids"]
        assert online.loc[rid, F.INPUT_IDS] == offline.loc[rid, F.INPUT_IDS] == expected
        assert online.loc[rid, schema.FACET] == offline.loc[rid, schema.FACET]
    assert F.LABEL_ID not in online.columns and F.SPLIT not in online.columns  # offline only (review_labels)
    assert sum(len(frame) for frame in F.get_training_features(store).values()) == 120


def test_newer_features_replace_the_online_values_in_redis(tmp_path: Path, cluster_env: Path, tokenizer) -> None:
    reviews = reviews_table(60, text="review {i}: the fabric is {q}, sizing runs small")
    _ingest(make_features(tokenizer, reviews, tmp_path / "a.parquet"), tmp_path / "pvc")
    later = make_features(tokenizer, reviews, tmp_path / "b.parquet", T0 + timedelta(days=1), max_seq_length=8)
    report = _ingest(later, tmp_path / "pvc")
    assert not report.registry_changed
    store = F.open_store(tmp_path / "pvc", "cluster")
    assert [len(ids) for ids in F.get_online_features(store, ["id-00001", "id-00059"])[F.INPUT_IDS]] == [8, 8]
    entity_df = pd.DataFrame({schema.REVIEW_ID: ["id-00001"], F.EVENT_TIMESTAMP: [pd.Timestamp(T0)]})
    assert len(F.get_historical_features(store, entity_df)[F.INPUT_IDS][0]) > 8  # the earlier version, offline


def test_redis_gone_before_ingest_changes_nothing(
    tmp_path: Path, cluster_env: Path, redis_server: RedisServer, tokenizer
) -> None:
    features = make_features(tokenizer, reviews_table(30), tmp_path / "features.parquet")
    _ingest(features, tmp_path / "pvc")
    registry = cluster_env.read_bytes()
    offline = sorted((tmp_path / "pvc" / "offline" / "reviews").iterdir())
    redis_server.stop()
    newer = make_features(tokenizer, reviews_table(30), tmp_path / "newer.parquet", T0 + timedelta(days=1))
    with pytest.raises(ValueError, match=r"online store \(redis at 127\.0\.0\.1:\d+\) is unreachable"):
        _ingest(newer, tmp_path / "pvc")
    assert cluster_env.read_bytes() == registry
    assert sorted((tmp_path / "pvc" / "offline" / "reviews").iterdir()) == offline


def test_a_redis_write_refused_mid_ingest_undoes_the_first_ingest(
    tmp_path: Path, cluster_env: Path, redis_server: RedisServer, tokenizer
) -> None:
    """Redis answers reads (validation passes) but refuses writes (`maxmemory` reached, no eviction), after
    `apply` registered the definitions: the ingest fails, its offline file and its definitions are removed."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    features = make_features(tokenizer, reviews_table(30), tmp_path / "features.parquet")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        _ingest(features, tmp_path / "pvc")
    assert list((tmp_path / "pvc" / "offline" / "reviews").glob("*.parquet")) == []
    assert cluster_env.is_file()  # apply had written the registry; the undo deleted what it registered
    with pytest.raises(ValueError, match=r"No feature view 'review_bert_features' .* run the feast_ingest step first"):
        F.open_store(tmp_path / "pvc", "cluster")
