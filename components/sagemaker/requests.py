"""The request bodies of the SageMaker target: CreateTrainingJob and CreateHyperParameterTuningJob.

Built from the profile's settings (`components.sagemaker.settings`), the training options (by name, as the
kfp target's train step takes them) and the tuning spec (`components.sagemaker.tuning`).  Pure: no boto3;
`components.sagemaker.limits.check_request` checks every body against botocore's model before it is sent.

- Hyperparameters are the training options by name, every value a string (``true``/``false`` for switches,
  ``repr`` for floats: ``5e-05``) — SageMaker's contract; the train image reads them back by the same names.
- `metric_definitions` are the lines the training prints (`components.common.trial_metrics` for the
  validation metrics, `components.train.callbacks` for the progress line), as Python regexes whose first
  group is the value: SageMaker applies them with ``re.search`` to every log line.
- Channels ``train`` and ``validation`` are S3 prefixes of Parquet files (`components.sagemaker.channels`).
- Checkpoints: ``CheckpointConfig`` maps an S3 prefix of the job to ``/opt/ml/checkpoints``, so a spot
  interruption resumes there.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from components.common import trial_metrics
from components.sagemaker.settings import SageMakerSettings

CHANNELS = ("train", "validation")
CHECKPOINT_DIR = "/opt/ml/checkpoints"
PARQUET = "application/x-parquet"
#: A number as the training prints it (no nan/inf: SageMaker would not parse them as a metric value).
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
#: Training options the job does not take as hyperparameters: where data and outputs are (the container's
#: /opt/ml paths are its own) and the MLflow client settings of the step's pod.
NOT_HYPERPARAMETERS = frozenset(
    {
        "feature_store",
        "feast_config",
        "features",
        "output_dir",
        "model_dir",
        "report",
        "mlflow",
        "mlflow_tracking_uri",
        "mlflow_experiment",
        "mlflow_child_run",
        "mlflow_log_model",
        "nproc_per_node",
    }
)


def metric_definitions() -> list[dict[str, str]]:
    """MetricDefinitions: each validation metric of a metric line, and the training loss, epoch, learning rate
    and throughput of the progress line (``step 12/300 | epoch 0.12 | loss 1.0986 | lr 5e-05 | grad 1.2 |
    34.5 samples/s | …``)."""
    definitions = [
        {"Name": name, "Regex": rf"{trial_metrics.MARKER} .*\b{re.escape(name)}=({NUMBER})"}
        for name in trial_metrics.METRIC_NAMES
    ]
    progress = {
        "train-epoch": rf"^.*\bstep \d+/\d+ \| epoch ({NUMBER}) \|",
        "train-loss": rf"^.*\bstep \d+/\d+ \| epoch {NUMBER} \| loss ({NUMBER}) \|",
        "train-learning-rate": rf"^.*\bstep \d+/\d+ \|.* \| lr ({NUMBER}) \|",
        "train-samples-per-second": rf"^.*\bstep \d+/\d+ \|.* \| ({NUMBER}) samples/s \|",
    }
    return definitions + [{"Name": name, "Regex": regex} for name, regex in progress.items()]


def hyperparameter_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"hyperparameter value {value!r} is not a finite number")
        return repr(value)
    return str(value)


def hyperparameters(values: Mapping[str, Any], known: Iterable[str]) -> dict[str, str]:
    """HyperParameters: the training options among ``values`` (not `NOT_HYPERPARAMETERS`), values as strings.

    Raises:
        ValueError: A name that is no training option (``known``), listing the valid ones.
    """
    known = set(known)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown training option(s) {unknown}; valid: {', '.join(sorted(known))}.")
    return {
        name: hyperparameter_text(value)
        for name, value in values.items()
        if name not in NOT_HYPERPARAMETERS and value is not None
    }


def job_name(kind: str, pipeline_run_id: str, attempt: int = 1) -> str:
    """A job's name, the same for every retry of the pipeline task (so a retry finds its job): ``bert-<kind>-``
    and a hash of the run id, ``-a<attempt>`` from the second attempt on (after a failed or stopped job).
    At most 23 characters: a tuning job's name may have 32."""
    digest = hashlib.sha256((pipeline_run_id or "run").encode()).hexdigest()[:10]
    return f"bert-{kind}-{digest}" + (f"-a{attempt}" if attempt > 1 else "")


