"""The SageMaker steps' work, given their clients: train (a training job) and tune (a tuning job).

Both check every request before anything happens (`limits.check_request`: botocore's validation plus the
model's maximums, enums and patterns), then write the train and validation channels to S3 from Feast, start
the job (or find the one a previous try of the task started), and wait for it (`jobs.wait`: status
transitions, CloudWatch log lines, backoff, timeout, SIGTERM → stop).

- `train`: CreateTrainingJob on the train image; the model (``model.tar.gz``) is unpacked into the step's
  Model directory, so evaluate's input is the same directory as on the kfp target; the final metrics are the
  job's ``FinalMetricDataList`` (the metric definitions' last values).
- `tune`: CreateHyperParameterTuningJob from the one tuning spec (`tuning.tuning_job_config`), checked against
  the training CLI as the other engines check it (`components.tune.core.load`); its trials
  (ListTrainingJobsForHyperParameterTuningJob) become the engine-neutral study result, so the report,
  trials table and HTML are the other engines' (`components.tune.core.write_outputs`).

No boto3 here: the clients come from `components.sagemaker.aws` (or a test's).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from components.sagemaker import channels, jobs, requests, tuning
from components.sagemaker.aws import Clients
from components.sagemaker.limits import check_request
from components.sagemaker.settings import SageMakerSettings

#: Added to a job's own time limit for the step's wait when the profile sets no timeout.
WAIT_MARGIN_SECONDS = 3600


def training_option_names() -> set[str]:
    """Every option of the training CLI (its dataclasses: `components.common.training_options.option_names`)."""
    from components.common.training_options import option_names

    return option_names()


@dataclass
class TrainOutcome:
    """What the train step outputs: the job, the model's S3 URI, final metrics and the report."""

    job_name: str
    model_data: str
    metrics: dict[str, float]
    report: dict[str, Any] = field(default_factory=dict)


def _timeout(settings: SageMakerSettings, job_seconds: int) -> int:
    return settings.waiting.timeout_seconds or job_seconds + WAIT_MARGIN_SECONDS


def train(
    settings: SageMakerSettings,
    clients: Clients,
    values: Mapping[str, Any],
    image: str,
    model_dir: str,
    clock: jobs.Clock | None = None,
    out: TextIO = sys.stdout,
) -> TrainOutcome:
    """Run the final training of the pipeline run as a SageMaker training job.

    Args:
        values: Training options by name (the step's parameters and the tuned ones); ``feature_store`` and
            ``feast_config`` say where the splits are, ``pipeline_run_id`` names the job and its S3 folder.
        image: The train image's ECR URI.
        model_dir: Where the model is unpacked (the KFP Model artifact's path).

    Raises:
        ValueError: An unknown training option or a request SageMaker would refuse (nothing started).
        jobs.JobFailed, jobs.JobTimeout, jobs.Cancelled: See `jobs.wait`.
    """
    run_id = str(values.get("pipeline_run_id") or "")
    hyperparameters = requests.hyperparameters(values, training_option_names())

    def request(name: str) -> dict[str, Any]:
        return requests.training_job_request(settings, name, image, hyperparameters, run_id)

    def name_for(attempt: int) -> str:
        return requests.job_name("train", run_id, attempt)

    check_request("sagemaker", "CreateTrainingJob", request(name_for(1)))  # before anything is written
    frames = channels.read_splits(str(values["feature_store"]), str(values.get("feast_config") or "local"))
    written = channels.upload_channels(clients.s3, frames, requests.channel_uris(settings, run_id), settings.kms_key_id)
    limit = settings.training.max_wait_seconds or settings.training.max_runtime_seconds
    with jobs.stop_on_sigterm():
        name = jobs.start(clients.sagemaker, jobs.TRAINING, request, name_for, out)
        job = jobs.wait(
            clients.sagemaker,
            jobs.TRAINING,
            name,
            settings.waiting,
            _timeout(settings, limit),
            clock,
            jobs.LogTail(clients.logs, name),
            out,
        )
    model_data = job["ModelArtifacts"]["S3ModelArtifacts"]
    files = channels.download_model(clients.s3, model_data, model_dir)
    metrics = {
        m["MetricName"]: float(m["Value"])
        for m in job.get("FinalMetricDataList") or []
        if math.isfinite(float(m["Value"]))
    }
    report = {
        "engine": "sagemaker",
        "training_job": name,
        "training_job_arn": job.get("TrainingJobArn", ""),
        "status": job["TrainingJobStatus"],
        "status_transitions": [t["Status"] for t in job.get("SecondaryStatusTransitions") or []],
        "hyperparameters": hyperparameters,
        "metrics": metrics,
        "model_data": model_data,
        "model_files": files,
        "channels": written,
        "instance_type": settings.training.instance_type,
        "instance_count": settings.training.instance_count,
        "spot": settings.training.spot,
        "training_seconds": job.get("TrainingTimeInSeconds"),
        "billable_seconds": job.get("BillableTimeInSeconds"),
    }
    return TrainOutcome(name, model_data, metrics, report)


