"""deploy_model and skip_deployment called as the KFP executor calls them, after evaluate_classifier on a real
Feast store (synthetic reviews) with a tiny classifier, a real embedded MLflow registry, and the real model
server started by the deploy step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl

from components.common import tracking
from components.deploy.component import deploy_model, skip_deployment
from components.deploy.config import DeployConfig
from components.evaluate.component import evaluate_classifier
from tests import testing
from tests.stores import synthetic_feature_store


def _artifact(kind: type[dsl.Artifact], tmp_path: Path, name: str) -> dsl.Artifact:
    return kind(uri=str(tmp_path / name))


def _deploy_options(**changes: object) -> dict[str, object]:
    """The deploy options as the pipeline passes them: DeployConfig's defaults, by name."""
    from dataclasses import asdict

    return {**asdict(DeployConfig(smoke_reviews=8, rollout_timeout_seconds=300)), **changes}


def test_evaluate_then_deploy_components(tmp_path: Path) -> None:
    import shutil

    (tmp_path / "data").mkdir()
    store = synthetic_feature_store(tmp_path / "data", rows=150, seed=2)  # also data/reviews.parquet (prepare's)
    model = _artifact(dsl.Model, tmp_path, "model")
    # A model with skill: the gate refuses one that is no better than always answering one class.
    shutil.copytree(testing.skilled_classifier(tmp_path / "skilled"), model.path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    predictions = _artifact(dsl.Dataset, tmp_path, "predictions")
    data_report = _artifact(dsl.Artifact, tmp_path, "data-report")
    Path(data_report.path).write_text(json.dumps({"source": "reviews.csv", "data_sha256": "abc123", "rows_out": 150}))
    evaluated = evaluate_classifier.python_func(
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
        metrics=_artifact(dsl.Metrics, tmp_path, "eval-metrics"),
        classification=_artifact(dsl.ClassificationMetrics, tmp_path, "cm"),
        report_html=_artifact(dsl.HTML, tmp_path, "eval.html"),
        report_json=_artifact(dsl.Artifact, tmp_path, "eval.json"),
        predictions=predictions,
        summary_md=_artifact(dsl.Markdown, tmp_path, "eval-summary"),
    )
    assert evaluated.deploy is True and evaluated.model_version == "1"

    report = _artifact(dsl.Artifact, tmp_path, "deploy-report")
    metrics = _artifact(dsl.Metrics, tmp_path, "deploy-metrics")
    returned = deploy_model.python_func(
        model=model,
        predictions=predictions,
        reviews=dsl.Dataset(uri=str(tmp_path / "data" / "reviews.parquet")),
        model_version=evaluated.model_version,
        reason=evaluated.reason,
        max_seq_length=32,
        **_deploy_options(),
        mlflow_tracking_uri=uri,
        registered_model_name="clf",
        pipeline_run_id="run-1",
        report=report,
        metrics=metrics,
        summary_md=_artifact(dsl.Markdown, tmp_path, "deploy-summary"),
    )
    deployment = json.loads(returned)
    assert deployment == json.loads(Path(report.path).read_text())
    assert deployment["decision"] == "deployed" and deployment["reason"] == evaluated.reason
    assert (deployment["backend"], deployment["outcome"], deployment["champion"]) == ("local", "promoted", "1")
    assert deployment["smoke"]["reviews"] == 8 and deployment["smoke"]["passed"]
    assert metrics.metadata["deployed"] == 1.0 and metrics.metadata["smoke_reviews"] == 8.0
    assert tracking.get_alias(uri, "clf", tracking.CHAMPION).version == "1"


def test_skip_deployment_records_evaluates_reason(tmp_path: Path) -> None:
    summary_md = _artifact(dsl.Markdown, tmp_path, "summary")
    returned = skip_deployment.python_func(
        reason="test accuracy 0.2000 is below --min-accuracy 0.9900",
        model_version="4",
        deploy_backend="kserve",
        registered_model_name="",
        summary_md=summary_md,
    )
    deployment = json.loads(returned)
    assert deployment["decision"] == "skipped" and deployment["reason"].endswith("below --min-accuracy 0.9900")
    assert (deployment["model_version"], deployment["backend"], deployment["endpoint"]) == ("4", "kserve", None)
    assert deployment["registered_model"] == "review-sentiment-classifier"  # the default registered model
    summary = Path(summary_md.path).read_text()
    assert "Skipped: version 4 of review-sentiment-classifier stays challenger." in summary
    assert "Reason: test accuracy 0.2000 is below --min-accuracy 0.9900" in summary


def test_deploy_component_rejects_a_bad_option_before_serving(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--canary-traffic-percent must be at most 99, got 100"):
        deploy_model.python_func(
            model=_artifact(dsl.Model, tmp_path, "model"),
            predictions=_artifact(dsl.Dataset, tmp_path, "p"),
            reviews=_artifact(dsl.Dataset, tmp_path, "r"),
            model_version="1",
            reason="",
            max_seq_length=32,
            **_deploy_options(canary_traffic_percent=100),
            mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            registered_model_name="clf",
            pipeline_run_id="",
            report=_artifact(dsl.Artifact, tmp_path, "report"),
            metrics=_artifact(dsl.Metrics, tmp_path, "metrics"),
            summary_md=_artifact(dsl.Markdown, tmp_path, "summary"),
        )
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(("component", "image"), [(deploy_model, "serve"), (skip_deployment, "components")])
def test_deploy_components_run_on_the_project_images_without_installing_anything(
    component, image: str, tmp_path: Path
) -> None:
    """deploy_model runs where the model server is installed (the serve image); nothing is pip-installed."""
    compiler.Compiler().compile(component, str(tmp_path / "c.yaml"))
    executor = next(iter(yaml.safe_load((tmp_path / "c.yaml").read_text())["deploymentSpec"]["executors"].values()))
    command = " ".join(executor["container"]["command"])
    assert "pip install" not in command and "kfp.dsl.executor_main" in command
    assert executor["container"]["image"].rsplit("/", 1)[-1].split(":")[0] == image
