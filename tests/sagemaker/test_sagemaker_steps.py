"""The SageMaker train and tune steps end to end: Feast → S3 channels, the job, the model back from S3, the report.

S3 is real: a moto server on loopback (`moto_s3`), reached through botocore's own endpoint variable.  SageMaker and
CloudWatch Logs cannot be reached from here: they are botocore's ``Stubber`` on real clients (the only mock these
tests use), which validates each request against botocore's service model before answering.  Where a stubbed
SageMaker "writes" the model, the test puts a model.tar.gz into the moto bucket, as a finished job leaves it.
"""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from botocore.stub import ANY, Stubber

from components.sagemaker import channels, core, jobs, requests
from components.sagemaker.aws import Clients
from components.sagemaker.settings import parse
from components.tune import core as tune_core
from components.tune import results as R
from tests.sagemaker.conftest import REGION, settings_body
from tests.sagemaker.test_sagemaker_jobs import FakeClock, training

RUN = "run-0001"
T0 = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def feature_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.stores import synthetic_feature_store

    return synthetic_feature_store(tmp_path_factory.mktemp("sm-store"), rows=60, seed=4)


def _model_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_channels_round_trip_through_s3(moto_s3: Any, feature_store: Path) -> None:
    settings = parse(settings_body())
    frames = channels.read_splits(str(feature_store), "local")
    uris = requests.channel_uris(settings, RUN)
    written = channels.upload_channels(moto_s3, frames, uris)
    assert written["train"]["uri"] == f"s3://bert-test-bucket/runs/{RUN}/channels/train/train.parquet"
    for name, frame in frames.items():
        body = moto_s3.get_object(Bucket="bert-test-bucket", Key=written[name]["uri"].split("/", 3)[3])["Body"].read()
        back = pd.read_parquet(io.BytesIO(body))
        assert len(back) == len(frame) == written[name]["rows"] > 0
        assert back["review_id"].tolist() == frame["review_id"].tolist()
        assert [list(x) for x in back["input_ids"]] == [list(x) for x in frame["input_ids"]]
        assert set(back["split"]) == {name}


def test_model_download_unpacks_and_refuses_escaping_members(moto_s3: Any, tmp_path: Path) -> None:
    moto_s3.put_object(
        Bucket="bert-test-bucket", Key="m/model.tar.gz", Body=_model_tar({"config.json": b"{}", "tok/vocab.txt": b"a"})
    )
    files = channels.download_model(moto_s3, "s3://bert-test-bucket/m/model.tar.gz", tmp_path / "model")
    assert files == ["config.json", "tok/vocab.txt"] and (tmp_path / "model" / "tok" / "vocab.txt").read_bytes() == b"a"
    moto_s3.put_object(Bucket="bert-test-bucket", Key="m/evil.tar.gz", Body=_model_tar({"../escape.txt": b"x"}))
    with pytest.raises(ValueError, match="refusing to unpack"):
        channels.download_model(moto_s3, "s3://bert-test-bucket/m/evil.tar.gz", tmp_path / "evil")
    assert not (tmp_path / "escape.txt").exists()


def _clients(moto_s3: Any) -> Clients:
    import boto3

    session = boto3.session.Session(region_name=REGION)
    return Clients(sagemaker=session.client("sagemaker"), s3=moto_s3, logs=session.client("logs"))


