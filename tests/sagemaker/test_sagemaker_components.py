"""The KFP components train_on_sagemaker and tune_on_sagemaker, called as the pipeline calls them.

AWS cannot be reached from here: the components' SageMaker and CloudWatch Logs clients are botocore's ``Stubber``
on real clients (the only mock these tests use; handed in where the components make their clients,
`components.sagemaker.aws.clients`), and S3 is a real moto server on loopback.  The settings come as the
compiled pipeline gives them: the profile's section as JSON in ``BERT_KFP_SAGEMAKER``.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from botocore.stub import ANY, Stubber
from kfp import dsl

from components.sagemaker import aws, requests
from components.sagemaker.settings import ENV, parse
from components.sagemaker.train import train_on_sagemaker
from components.sagemaker.tune import tune_on_sagemaker
from pipelines.targets import Step
from tests.sagemaker.conftest import REGION, settings_body
from tests.sagemaker.test_sagemaker_jobs import training

RUN = "run-components"


@pytest.fixture(scope="module")
def feature_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.stores import synthetic_feature_store

    return synthetic_feature_store(tmp_path_factory.mktemp("sm-components"), rows=60, seed=6)


@pytest.fixture
def stubbed(moto_s3: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Stubber, aws.Clients]:
    """The components' clients: SageMaker and Logs stubbed, S3 the moto server; the settings in the environment."""
    import boto3

    session = boto3.session.Session(region_name=REGION)
    clients = aws.Clients(sagemaker=session.client("sagemaker"), s3=moto_s3, logs=session.client("logs"))
    monkeypatch.setattr(aws, "clients", lambda settings: clients)
    monkeypatch.setenv(ENV, parse(settings_body()).to_env())
    return Stubber(clients.sagemaker), clients


def _artifact(kind: type[dsl.Artifact], tmp_path: Path, name: str) -> Any:
    return kind(uri=str(tmp_path / name))


