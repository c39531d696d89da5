"""Feast ingest and read speed: our `feast_ingest` vs. `FeatureStore.materialize()`, both through public calls.

``--rows`` feature rows (default 100,000: token-id lists of 4-128 ids, about 76 on average like the
course reviews) in the embedded configuration (SQLite online store, DuckDB over Parquet offline store).

- ours (*value*): `components.feast_ingest.core.ingest` into an empty store - validation, the offline
  Parquet file, `FeatureStore.apply` and `FeatureStore.write_to_online_store`, end to end; rows/s.  Also
  reported: a re-ingest of the same rows (offline file and registry unchanged, online upserts).
- baseline: the same definitions applied and the same offline Parquet in place, then
  `FeatureStore.materialize(start, end)` into the SQLite online store (timed alone); rows/s.
- online reads: ``--reads`` single-review `FeatureStore.get_online_features` calls (all four features)
  on the ingested store; p50/p99 latency in ms (goal: p99 <= 10 ms).
- training reads: `get_training_features` (one point-in-time read of every split) on ``--pit-rows`` rows,
  with the DuckDB offline store and with Feast's file (Dask) offline store; seconds.

Every figure is the median of ``--repeat`` runs, each ingest on a fresh store.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench._util import median_seconds, result


def write_features(path: Path, rows: int, seed: int = 0) -> datetime:
    """Synthetic features in featurize's schema; returns their event timestamp."""
    from components.feast_ingest.core import FEATURES_SCHEMA

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.gamma(4.0, 19.0, rows).astype(np.int32) + 4, 4, 128)
    offsets = np.zeros(rows + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = rng.integers(1000, 30000, int(offsets[-1]), dtype=np.int32)
    when = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    split = rng.choice(np.array(["train", "validation", "test"]), rows, p=[0.9, 0.05, 0.05])
    table = pa.table(
        [
            pa.array([f"{i:016x}" for i in rng.permutation(rows * 7)[:rows]], pa.string()),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
            pa.array(rng.integers(0, 3, rows), pa.int64()),
            pa.array(split, pa.string()),
            pa.array(rng.choice(np.array(["Dresses", "Knits", "Blouses", "Pants"]), rows), pa.string()),
            pa.repeat(pa.scalar(when, pa.timestamp("us", tz="UTC")), rows),
        ],
        schema=FEATURES_SCHEMA,
    )
    pq.write_table(table, path)
    return when


def _warm_up() -> None:
    """Import what both paths import, so neither pays for it inside a timing."""
    import feast.infra.offline_stores.dask
    import feast.infra.offline_stores.duckdb
    import feast.infra.online_stores.sqlite  # noqa: F401

    import components.feast_ingest.core  # noqa: F401
    import feature_repo.review_features  # noqa: F401


def _ingest(features: Path, store_dir: Path) -> float:
    from components.feast_ingest import core

    start = time.perf_counter()
    core.ingest(features, core.IngestConfig(store_dir=str(store_dir)))
    return time.perf_counter() - start


def _materialize(features: Path, store_dir: Path, when: datetime) -> float:
    """Feast's own path: apply, offline file in place, then `materialize` (timed)."""
    from components.common import features as F
    from components.feast_ingest import core
    from feature_repo import review_features

    store = F.feature_store(store_dir)
    location = F.offline_location(store_dir)
    Path(location).mkdir(parents=True, exist_ok=True)
    pq.write_table(core.read_features(features), Path(location) / "features.parquet")
    store.apply(review_features.definitions(location))
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # materialize prints progress; stdout is for the JSON result
        store.materialize(when - timedelta(days=1), when + timedelta(days=1))
    return time.perf_counter() - start


def _read_latencies(store_dir: Path, ids: list[str], reads: int) -> list[float]:
    from components.common import features as F

    store = F.open_store(store_dir)
    refs = [f"{F.FEATURE_VIEW}:{f}" for f in F.FEATURES]
    rng = random.Random(0)
    for rid in ids[:20]:  # warm up (registry cache, connection)
        store.get_online_features(features=refs, entity_rows=[{"review_id": rid}]).to_dict()
    times = []
    for _ in range(reads):
        rid = rng.choice(ids)
        start = time.perf_counter()
        out = store.get_online_features(features=refs, entity_rows=[{"review_id": rid}]).to_dict()
        times.append(time.perf_counter() - start)
        if out["input_ids"][0] is None:
            raise RuntimeError(f"review {rid} missing from the online store")
    return times


def _training_reads(root: Path, rows: int, repeat: int) -> dict[str, float]:
    """Median seconds of `get_training_features` on ``rows`` rows, per offline store type (after one warm call)."""
    from components.common import features as F

    features = root / "pit-features.parquet"
    write_features(features, rows, seed=1)
    store_dir = root / "pit-store"
    _ingest(features, store_dir)
    seconds = {}
    for kind in ("duckdb", "file"):
        yaml = root / f"feature_store.{kind}.yaml"
        yaml.write_text(F.store_config_path("local").read_text().replace("type: duckdb", f"type: {kind}"))
        store = F.open_store(store_dir, str(yaml))
        counts = {s: len(f) for s, f in F.get_training_features(store).items()}
        if sum(counts.values()) != rows:
            raise RuntimeError(f"{kind}: read {counts}, expected {rows} rows")
        seconds[kind] = median_seconds(lambda store=store: F.get_training_features(store), repeat)[0]
    return seconds


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench feast")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--pit-rows", type=int, default=10_000, help="rows for the training-read comparison")
    args = parser.parse_args(argv)
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.pop("FEAST_OFFLINE_PATH", None)

    ours, reingest, baseline = [], [], []
    _warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        features = root / "features.parquet"
        when = write_features(features, args.rows)
        ids = pq.read_table(features, columns=["review_id"])["review_id"].to_pylist()
        for i in range(args.repeat):
            ours.append(_ingest(features, root / f"ours-{i}"))
            reingest.append(_ingest(features, root / f"ours-{i}"))
            baseline.append(_materialize(features, root / f"materialize-{i}", when))
        latencies = sorted(_read_latencies(root / "ours-0", ids, args.reads))
        training = _training_reads(root, args.pit_rows, args.repeat) if args.pit_rows else {}

    def rate(samples: list[float]) -> float:
        return args.rows / statistics.median(samples)

    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return result(
        "feast",
        rate(ours),
        rate(baseline),
        "rows/s",
        rows=args.rows,
        ingest_seconds=[round(x, 2) for x in ours],
        materialize_seconds=[round(x, 2) for x in baseline],
        reingest_rows_per_s=round(rate(reingest), 1),
        online_lookup_p50_ms=round(p(0.50), 3),
        online_lookup_p99_ms=round(p(0.99), 3),
        online_lookup_max_ms=round(latencies[-1] * 1000, 3),
        reads=args.reads,
        training_read_rows=args.pit_rows,
        training_read_seconds_duckdb=round(training["duckdb"], 2) if training else None,
        training_read_seconds_file_dask=round(training["file"], 2) if training else None,
        online_store="sqlite",
        offline_store="duckdb",
        repeat=args.repeat,
    )