def test_train_step_runs_the_job_and_brings_the_model_back(moto_s3: Any, feature_store: Path, tmp_path: Path) -> None:
    settings = parse(settings_body())
    clients = _clients(moto_s3)
    name = requests.job_name("train", RUN)
    values = {
        "feature_store": str(feature_store),
        "feast_config": "local",
        "base_model": "",
        "num_train_epochs": 2,
        "learning_rate": 3e-05,
        "per_device_train_batch_size": 16,
        "max_seq_length": 32,
        "seed": 1,
        "health_policy": "report",
        "pipeline_run_id": RUN,
        "data_hash": "h",
    }
    expected = requests.training_job_request(
        settings, name, settings.image("train"), requests.hyperparameters(values, core.training_option_names()), RUN
    )
    model_data = f"s3://bert-test-bucket/runs/{RUN}/models/{name}/output/model.tar.gz"
    moto_s3.put_object(
        Bucket="bert-test-bucket",
        Key=model_data.split("/", 3)[3],
        Body=_model_tar({"config.json": b'{"id2label": {}}'}),
    )
    describe = {"TrainingJobName": name}
    done = training(
        "Completed",
        "Completed",
        TrainingJobName=name,
        ModelArtifacts={"S3ModelArtifacts": model_data},
        FinalMetricDataList=[
            {"MetricName": "validation-accuracy", "Value": 0.71, "Timestamp": T0},
            {"MetricName": "train-loss", "Value": 0.52, "Timestamp": T0},
        ],
        TrainingTimeInSeconds=600,
        BillableTimeInSeconds=240,
    )
    with Stubber(clients.sagemaker) as sm, Stubber(clients.logs) as logs:
        sm.add_client_error(
            "describe_training_job", "ValidationException", "Requested resource not found.", 400, describe
        )
        sm.add_response("create_training_job", {"TrainingJobArn": done["TrainingJobArn"]}, expected)
        sm.add_response("describe_training_job", training("InProgress", "Training", TrainingJobName=name), describe)
        logs.add_response(
            "filter_log_events",
            {"events": []},
            {"logGroupName": jobs.TRAINING_LOG_GROUP, "logStreamNamePrefix": f"{name}/"},
        )
        sm.add_response("describe_training_job", done, describe)
        logs.add_response("filter_log_events", {"events": []}, {"logGroupName": ANY, "logStreamNamePrefix": ANY})
        out = io.StringIO()
        outcome = core.train(
            settings, clients, values, settings.image("train"), str(tmp_path / "model"), FakeClock(), out
        )
        sm.assert_no_pending_responses()
    assert json.loads((tmp_path / "model" / "config.json").read_text()) == {"id2label": {}}
    assert outcome.model_data == model_data and outcome.metrics == {"validation-accuracy": 0.71, "train-loss": 0.52}
    assert outcome.report["billable_seconds"] == 240 and outcome.report["hyperparameters"]["learning_rate"] == "3e-05"
    listed = moto_s3.list_objects_v2(Bucket="bert-test-bucket", Prefix=f"runs/{RUN}/channels/")["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        f"runs/{RUN}/channels/train/train.parquet",
        f"runs/{RUN}/channels/validation/validation.parquet",
    ]


def test_a_bad_request_is_refused_before_anything_is_written(moto_s3: Any, feature_store: Path, tmp_path: Path) -> None:
    settings = parse(settings_body(tags={"team#ml": "x"}))  # '#' is outside the model's pattern for tag keys
    values = {"feature_store": str(feature_store), "pipeline_run_id": RUN, "seed": 1}
    clients = _clients(moto_s3)
    with Stubber(clients.sagemaker), pytest.raises(ValueError, match=r"Tags\[0\].Key: 'team#ml' does not match"):
        core.train(settings, clients, values, settings.image("train"), str(tmp_path / "m"), FakeClock(), io.StringIO())
    assert "Contents" not in moto_s3.list_objects_v2(Bucket="bert-test-bucket")


TUNE_SPEC = """
algorithm: {algorithmName: random}
maxTrialCount: 3
parameters:
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "1e-5", max: "1e-4", distribution: logUniform}}
  - {name: lr_scheduler_type, parameterType: categorical, feasibleSpace: {list: [linear, cosine]}}
"""


def _summary(i: int, status: str, lr: str, sched: str, value: float | None) -> dict[str, Any]:
    out = {
        "TrainingJobName": f"bert-tune-x-00{i}-abcdef0{i}",
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:1:training-job/bert-tune-x-00{i}",
        "CreationTime": T0 + timedelta(minutes=i),
        "TrainingStartTime": T0 + timedelta(minutes=i),
        "TrainingEndTime": T0 + timedelta(minutes=i + 5),
        "TrainingJobStatus": status,
        "TunedHyperParameters": {"learning_rate": lr, "lr_scheduler_type": f'"{sched}"'},
    }
    if value is not None:
        out["FinalHyperParameterTuningJobObjectiveMetric"] = {"MetricName": "validation-accuracy", "Value": value}
    if status == "Failed":
        out["FailureReason"] = "AlgorithmError: out of memory"
    return out


