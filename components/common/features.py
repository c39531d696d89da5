"""The BERT feature table and the Feast feature store: names, configuration, and reading features back.

Training reads the splits point-in-time correctly with `get_training_features` /
`get_split_features` (Feast's `get_historical_features`, on Feast's DuckDB offline store), labels and
splits included; the model server (`serving.features`) reads single reviews' model inputs with
`get_online_features`, which serves `ONLINE_FEATURES` only: the labels' view (`LABEL_VIEW`) is offline only
(``online=False``).  Both go through Feast's public `FeatureStore` API, configured from the project's Feast
repository (`feature_repo/`) with the store's data under a store directory.

Where the offline data lives is decided in one place, `feature_repo.review_features.offline_path`
(re-exported here as `offline_location`): the step's explicit offline path, else `FEAST_OFFLINE_PATH`,
else `DEFAULT_OFFLINE_PATH` under the store directory.

Feast is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from components.common import schema

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

# --- The feature table written by `featurize` and ingested by `feast_ingest` ---------------------

INPUT_IDS = "input_ids"
LABEL_ID = "label_id"
SPLIT = "split"
EVENT_TIMESTAMP = "event_timestamp"
#: Split names, in order.
SPLITS = ("train", "validation", "test")
#: Columns of the features Parquet, in order.
FEATURE_COLUMNS = (schema.REVIEW_ID, INPUT_IDS, LABEL_ID, SPLIT, schema.FACET, EVENT_TIMESTAMP)
#: Arrow schema of the features Parquet (written by featurize, validated and ingested by feast_ingest).
FEATURES_SCHEMA = pa.schema(
    [
        (schema.REVIEW_ID, pa.string()),
        (INPUT_IDS, pa.list_(pa.int32())),
        (LABEL_ID, pa.int64()),
        (SPLIT, pa.string()),
        (schema.FACET, pa.string()),
        (EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC")),
    ]
)

# --- Feast names (the same literals as feature_repo/review_features.py; a unit test keeps them equal) -

ENTITY = "review"
FEATURE_VIEW = "review_bert_features"
#: The offline-only view (``online=False``) of what training and evaluation need beside the inputs.
LABEL_VIEW = "review_labels"
#: Features of `FEATURE_VIEW`, in order: the ones the online store holds (model inputs and the facet).
ONLINE_FEATURES = (INPUT_IDS, schema.FACET)
#: Features of `LABEL_VIEW`, in order: never in the online store.
LABEL_FEATURES = (LABEL_ID, SPLIT)
#: Every feature, for historical (training) reads (the entity key `review_id` and the timestamp are not features).
FEATURES = (INPUT_IDS, LABEL_ID, SPLIT, schema.FACET)
#: Which feature view holds each feature.
VIEW_OF = {**dict.fromkeys(ONLINE_FEATURES, FEATURE_VIEW), **dict.fromkeys(LABEL_FEATURES, LABEL_VIEW)}
#: Where the offline data lives, relative to the store directory, unless configured otherwise: a directory of
#: Parquet files, one per ingested features table (see `offline_location`).
DEFAULT_OFFLINE_PATH = "data/offline/review_features"
#: Named configurations of the project's feature repository; anything else is a path to a feature_store.yaml.
STORE_CONFIGS = {"local": "feature_store.yaml", "cluster": "feature_store.cluster.yaml"}

_UNRESOLVED = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def feature_repo_dir() -> Path:
    """The project's Feast feature repository (`feature_repo/`, shipped with the package)."""
    import feature_repo

    return Path(feature_repo.__file__).resolve().parent


def store_config_path(feast_config: str) -> Path:
    """The feature_store.yaml that ``feast_config`` names: `local`, `cluster`, or a path to a YAML file.

    Raises:
        ValueError: The name is unknown and no such file exists.
    """
    name = (feast_config or "local").strip()
    if name in STORE_CONFIGS:
        return feature_repo_dir() / STORE_CONFIGS[name]
    path = Path(name).expanduser()
    if not path.is_file():
        raise ValueError(
            f"Feature store configuration {feast_config!r} is neither one of {sorted(STORE_CONFIGS)} nor an "
            "existing feature_store.yaml file; pass --feast-config local, cluster or a YAML path."
        )
    return path.resolve()


def close_duckdb_connection() -> None:
    """Disconnect ibis's default DuckDB connection, the one Feast's DuckDB offline store reads and writes
    through (``ibis.read_parquet``, ``ibis.memtable``), if one was opened.

    Registered with `atexit` by `load_store_config`. DuckDB's Python module (nanobind since duckdb 2.0) checks
    at interpreter shutdown for its objects still alive and prints a ``nanobind: leaked …`` block for each
    process; ibis keeps this connection in ``ibis.options.default_backend`` until the very end, so without this
    every process that read the offline store printed one. Harmless to call twice (a later use reconnects).
    """
    ibis = sys.modules.get("ibis")
    backend = getattr(getattr(ibis, "options", None), "default_backend", None)
    if backend is None:
        return
    ibis.options.default_backend = None
    with contextlib.suppress(Exception):  # at exit: a connection that is already gone is fine
        backend.disconnect()


