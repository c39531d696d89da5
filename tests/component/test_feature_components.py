"""featurize_reviews and ingest_features called as the KFP executor calls them, and the Feast CLI on the repo."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp import dsl

from components.common import features as F
from components.feast_ingest.component import ingest_features
from components.featurize.component import featurize_reviews
from tests.unit.test_featurize import reviews_table


def _artifact(kind: type[dsl.Artifact], tmp_path: Path, name: str) -> dsl.Artifact:
    return kind(uri=str(tmp_path / name))


@pytest.fixture
def featurized(tmp_path: Path) -> dict[str, dsl.Artifact]:
    source = _artifact(dsl.Dataset, tmp_path, "reviews")
    pq.write_table(reviews_table(150), source.path)
    outputs = {
        "features": _artifact(dsl.Dataset, tmp_path, "features"),
        "report": _artifact(dsl.Artifact, tmp_path, "featurize-report"),
        "metrics": _artifact(dsl.Metrics, tmp_path, "featurize-metrics"),
        "summary_md": _artifact(dsl.Markdown, tmp_path, "featurize-summary"),
    }
    featurize_reviews.python_func(
        reviews=source,
        base_model="",
        max_seq_length=32,
        validation_fraction=0.1,
        test_fraction=0.1,
        seed=3,
        event_timestamp="2026-11-22T10:00:00Z",
        **outputs,
    )
    return outputs


def test_featurize_reviews_writes_features_report_and_metrics(featurized: dict[str, dsl.Artifact]) -> None:
    table = pq.read_table(featurized["features"].path)
    assert tuple(table.column_names) == F.FEATURE_COLUMNS and table.num_rows == 150
    report = json.loads(Path(featurized["report"].path).read_text())
    assert report["rows_per_split"] == {"train": 120, "validation": 15, "test": 15}
    assert report["max_seq_length"] == 32 and report["tokenizer"]["class"] == "BertTokenizer"
    assert featurized["metrics"].metadata["rows_test"] == 15
    assert featurized["metrics"].metadata["tokens_max"] <= 32


def test_ingest_features_writes_the_store_and_returns_its_location(
    featurized: dict[str, dsl.Artifact], tmp_path: Path
) -> None:
    report = _artifact(dsl.Artifact, tmp_path, "ingest-report")
    metrics = _artifact(dsl.Metrics, tmp_path, "ingest-metrics")
    outputs = ingest_features.python_func(
        features=featurized["features"],
        store_dir=str(tmp_path / "feature_store"),
        feast_config="local",
        offline_path="",
        report=report,
        metrics=metrics,
        summary_md=_artifact(dsl.Markdown, tmp_path, "ingest-summary"),
    )
    assert outputs.feature_view == "review_bert_features" and outputs.rows_written == 150
    assert outputs.store == str(tmp_path / "feature_store")
    written = json.loads(Path(report.path).read_text())
    assert written["online_store"]["type"] == "sqlite" and written["rows_per_split"]["validation"] == 15
    assert metrics.metadata["rows_written"] == 150
    store = F.open_store(outputs.store)
    assert F.get_online_features(store, ["id-00007"])[F.INPUT_IDS][0]


@pytest.mark.parametrize(
    ("arguments", "environment", "message"),
    [
        ({"feast_config": "no-such-config.yaml"}, {}, r"--feast-config 'no-such-config.yaml'"),
        ({"offline_path": "mine"}, {"FEAST_OFFLINE_PATH": "theirs"}, r"set twice: --offline-path 'mine'"),
        (
            {"feast_config": "cluster"},
            {"FEAST_REGISTRY_PATH": "registry.db"},
            r"--feast-config 'cluster'.* not set: FEAST_REDIS_CONNECTION_STRING",
        ),
    ],
)
def test_ingest_features_rejects_bad_options_before_writing(
    featurized: dict[str, dsl.Artifact],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arguments: dict,
    environment: dict,
    message: str,
) -> None:
    for name in ("FEAST_OFFLINE_PATH", "FEAST_REGISTRY_PATH", "FEAST_REDIS_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    report = _artifact(dsl.Artifact, tmp_path, "ingest-report")
    with pytest.raises(ValueError, match=message):
        ingest_features.python_func(
            features=featurized["features"],
            **{"store_dir": str(tmp_path / "feature_store"), "feast_config": "local", "offline_path": "", **arguments},
            report=report,
            metrics=_artifact(dsl.Metrics, tmp_path, "ingest-metrics"),
            summary_md=_artifact(dsl.Markdown, tmp_path, "ingest-summary"),
        )
    assert not Path(report.path).exists() and not (tmp_path / "feature_store").exists()


def test_ingest_features_takes_the_options_of_ingest_config() -> None:
    """The component's scalar parameters are IngestConfig fields (options are declared once, in core)."""
    from dataclasses import fields

    from components.feast_ingest.core import IngestConfig

    parameters = set(ingest_features.component_spec.inputs) - {"features"}
    assert parameters <= {f.name for f in fields(IngestConfig)}
    assert {"store_dir", "feast_config", "offline_path"} <= parameters


# --- Feast's own CLI -----------------------------------------------------------------------------------


def _feast(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("feast")
    if not script.exists():
        pytest.skip(f"the feast CLI is not installed beside {sys.executable}")
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300, check=False)


def test_feast_cli_plans_and_applies_the_feature_repository(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    shutil.copytree(F.feature_repo_dir(), repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    plan = _feast("-c", str(repo), "plan")
    assert plan.returncode == 0, plan.stderr
    assert "review_bert_features" in plan.stdout
    apply = _feast("-c", str(repo), "apply")
    assert apply.returncode == 0, apply.stderr
    assert "Created feature view review_bert_features" in apply.stdout
    assert (repo / "data" / "registry.db").is_file()


def test_feast_cli_sees_no_changes_on_an_ingested_store(featurized: dict[str, dsl.Artifact], tmp_path: Path) -> None:
    """The store directory ingest writes is a Feast repository holding exactly the definitions."""
    store = tmp_path / "feature_store"
    ingest_features.python_func(
        features=featurized["features"],
        store_dir=str(store),
        feast_config="local",
        offline_path="",
        report=_artifact(dsl.Artifact, tmp_path, "r"),
        metrics=_artifact(dsl.Metrics, tmp_path, "m"),
        summary_md=_artifact(dsl.Markdown, tmp_path, "s"),
    )
    plan = _feast("-c", str(store), "plan")
    assert plan.returncode == 0, plan.stderr
    assert "No changes to registry" in plan.stdout