def test_train_component_outputs_the_model_metrics_and_report(
    stubbed: tuple[Stubber, aws.Clients], feature_store: Path, tmp_path: Path
) -> None:
    stub, clients = stubbed
    name = requests.job_name("train", RUN)
    model_data = f"s3://bert-test-bucket/runs/{RUN}/models/{name}/output/model.tar.gz"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("config.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    clients.s3.put_object(Bucket="bert-test-bucket", Key=model_data.split("/", 3)[3], Body=archive.getvalue())
    describe = {"TrainingJobName": name}
    done = training(
        "Completed",
        "Completed",
        TrainingJobName=name,
        ModelArtifacts={"S3ModelArtifacts": model_data},
        FinalMetricDataList=[{"MetricName": "validation-accuracy", "Value": 0.8}],
    )
    with stub, Stubber(clients.logs) as logs:
        stub.add_client_error("describe_training_job", "ResourceNotFound", "not found", 400, describe)
        stub.add_response("create_training_job", {"TrainingJobArn": done["TrainingJobArn"]}, None)
        stub.add_response("describe_training_job", done, describe)
        logs.add_response("filter_log_events", {"events": []}, {"logGroupName": ANY, "logStreamNamePrefix": ANY})
        model = _artifact(dsl.Model, tmp_path, "model")
        metrics = _artifact(dsl.Metrics, tmp_path, "metrics")
        report = _artifact(dsl.Artifact, tmp_path, "report")
        train_on_sagemaker.python_func(
            feature_store=str(feature_store),
            feast_config="local",
            base_model="",
            num_train_epochs=1,
            learning_rate=5e-05,
            per_device_train_batch_size=16,
            max_seq_length=32,
            seed=1,
            hyperparameters={"learning_rate": 3e-05, "warmup_ratio": 0.1},  # tuning's best parameters win
            health_policy="report",
            pipeline_run_id=RUN,
            data_hash="h",
            mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            model=model,
            metrics=metrics,
            report=report,
            summary_md=_artifact(dsl.Markdown, tmp_path, "summary"),
        )
        stub.assert_no_pending_responses()
    assert Path(model.path, "config.json").read_text() == "{}"
    assert model.metadata["model_data_url"] == model_data and metrics.metadata == {"validation-accuracy": 0.8}
    written = json.loads(Path(report.path).read_text())
    assert (
        written["hyperparameters"]["learning_rate"] == "3e-05" and written["hyperparameters"]["warmup_ratio"] == "0.1"
    )
    assert written["training_job"] == name
    summary = (tmp_path / "summary").read_text()
    assert summary.startswith("## Train (SageMaker)\n") and "| validation-accuracy | 0.8 |" in summary

    from components.common import tracking

    run = tracking.PipelineRun(f"sqlite:///{tmp_path / 'mlflow.db'}", pipeline_run_id=RUN)  # evaluate's, later
    logged = run.client.get_run(run.run_id).data
    assert logged.params["train.learning_rate"] == "3e-05" and logged.metrics["train_final/validation-accuracy"] == 0.8
    assert logged.tags["train.sagemaker_job"] == name and logged.tags["data_hash"] == "h"
    assert [a.path for a in run.client.list_artifacts(run.run_id, "train")] == ["train/training_report.json"]


def test_train_component_checks_mlflow_before_anything_starts(
    stubbed: tuple[Stubber, aws.Clients], feature_store: Path, tmp_path: Path
) -> None:
    stub, clients = stubbed
    with stub, pytest.raises(ValueError, match=r"MLflow tracking server http://127\.0\.0\.1:9 is unreachable"):
        train_on_sagemaker.python_func(
            feature_store=str(feature_store), feast_config="local", base_model="", num_train_epochs=1,
            learning_rate=5e-05, per_device_train_batch_size=16, max_seq_length=32, seed=1, hyperparameters={},
            health_policy="report", pipeline_run_id=RUN, data_hash="h", mlflow_tracking_uri="http://127.0.0.1:9",
            model=_artifact(dsl.Model, tmp_path, "model"), metrics=_artifact(dsl.Metrics, tmp_path, "metrics"),
            report=_artifact(dsl.Artifact, tmp_path, "report"), summary_md=_artifact(dsl.Markdown, tmp_path, "md"),
        )  # fmt: skip
    stub.assert_no_pending_responses()  # no SageMaker call (the Stubber refuses any: none was queued)
    assert clients.s3.list_objects_v2(Bucket="bert-test-bucket", Prefix=f"runs/{RUN}/").get("KeyCount", 0) == 0


def test_tune_component_with_no_trials_returns_no_parameters(
    stubbed: tuple[Stubber, aws.Clients], feature_store: Path, tmp_path: Path
) -> None:
    stub, _ = stubbed
    with stub:  # no SageMaker call at all
        outputs = tune_on_sagemaker.python_func(
            feature_store=str(feature_store),
            feast_config="local",
            base_model="",
            max_seq_length=32,
            seed=1,
            tuning_trials=0,
            mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            tuning_spec="",
            pipeline_run_id=RUN,
            report_json=_artifact(dsl.Artifact, tmp_path, "r.json"),
            report_html=_artifact(dsl.HTML, tmp_path, "r.html"),
            trials=_artifact(dsl.Dataset, tmp_path, "t.parquet"),
            metrics=_artifact(dsl.Metrics, tmp_path, "m"),
            summary_md=_artifact(dsl.Markdown, tmp_path, "s.md"),
        )
    assert (outputs.best_params, outputs.best_value) == ({}, 0.0)
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "skipped"
    assert pd.read_parquet(tmp_path / "t.parquet").empty


def test_a_step_refuses_a_component_needing_what_the_pipeline_lacks() -> None:
    available = {"feature_store": "/mnt/feast", "seed": 1, "checkpoint_root": ""}  # the others are missing
    with pytest.raises(
        ValueError,
        match=r"Component train-on-sagemaker needs \['feast_config', .*'data_hash', 'mlflow_tracking_uri'\], which",
    ):
        Step(train_on_sagemaker, lambda task, profile: task)(None, **available)