def load_store_config(store_dir: str | Path, feast_config: str = "local") -> RepoConfig:
    """Feast's `RepoConfig` for a store whose relative paths resolve under ``store_dir``.

    ``${VAR}`` references in the YAML are filled from the environment (as the `feast` CLI does); one
    that is left unset is an error naming it, before anything connects or writes.

    Raises:
        ValueError: Unset variables, an invalid configuration, or a missing client library for the
            configured online store (e.g. `redis` for the cluster configuration).
    """
    import yaml
    from feast.errors import FeastError, FeastExtrasDependencyImportError, FeastModuleImportError
    from feast.repo_config import FeastConfigError, load_repo_config

    atexit.unregister(close_duckdb_connection)  # once per process
    atexit.register(close_duckdb_connection)
    yaml_path = store_config_path(feast_config)
    unset = sorted({m.group(1) for m in _UNRESOLVED.finditer(os.path.expandvars(yaml_path.read_text()))})
    if unset:
        raise ValueError(
            f"Feature store configuration {yaml_path} uses environment variable(s) that are not set: "
            f"{', '.join(unset)}. Set them (the cluster profile does, from its ConfigMap/Secret) or choose "
            "--feast-config local."
        )
    try:
        config = load_repo_config(Path(store_dir).resolve(), yaml_path)
        # Building the store configs imports their client libraries (redis, duckdb + ibis).
        config.online_store  # noqa: B018
        config.offline_store  # noqa: B018
    except (FeastExtrasDependencyImportError, FeastModuleImportError, ImportError) as error:
        raise ValueError(
            f"A store configured in {yaml_path} needs a client library that is not installed ({error}); "
            "the project's dependencies include redis, duckdb and ibis-framework: reinstall them."
        ) from error
    except yaml.YAMLError as error:
        raise ValueError(f"Feature store configuration {yaml_path} is not valid YAML: {error}") from error
    except (FeastConfigError, FeastError, TypeError) as error:
        raise ValueError(f"Invalid feature store configuration {yaml_path}: {error}") from error
    return config


def offline_location(store_dir: str | Path, offline_path: str = "") -> str:
    """The offline data's location for a store: an absolute directory, or an `s3://`-style URI.

    The one rule (`feature_repo.review_features.offline_path`): ``offline_path`` when given, else the
    `FEAST_OFFLINE_PATH` environment variable (the cluster profile's ConfigMap sets it), else
    `DEFAULT_OFFLINE_PATH`; relative paths resolve under ``store_dir``.

    Raises:
        ValueError: ``offline_path`` and `FEAST_OFFLINE_PATH` are both set and differ.
    """
    from feature_repo import review_features

    return review_features.offline_path(Path(store_dir).expanduser(), offline_path)


def feature_store(store_dir: str | Path, feast_config: str = "local") -> FeatureStore:
    """A Feast `FeatureStore` whose repository directory is ``store_dir`` (may be empty yet)."""
    from feast import FeatureStore

    root = Path(store_dir).expanduser().resolve()
    return FeatureStore(repo_path=str(root), config=load_store_config(root, feast_config))


def open_store(store_dir: str | Path, feast_config: str = "local") -> FeatureStore:
    """A Feast `FeatureStore` on the store under ``store_dir`` (what `feast_ingest` wrote).

    Raises:
        ValueError: The configuration is invalid (see `load_store_config`) or nothing was ingested there.
    """
    from feast.errors import FeatureViewNotFoundException

    root = Path(store_dir).expanduser().resolve()
    config = load_store_config(root, feast_config)
    registry = config.registry
    if getattr(registry, "registry_type", "file") == "file" and "://" not in str(registry.path):
        path = Path(registry.path)
        path = path if path.is_absolute() else root / path
        if not path.is_file():  # Feast would create an empty registry here; reading must not write
            raise ValueError(
                f"No feature store registry at {path} ({feast_config}): run the feast_ingest step first "
                f"(feature view {FEATURE_VIEW!r})."
            )
    store = feature_store(store_dir, feast_config)
    for view in (FEATURE_VIEW, LABEL_VIEW):
        try:
            store.get_feature_view(view)
        except FeatureViewNotFoundException as error:
            raise ValueError(
                f"No feature view {view!r} in the feature store at {store_dir} ({feast_config}): "
                "run the feast_ingest step first (a store ingested before the labels had a view of their own "
                "needs one more ingest)."
            ) from error
    return store