def test_tune_step_fills_the_same_report_as_the_other_engines(
    moto_s3: Any, feature_store: Path, tmp_path: Path
) -> None:
    settings = parse(settings_body())
    clients = _clients(moto_s3)
    config = tune_core.TuneConfig(tuning_trials=3, tuning_spec=TUNE_SPEC, pipeline_run_id=RUN)
    data = {
        "feature_store": str(feature_store),
        "feast_config": "local",
        "base_model": "",
        "max_seq_length": 32,
        "seed": 1,
    }
    name = requests.job_name("tune", RUN)
    trials = [
        _summary(2, "Completed", "5e-05", "cosine", 0.74),
        _summary(1, "Completed", "2e-05", "linear", 0.69),
        _summary(3, "Failed", "9e-05", "linear", None),
    ]
    job = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobArn": f"arn:aws:sagemaker:{REGION}:1:hyper-parameter-tuning-job/{name}",
        "HyperParameterTuningJobConfig": {"Strategy": "Random", "ResourceLimits": {"MaxParallelTrainingJobs": 1}},
        "HyperParameterTuningJobStatus": "Completed",
        "CreationTime": T0,
        "HyperParameterTuningEndTime": T0 + timedelta(minutes=20),
        "TrainingJobStatusCounters": {"Completed": 2, "NonRetryableError": 1},
        "ObjectiveStatusCounters": {"Succeeded": 2, "Failed": 1},
        "BestTrainingJob": trials[0],
    }
    describe = {"HyperParameterTuningJobName": name}
    with Stubber(clients.sagemaker) as sm:
        sm.add_client_error(
            "describe_hyper_parameter_tuning_job",
            "ResourceNotFound",
            "Amazon SageMaker can't find a tuning job",
            400,
            describe,
        )
        sm.add_response(
            "create_hyper_parameter_tuning_job", {"HyperParameterTuningJobArn": job["HyperParameterTuningJobArn"]}, None
        )
        sm.add_response(
            "describe_hyper_parameter_tuning_job", {**job, "HyperParameterTuningJobStatus": "InProgress"}, describe
        )
        sm.add_response("describe_hyper_parameter_tuning_job", job, describe)
        listing = {"HyperParameterTuningJobName": name, "MaxResults": 100}
        sm.add_response(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            {"TrainingJobSummaries": trials[:2], "NextToken": "p2"},
            listing,
        )
        sm.add_response(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            {"TrainingJobSummaries": trials[2:]},
            {**listing, "NextToken": "p2"},
        )
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        outcome = core.tune(
            settings, clients, config, data, settings.image("train"), FakeClock(), io.StringIO(), tracking_uri=uri
        )
        sm.assert_no_pending_responses()
    assert outcome.best_params == {"learning_rate": 5e-05, "lr_scheduler_type": "cosine"}
    from components.common import tracking

    run = tracking.PipelineRun(uri, pipeline_run_id=str(config.pipeline_run_id))  # the pipeline run's MLflow run
    logged = run.client.get_run(run.run_id).data
    assert logged.params["tune.best.learning_rate"] == "5e-05" and logged.params["tune.algorithm"] == "random"
    assert logged.metrics["tune/best_value"] == 0.74 and logged.metrics["tune/trials_fail"] == 1
    assert outcome.best_value == 0.74
    report = outcome.report
    assert report["engine"] == "sagemaker" and report["algorithm"] == "random" and report["best_trial"] == 1
    assert [t["state"] for t in report["trials"]] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert report["trial_counts"] == {"complete": 2, "pruned": 0, "fail": 1, "retried": 0}
    # the same shape as an Optuna or Katib study's report
    other = R.StudyResult("optuna", "s", "db", "random", "validation-accuracy", "maximize", [], {}, None, None, "done")
    assert set(report) == {"status", "spec", "trials", *other.to_dict()}
    tune_core.write_outputs(outcome, tmp_path / "r.json", tmp_path / "t.parquet", tmp_path / "r.html")
    table = pd.read_parquet(tmp_path / "t.parquet")
    assert table["param.learning_rate"].tolist() == [2e-05, 5e-05, 9e-05] and "validation" not in table.columns


def test_tune_refuses_an_algorithm_sagemaker_lacks_before_any_call(moto_s3: Any, feature_store: Path) -> None:
    settings = parse(settings_body())
    clients = _clients(moto_s3)
    config = tune_core.TuneConfig(tuning_trials=3, tuning_spec=TUNE_SPEC.replace("random", "tpe"), pipeline_run_id=RUN)
    with Stubber(clients.sagemaker), pytest.raises(ValueError, match="has no 'tpe'; it has random"):
        core.tune(settings, clients, config, {"feature_store": str(feature_store)}, settings.image("train"))
    assert "Contents" not in moto_s3.list_objects_v2(Bucket="bert-test-bucket")
