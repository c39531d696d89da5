"""train_classifier and evaluate_classifier called as the KFP executor calls them, on a real Feast store
(featurize + feast_ingest on synthetic reviews) and a real embedded MLflow store; a tiny random BERT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kfp import compiler, dsl

from components.common import tracking
from components.evaluate.component import evaluate_classifier
from components.train.component import train_classifier
from tests import testing
from tests.stores import synthetic_feature_store


def _artifact(kind: type[dsl.Artifact], tmp_path: Path, name: str) -> dsl.Artifact:
    return kind(uri=str(tmp_path / name))


@pytest.fixture(autouse=True)
def _private_mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty tracking URI means the user-level store: point it into the test's directory."""
    monkeypatch.delenv(tracking.ENV_TRACKING_URI, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Feast store with 150 synthetic reviews (120/15/15), written by the featurize and feast_ingest cores."""
    return synthetic_feature_store(tmp_path_factory.mktemp("store"), rows=150, seed=2)


def _train_args(store: Path, **overrides: object) -> dict[str, object]:
    """The train component's parameters (what the pipeline passes), with ``overrides``."""
    return {
        "feature_store": str(store),
        "feast_config": "local",
        "base_model": "",
        "num_train_epochs": 1,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 16,
        "max_seq_length": 32,
        "seed": 1,
        "hyperparameters": {},
        "health_policy": "report",
        "checkpoint_root": "",
        "mlflow_tracking_uri": "",
        "pipeline_run_id": "",
        "data_hash": "",
        **overrides,
    }


def test_train_then_evaluate_components(tmp_path: Path, store: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = testing.tiny_model(tmp_path / "tiny", dropout=0.0)
    model = _artifact(dsl.Model, tmp_path, "model")
    metrics = _artifact(dsl.Metrics, tmp_path, "train-metrics")
    report = _artifact(dsl.Artifact, tmp_path, "train-report")
    train_classifier.python_func(
        **_train_args(
            store,
            base_model=str(base),
            num_train_epochs=2,
            learning_rate=5e-3,
            hyperparameters={"logging_steps": 2, "warmup_ratio": 0.0},
            mlflow_tracking_uri=uri,
            pipeline_run_id="run-1",
            data_hash="abc123",
        ),
        model=model,
        metrics=metrics,
        report=report,
        curve_html=_artifact(dsl.HTML, tmp_path, "curve"),
        summary_md=_artifact(dsl.Markdown, tmp_path, "train-summary"),
    )
    trained = json.loads(Path(report.path).read_text())
    assert trained["train_rows"] == 120 and trained["validation_rows"] == 15 and trained["global_step"] == 16
    assert trained["parameters"]["learning_rate"] == 5e-3 and trained["parameters"]["logging_steps"] == 2
    assert Path(model.path, "config.json").is_file() and Path(model.path, "tokenizer.json").is_file()
    assert not Path(model.path, "checkpoints").exists()
    assert 0 <= metrics.metadata["eval_accuracy"] <= 1 and "health_exploding_gradient" in metrics.metadata
    curve = Path(tmp_path / "curve").read_text()  # a dot per evaluation and curve: the history's points
    for entry in trained["history"]:
        assert f'data-x="{entry["step"]}" data-y="{entry["eval_loss"]!r}"' in curve
    assert Path(tmp_path / "train-summary").read_text().startswith("## Train\n")

    classification = _artifact(dsl.ClassificationMetrics, tmp_path, "cm")
    eval_metrics = _artifact(dsl.Metrics, tmp_path, "eval-metrics")
    html = _artifact(dsl.HTML, tmp_path, "report.html")
    eval_json = _artifact(dsl.Artifact, tmp_path, "eval.json")
    predictions = _artifact(dsl.Dataset, tmp_path, "predictions")
    data_report = _artifact(dsl.Artifact, tmp_path, "data-report")
    Path(data_report.path).write_text(json.dumps({"source": "reviews.csv", "data_sha256": "abc123", "rows_out": 150}))
    outputs = evaluate_classifier.python_func(
        feature_store=str(store),
        feast_config="local",
        model=model,
        data_report=data_report,
        reviews=dsl.Dataset(uri=str(store.parent / "reviews.parquet")),
        max_seq_length=32,
        min_accuracy=0.0,
        mlflow_tracking_uri=uri,
        registered_model_name="clf",
        pipeline_run_id="run-1",
        metrics=eval_metrics,
        classification=classification,
        report_html=html,
        report_json=eval_json,
        predictions=predictions,
        summary_md=_artifact(dsl.Markdown, tmp_path, "eval-summary"),
    )
    evaluation = json.loads(Path(eval_json.path).read_text())
    # 16 steps of a tiny random BERT learn to answer one class: the gate skips it whatever --min-accuracy says
    # (0 here), with the reason; it stays challenger, and no champion is made.
    assert outputs.deploy is False and outputs.model_version == "1"
    assert outputs.reason == evaluation["decision"]["reason"]
    assert "test reviews; no better than no skill on these 15 test reviews" in outputs.reason, outputs.reason
    assert tracking.get_alias(uri, "clf", tracking.CHAMPION) is None
    assert evaluation["rows"] == 15 and set(evaluation["per_facet_accuracy"]) <= {"Blouses", "Dresses", "Knits"}
    specs = classification.metadata["confusionMatrix"]["annotationSpecs"]
    assert [s["displayName"] for s in specs] == ["negative", "neutral", "positive"]
    assert "<svg" in Path(html.path).read_text()
    predicted = pd.read_parquet(predictions.path)  # what deploy's smoke test compares the served model with
    assert len(predicted) == 15 and predicted["review_id"].is_unique
    probabilities = predicted[["probability_negative", "probability_neutral", "probability_positive"]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    labels = np.array(["negative", "neutral", "positive"])[probabilities.argmax(axis=1)]
    assert list(predicted["predicted_label"]) == list(labels)
    accuracy = evaluation["accuracy"]
    truth = pd.read_parquet(store.parent / "features.parquet").set_index("review_id")["label_id"]
    assert (
        labels == np.array(["negative", "neutral", "positive"])[truth[predicted["review_id"]]]
    ).mean() == pytest.approx(accuracy)

    run = tracking.PipelineRun(uri, tracking.DEFAULT_EXPERIMENT, "run-1")
    data = run.client.get_run(run.run_id).data
    assert {"pipeline_run_id": "run-1", "data_hash": "abc123", "feature_view": "review_bert_features"}.items() <= (
        data.tags.items()
    )
    assert "train/loss" in data.metrics and "eval/accuracy" in data.metrics and "train.learning_rate" in data.params
    assert data.params["data.source"] == "reviews.csv" and data.metrics["data/rows_out"] == 150
    challenger = tracking.get_alias(uri, "clf", tracking.CHALLENGER)
    assert challenger.tags["data_hash"] == "abc123" and challenger.source.endswith("/artifacts")  # an MLflow model
    assert tracking.get_alias(uri, "clf", "challenger").run_id == run.run_id
    artifacts = {a.path for a in run.client.list_artifacts(run.run_id)}
    assert {"eval", "train"} <= artifacts and "model" not in artifacts  # one upload: evaluate's MLflow model


def test_train_component_rejects_unknown_hyperparameters(tmp_path: Path, store: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown training option\(s\) \['learning_rat'\]; valid: .*learning_rate"):
        train_classifier.python_func(
            **_train_args(
                store, hyperparameters={"learning_rat": 1e-4}, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"
            ),
            model=_artifact(dsl.Model, tmp_path, "m"),
            metrics=_artifact(dsl.Metrics, tmp_path, "x"),
            report=_artifact(dsl.Artifact, tmp_path, "r"),
            curve_html=_artifact(dsl.HTML, tmp_path, "c"),
            summary_md=_artifact(dsl.Markdown, tmp_path, "s"),
        )


def test_checkpoint_root_keeps_checkpoints_for_a_retry(tmp_path: Path, store: Path) -> None:
    base = testing.tiny_model(tmp_path / "tiny", dropout=0.0)
    kwargs = _train_args(store, base_model=str(base), checkpoint_root=str(tmp_path / "pvc"), pipeline_run_id="run-7")
    assert tracking.resolve_tracking_uri("").startswith(f"sqlite:///{tmp_path}")  # (the fixture's store)
    for attempt in ("a", "b"):
        train_classifier.python_func(
            **kwargs,
            model=_artifact(dsl.Model, tmp_path, f"m{attempt}"),
            metrics=_artifact(dsl.Metrics, tmp_path, f"x{attempt}"),
            report=_artifact(dsl.Artifact, tmp_path, f"r{attempt}"),
            curve_html=_artifact(dsl.HTML, tmp_path, f"c{attempt}"),
            summary_md=_artifact(dsl.Markdown, tmp_path, f"s{attempt}"),
        )
    assert (tmp_path / "pvc" / "run-7" / "train" / "checkpoints" / "checkpoint-8").is_dir()
    second = json.loads(Path(tmp_path / "rb").read_text())
    assert second["resumed_from_step"] == 8
    assert (tmp_path / "bert-kfp" / "mlflow.db").is_file()  # the default store, here under XDG_DATA_HOME


@pytest.mark.parametrize(("component", "image"), [(train_classifier, "train"), (evaluate_classifier, "train")])
def test_components_run_on_the_project_image_without_installing_anything(component, image: str, tmp_path: Path) -> None:
    """The executor comes from the image (install_kfp_package=False): no pip install at pod start."""
    compiler.Compiler().compile(component, str(tmp_path / "c.yaml"))
    executor = next(iter(yaml.safe_load((tmp_path / "c.yaml").read_text())["deploymentSpec"]["executors"].values()))
    command = " ".join(executor["container"]["command"])
    assert "pip install" not in command and "kfp.dsl.executor_main" in command
    assert executor["container"]["image"].rsplit("/", 1)[-1].split(":")[0] == image  # (torch is there)