def run_prefix(pipeline_run_id: str) -> str:
    """The run's folder under the settings' S3 prefix."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", pipeline_run_id or "run")


def channel_uris(settings: SageMakerSettings, pipeline_run_id: str) -> dict[str, str]:
    """The S3 prefix of each channel of the run."""
    return {name: settings.s3_uri(run_prefix(pipeline_run_id), "channels", name) + "/" for name in CHANNELS}


def input_data_config(channels: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
            },
            "ContentType": PARQUET,
            "InputMode": "File",
        }
        for name, uri in channels.items()
    ]


def _common(settings: SageMakerSettings, image: str, output_uri: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
        },
        "RoleArn": settings.role_arn,
        "OutputDataConfig": {"S3OutputPath": output_uri},
    }
    if settings.kms_key_id:
        out["OutputDataConfig"]["KmsKeyId"] = settings.kms_key_id
    if settings.vpc is not None:
        out["VpcConfig"] = {
            "SecurityGroupIds": list(settings.vpc.security_group_ids),
            "Subnets": list(settings.vpc.subnets),
        }
    return out


def _resources(settings: SageMakerSettings, instance_type: str, count: int, volume: int) -> dict[str, Any]:
    out: dict[str, Any] = {"InstanceType": instance_type, "InstanceCount": count, "VolumeSizeInGB": volume}
    if settings.kms_key_id:
        out["VolumeKmsKeyId"] = settings.kms_key_id
    return out


def training_job_request(
    settings: SageMakerSettings,
    name: str,
    image: str,
    hyperparameters: Mapping[str, str],
    pipeline_run_id: str,
) -> dict[str, Any]:
    """CreateTrainingJob's parameters for the final training of a run."""
    training = settings.training
    run = run_prefix(pipeline_run_id)
    stopping: dict[str, Any] = {"MaxRuntimeInSeconds": training.max_runtime_seconds}
    if training.spot:
        stopping["MaxWaitTimeInSeconds"] = training.max_wait_seconds
    if training.max_pending_seconds is not None:
        stopping["MaxPendingTimeInSeconds"] = training.max_pending_seconds
    request = {
        "TrainingJobName": name,
        "HyperParameters": dict(hyperparameters),
        **_common(settings, image, settings.s3_uri(run, "models")),
        "InputDataConfig": input_data_config(channel_uris(settings, pipeline_run_id)),
        "ResourceConfig": _resources(
            settings, training.instance_type, training.instance_count, training.volume_size_gb
        ),
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": training.spot,
        "CheckpointConfig": {"S3Uri": settings.s3_uri(run, "checkpoints", name), "LocalPath": CHECKPOINT_DIR},
    }
    if settings.tags:
        request["Tags"] = settings.tag_list()
    return request


def tuning_job_request(
    settings: SageMakerSettings,
    name: str,
    image: str,
    config: Mapping[str, Any],
    static_hyperparameters: Mapping[str, str],
    pipeline_run_id: str,
) -> dict[str, Any]:
    """CreateHyperParameterTuningJob's parameters: ``config`` is `tuning.tuning_job_config`'s; every trial is a
    training job on the tuning instances with ``static_hyperparameters`` and the tuned ones."""
    tuning = settings.tuning
    tuned = {r["Name"] for ranges in config["ParameterRanges"].values() for r in ranges}
    clash = sorted(tuned & set(static_hyperparameters))
    if clash:
        raise ValueError(f"hyperparameter(s) {clash} are both tuned and fixed; keep one of them")
    definition = {
        "StaticHyperParameters": dict(static_hyperparameters),
        **_common(settings, image, settings.s3_uri(run_prefix(pipeline_run_id), "tuning")),
        "InputDataConfig": input_data_config(channel_uris(settings, pipeline_run_id)),
        "ResourceConfig": _resources(settings, tuning.instance_type, tuning.instance_count, tuning.volume_size_gb),
        "StoppingCondition": {"MaxRuntimeInSeconds": tuning.max_runtime_seconds},
    }
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": dict(config),
        "TrainingJobDefinition": definition,
    }
    if settings.tags:
        request["Tags"] = settings.tag_list()
    return request