def _feature_refs(features: Sequence[str]) -> list[str]:
    """Feast's ``view:feature`` references of ``features``."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(
            f"Unknown feature(s) {unknown}; {FEATURE_VIEW} has {list(ONLINE_FEATURES)}, "
            f"{LABEL_VIEW} {list(LABEL_FEATURES)}."
        )
    return [f"{VIEW_OF[f]}:{f}" for f in features]


def _as_int_lists(values: Sequence[Any]) -> list[list[int] | None]:
    return [None if v is None else [int(i) for i in v] for v in values]


def get_online_features(
    store: FeatureStore, review_ids: Sequence[str], features: Sequence[str] = ONLINE_FEATURES
) -> pd.DataFrame:
    """Features of single reviews from the online store (serving, consistency check).

    Args:
        store: From `open_store`.
        review_ids: Entity keys to read.
        features: Which of `ONLINE_FEATURES` (default: all).

    Returns:
        One row per id, in the order given: `review_id` and the features; `input_ids` as lists of ints.
        Ids the store does not hold get missing values (None).

    Raises:
        ValueError: A feature that is not served online (a label: read it with `get_historical_features`).
    """
    import pandas as pd

    offline_only = [f for f in features if f in LABEL_FEATURES]
    if offline_only:
        raise ValueError(
            f"{offline_only} are not served online: {LABEL_VIEW} is an offline-only feature view (online=False); "
            "read labels and splits with get_historical_features / get_training_features."
        )
    rows = [{schema.REVIEW_ID: str(rid)} for rid in review_ids]
    result = store.get_online_features(features=_feature_refs(features), entity_rows=rows).to_dict()
    frame = pd.DataFrame({schema.REVIEW_ID: [r[schema.REVIEW_ID] for r in rows]})
    for feature in features:
        values = result[feature]
        frame[feature] = _as_int_lists(values) if feature == INPUT_IDS else values
    return frame


def get_historical_features(
    store: FeatureStore, entity_df: pd.DataFrame, features: Sequence[str] = FEATURES
) -> pd.DataFrame:
    """Point-in-time correct features for ``entity_df`` (`review_id`, `event_timestamp`) from the offline store.

    Each entity row gets the latest feature values whose event timestamp is not after its own.

    Returns:
        ``entity_df``'s rows (sorted by review_id, then event_timestamp) with the features added;
        `input_ids` as lists of ints.
    """
    missing = {schema.REVIEW_ID, EVENT_TIMESTAMP} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df needs columns {sorted(missing)} (review ids and the as-of timestamps).")
    frame = store.get_historical_features(entity_df=entity_df, features=_feature_refs(features)).to_df()
    frame = frame.sort_values([schema.REVIEW_ID, EVENT_TIMESTAMP], kind="stable").reset_index(drop=True)
    if INPUT_IDS in frame:
        frame[INPUT_IDS] = _as_int_lists(frame[INPUT_IDS].tolist())
    return frame


def offline_uri(store: FeatureStore) -> str:
    """The (resolved) location of the feature view's offline data: a directory of Parquet files."""
    from feast.infra.offline_stores.file_source import FileSource

    source = store.get_feature_view(FEATURE_VIEW).batch_source
    if not isinstance(source, FileSource):
        raise ValueError(f"{FEATURE_VIEW} reads from {type(source).__name__}, not Parquet files (FileSource).")
    return FileSource.get_uri_for_file_path(store.repo_path, source.path)


def get_training_features(
    store: FeatureStore,
    as_of: datetime | None = None,
    features: Sequence[str] = FEATURES,
) -> dict[str, pd.DataFrame]:
    """Every split's reviews with their features as they were at ``as_of`` (default: now), in one read.

    The review ids come from the offline data (those with features at ``as_of``); the features from
    Feast's point-in-time join (`get_historical_features`), so a later re-featurization does not leak
    into an earlier snapshot.  One Feast call for all splits.

    Returns:
        {split: frame} for train, validation and test; one row per review, sorted by review_id, with
        `review_id` and ``features``; `input_ids` as lists of ints.
    """
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    _feature_refs(features)
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    table = pq.read_table(offline_uri(store), columns=[schema.REVIEW_ID, EVENT_TIMESTAMP])
    table = table.filter(pc.less_equal(table[EVENT_TIMESTAMP], as_of))
    ids = sorted(set(table[schema.REVIEW_ID].to_pylist()))
    columns = [schema.REVIEW_ID, *features]
    if not ids:
        empty = pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
        return {split: empty.copy() for split in SPLITS}
    entity_df = pd.DataFrame({schema.REVIEW_ID: pd.Series(ids, dtype=object), EVENT_TIMESTAMP: pd.Timestamp(as_of)})
    frame = get_historical_features(store, entity_df, list(dict.fromkeys([*features, SPLIT])))
    return {split: frame.loc[frame[SPLIT] == split, columns].reset_index(drop=True) for split in SPLITS}


def get_split_features(
    store: FeatureStore,
    split: str,
    as_of: datetime | None = None,
    features: Sequence[str] = FEATURES,
) -> pd.DataFrame:
    """One split of `get_training_features` (reads all splits; call that one when you need several)."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    return get_training_features(store, as_of, features)[split]