def open_mlflow_run(tracking_uri: str, pipeline_run_id: str, data_hash: str, step: str) -> Any:
    """The pipeline run's MLflow run (a `tracking.PipelineRun`, opened on first use), the store checked usable
    first: the step calls this before it starts a job, so a bad URI costs no SageMaker time.

    Raises:
        ValueError: The tracking URI is unreachable or unusable.
    """
    from components.common import features as F
    from components.common import tracking

    tags = tracking.lineage_tags(pipeline_run_id, data_hash, F.FEATURE_VIEW)
    uri = tracking.usable_tracking_uri(tracking_uri)
    return tracking.PipelineRun(uri, tracking.DEFAULT_EXPERIMENT, pipeline_run_id, {**tags, "step": step})


def log_training(run: Any, outcome: TrainOutcome) -> None:
    """The training job in the pipeline run's MLflow run, as the kfp target's train step logs itself: its
    hyperparameters as ``train.*`` params, its final metrics as ``train_final/…``, the job as tags, the report as
    ``train/training_report.json`` (the model is logged by evaluate)."""
    import json

    run.log_params(outcome.report["hyperparameters"], prefix="train.")
    run.log_metrics(outcome.metrics, prefix="train_final/")
    run.set_tags({"train.engine": "sagemaker", "train.sagemaker_job": outcome.job_name})
    run.log_text(json.dumps(outcome.report, indent=1, default=str), "train/training_report.json")
    run.end()


def list_trials(client: Any, name: str) -> list[dict[str, Any]]:
    """Every training job of the tuning job (ListTrainingJobsForHyperParameterTuningJob, all pages)."""
    params: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
    summaries: list[dict[str, Any]] = []
    while True:
        page = jobs.call(client, "sagemaker", "ListTrainingJobsForHyperParameterTuningJob", params)
        summaries += page.get("TrainingJobSummaries", [])
        if not page.get("NextToken"):
            return summaries
        params["NextToken"] = page["NextToken"]


def _tuning_seconds(job: Mapping[str, Any]) -> float:
    start, end = job.get("CreationTime"), job.get("HyperParameterTuningEndTime")
    return (end - start).total_seconds() if start is not None and end is not None else 0.0


def tune(
    settings: SageMakerSettings,
    clients: Clients,
    config: Any,
    data: Mapping[str, Any],
    image: str,
    clock: jobs.Clock | None = None,
    out: TextIO = sys.stdout,
    tracking_uri: str = "",
) -> Any:
    """Run the search as a SageMaker tuning job; the tune step's outcome (`components.tune.core.TuneOutcome`),
    logged on the pipeline run's MLflow run (``tune.*`` params, ``tune/…`` metrics) with ``tracking_uri``.

    Args:
        config: The tune step's options (`components.tune.core.TuneConfig`).
        data: The trial data options (``feature_store``, ``feast_config``, ``base_model``, ``max_seq_length``,
            ``seed``).

    Raises:
        ValueError: A bad spec (`components.tune.spec.SpecError`: an algorithm SageMaker lacks, …) or a request
            SageMaker would refuse — before anything is written.
        jobs.JobFailed, jobs.JobTimeout, jobs.Cancelled: See `jobs.wait`.
    """
    from components.tune import core as tune_core

    config.validate()
    if config.tuning_trials == 0:
        return tune_core.TuneOutcome({}, 0.0, {"status": "skipped", "trials": 0})
    run_id = config.pipeline_run_id
    spec = tune_core.load(config, {k: v for k, v in data.items() if v not in ("", None)})
    job_config = tuning.tuning_job_config(spec)
    static = requests.hyperparameters(
        {**data, "metric_for_best_model": spec.objective.training_metric, **spec.trial_options},
        training_option_names(),
    )

    def request(name: str) -> dict[str, Any]:
        return requests.tuning_job_request(settings, name, image, job_config, static, run_id)

    def name_for(attempt: int) -> str:
        return requests.job_name("tune", run_id, attempt)

    check_request("sagemaker", "CreateHyperParameterTuningJob", request(name_for(1)))
    frames = channels.read_splits(str(data["feature_store"]), str(data.get("feast_config") or "local"))
    channels.upload_channels(clients.s3, frames, requests.channel_uris(settings, run_id), settings.kms_key_id)
    rounds = math.ceil(spec.max_trial_count / spec.parallel_trial_count)
    with jobs.stop_on_sigterm():
        name = jobs.start(clients.sagemaker, jobs.TUNING, request, name_for, out)
        job = jobs.wait(
            clients.sagemaker,
            jobs.TUNING,
            name,
            settings.waiting,
            _timeout(settings, settings.tuning.max_runtime_seconds * rounds),
            clock,
            None,
            out,
        )
    result = tuning.study_result(spec, job, list_trials(clients.sagemaker, name), _tuning_seconds(job))
    return tune_core.outcome_of(spec, result, tracking_uri, str(config.pipeline_run_id or ""))
