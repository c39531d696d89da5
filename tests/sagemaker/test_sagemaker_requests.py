"""The SageMaker requests the steps build: valid for botocore, within the limits botocore does not check, and
metric definitions that match what the training really prints.

AWS cannot be reached from here: requests go to botocore's ``Stubber`` on a real client (the only mock these tests
use) — ``add_response(operation, answer, expected_params)`` makes botocore validate the request against its
bundled service model before the stub answers; the limits it leaves out (maximums, enums, patterns) are checked
by `components.sagemaker.limits` before any call, and a request over them never reaches the client.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from components.common import trial_metrics
from components.sagemaker import limits, requests, tuning
from components.sagemaker.core import training_option_names
from components.sagemaker.settings import parse
from components.tune import spec_loading
from tests.sagemaker.conftest import REGION, settings_body

RUN = "4f1c2a9e-1111-2222-3333-444455556666"
TUNED = settings_body(
    training={
        "instance_type": "ml.p4d.24xlarge",
        "instance_count": 2,
        "spot": True,
        "max_runtime_seconds": 7200,
        "max_wait_seconds": 14400,
        "max_pending_seconds": 7200,
    },
    tuning={"instance_type": "ml.g6.xlarge", "instance_count": 1, "max_runtime_seconds": 3600},
    vpc={"security_group_ids": ["sg-0abc"], "subnets": ["subnet-0abc", "subnet-0def"]},
    kms_key_id="arn:aws:kms:us-east-1:111122223333:key/abcd-1234",
    tags={"project": "bert-kfp", "cost-center": "ml"},
)
VALUES = {
    "feature_store": "/mnt/feast",
    "feast_config": "cluster",
    "base_model": "",
    "num_train_epochs": 3,
    "learning_rate": 5e-05,
    "per_device_train_batch_size": 32,
    "max_seq_length": 128,
    "seed": 42,
    "health_policy": "report",
    "pipeline_run_id": RUN,
    "data_hash": "abc123",
}


def sagemaker_client(aws_env: None) -> Any:
    import boto3

    return boto3.session.Session(region_name=REGION).client("sagemaker")


@pytest.mark.parametrize("body", [settings_body(), TUNED], ids=["default", "tuned"])
def test_training_job_request_passes_botocore_validation(aws_env: None, body: dict[str, Any]) -> None:
    settings = parse(body)
    hyper = requests.hyperparameters({**VALUES, "warmup_ratio": 0.06, "use_cpu": False}, training_option_names())
    assert all(isinstance(v, str) for v in hyper.values())
    assert hyper["learning_rate"] == "5e-05" and hyper["use_cpu"] == "false" and "feature_store" not in hyper
    name = requests.job_name("train", RUN)
    request = requests.training_job_request(settings, name, settings.image("train"), hyper, RUN)
    limits.check_request("sagemaker", "CreateTrainingJob", request)
    client = sagemaker_client(aws_env)
    with Stubber(client) as stub:
        stub.add_response(
            "create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:1:training-job/{name}"}, request
        )
        client.create_training_job(**request)
        stub.assert_no_pending_responses()
    assert request["CheckpointConfig"] == {
        "S3Uri": f"s3://bert-test-bucket/runs/{RUN}/checkpoints/{name}",
        "LocalPath": "/opt/ml/checkpoints",
    }
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels == {
        "train": f"s3://bert-test-bucket/runs/{RUN}/channels/train/",
        "validation": f"s3://bert-test-bucket/runs/{RUN}/channels/validation/",
    }
    if body is TUNED:
        assert request["ResourceConfig"]["InstanceCount"] == 2 and request["EnableManagedSpotTraining"] is True
        assert request["StoppingCondition"] == {
            "MaxRuntimeInSeconds": 7200,
            "MaxWaitTimeInSeconds": 14400,
            "MaxPendingTimeInSeconds": 7200,
        }
        assert request["VpcConfig"]["Subnets"] == ["subnet-0abc", "subnet-0def"]
        assert request["OutputDataConfig"]["KmsKeyId"] == request["ResourceConfig"]["VolumeKmsKeyId"]


SPECS = {
    "random-log": """
algorithm: {algorithmName: random, algorithmSettings: [{name: random_state, value: "7"}]}
maxTrialCount: 6
parallelTrialCount: 2
parameters:
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "1e-5", max: "1e-4", distribution: logUniform}}
  - {name: per_device_train_batch_size, parameterType: int, feasibleSpace: {min: "8", max: "32"}}
  - {name: warmup_ratio, parameterType: double, feasibleSpace: {min: "0", max: "0.2", step: "0.1"}}
""",
    "bayesian-medianstop": """
objective: {type: minimize, objectiveMetricName: validation-loss, goal: 0.3}
algorithm: {algorithmName: bayesianoptimization}
maxTrialCount: 20
earlyStopping: {algorithmName: medianstop}
parameters:
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "1e-5", max: "1e-4"}}
  - {name: lr_scheduler_type, parameterType: categorical, feasibleSpace: {list: [linear, cosine]}}
""",
    "hyperband": """
algorithm: {algorithmName: hyperband, algorithmSettings: [{name: r_l, value: "9"}]}
maxTrialCount: 12
parameters:
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "1e-5", max: "1e-4", distribution: logUniform}}
""",
    "grid": """
algorithm: {algorithmName: grid}
maxTrialCount: 6
parameters:
  - {name: learning_rate, parameterType: discrete, feasibleSpace: {list: ["2e-5", "5e-5"]}}
  - {name: per_device_train_batch_size, parameterType: int, feasibleSpace: {min: "16", max: "32", step: "8"}}
""",
}


def _tuning_request(spec_text: str, body: dict[str, Any]) -> dict[str, Any]:
    settings = parse(body)
    spec = spec_loading.load_spec(spec_text)
    spec.validate()
    static = requests.hyperparameters(
        {"base_model": "", "max_seq_length": 128, "seed": 42, "metric_for_best_model": spec.objective.training_metric},
        training_option_names(),
    )
    return requests.tuning_job_request(
        settings, requests.job_name("tune", RUN), settings.image("train"), tuning.tuning_job_config(spec), static, RUN
    )


@pytest.mark.parametrize("body", [settings_body(), TUNED], ids=["default", "tuned"])
@pytest.mark.parametrize("spec", list(SPECS))
def test_tuning_job_request_passes_botocore_validation(aws_env: None, spec: str, body: dict[str, Any]) -> None:
    request = _tuning_request(SPECS[spec], body)
    limits.check_request("sagemaker", "CreateHyperParameterTuningJob", request)
    client = sagemaker_client(aws_env)
    with Stubber(client) as stub:
        stub.add_response(
            "create_hyper_parameter_tuning_job",
            {"HyperParameterTuningJobArn": "arn:aws:sagemaker:us-east-1:1:hyper-parameter-tuning-job/x"},
            request,
        )
        client.create_hyper_parameter_tuning_job(**request)
        stub.assert_no_pending_responses()


def test_the_spec_maps_to_sagemakers_strategies_and_ranges() -> None:
    config = {
        name: _tuning_request(text, settings_body())["HyperParameterTuningJobConfig"] for name, text in SPECS.items()
    }
    random = config["random-log"]
    assert random["Strategy"] == "Random" and random["RandomSeed"] == 7
    assert random["ResourceLimits"] == {"MaxParallelTrainingJobs": 2, "MaxNumberOfTrainingJobs": 6}
    ranges = random["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "learning_rate", "MinValue": "1e-05", "MaxValue": "0.0001", "ScalingType": "Logarithmic"}
    ]
    assert ranges["IntegerParameterRanges"][0]["ScalingType"] == "Linear"
    assert ranges["CategoricalParameterRanges"] == [{"Name": "warmup_ratio", "Values": ["0.0", "0.1", "0.2"]}]
    bayes = config["bayesian-medianstop"]
    assert (bayes["Strategy"], bayes["TrainingJobEarlyStoppingType"]) == ("Bayesian", "Auto")
    assert bayes["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "validation-loss"}
    assert bayes["TuningJobCompletionCriteria"] == {"TargetObjectiveMetricValue": 0.3}
    hyperband = config["hyperband"]
    assert hyperband["Strategy"] == "Hyperband" and hyperband["TrainingJobEarlyStoppingType"] == "Off"
    assert hyperband["StrategyConfig"] == {"HyperbandStrategyConfig": {"MaxResource": 9}}
    grid = config["grid"]
    assert grid["Strategy"] == "Grid" and "MaxNumberOfTrainingJobs" not in grid["ResourceLimits"]
    assert set(grid["ParameterRanges"]) == {"CategoricalParameterRanges"}
    assert grid["ParameterRanges"]["CategoricalParameterRanges"][1] == {
        "Name": "per_device_train_batch_size",
        "Values": ["16", "24", "32"],
    }


@pytest.mark.parametrize("algorithm", ["tpe", "multivariate-tpe", "cmaes", "sobol"])
def test_algorithms_sagemaker_lacks_are_refused_with_the_list_it_has(algorithm: str) -> None:
    spec = spec_loading.load_spec(
        SPECS["random-log"].replace(
            'algorithmName: random, algorithmSettings: [{name: random_state, value: "7"}]',
            f"algorithmName: {algorithm}",
        )
    )
    spec.validate()
    with pytest.raises(
        ValueError,
        match=rf"algorithm.algorithmName: SageMaker .* has no '{algorithm}'; it has random \(Random\), "
        r"bayesianoptimization \(Bayesian\), hyperband \(Hyperband\), grid \(Grid\)",
    ):
        tuning.tuning_job_config(spec)


def test_an_algorithm_setting_sagemaker_lacks_is_refused() -> None:
    spec = spec_loading.load_spec(SPECS["hyperband"].replace("name: r_l", "name: eta"))
    spec.validate()
    with pytest.raises(ValueError, match=r"algorithmSettings.eta: SageMaker's Hyperband strategy has no such setting"):
        tuning.check(spec)


def _training_request(**changes: Any) -> dict[str, Any]:
    settings = parse(settings_body())
    request = requests.training_job_request(
        settings, requests.job_name("train", RUN), settings.image("train"), {"seed": "1"}, RUN
    )
    return {**request, **changes}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": 41}, r"AlgorithmSpecification.MetricDefinitions: 41 items, at most 40 allowed"),
        ({"regex": "x" * 501}, r"MetricDefinitions\[0\].Regex: 501 characters, at most 500 allowed"),
        ({"TrainingJobName": "a" * 64}, r"TrainingJobName: 64 characters, at most 63 allowed"),
        ({"TrainingJobName": "bad_name"}, r"TrainingJobName: 'bad_name' does not match the pattern"),
        ({"instance": "ml.x9.huge"}, r"ResourceConfig.InstanceType: 'ml.x9.huge' is not one of SageMaker's values"),
        ({"HyperParameters": {f"k{i}": "v" for i in range(101)}}, r"HyperParameters: 101 entries, at most 100"),
        ({"HyperParameters": {"k": "v" * 2501}}, r"HyperParameters\['k'\]: 2501 characters, at most 2500"),
        ({"Tags": [{"Key": "bad\x00", "Value": "v"}]}, r"Tags\[0\].Key: .* does not match the pattern"),
    ],
)
def test_limits_botocore_does_not_check_are_refused_before_any_call(
    aws_env: None, change: dict[str, Any], message: str
) -> None:
    request = _training_request(**{k: v for k, v in change.items() if k[0].isupper()})
    algorithm = dict(request["AlgorithmSpecification"])
    if "metrics" in change:
        algorithm["MetricDefinitions"] = [{"Name": f"m{i}", "Regex": "(x)"} for i in range(change["metrics"])]
    if "regex" in change:
        algorithm["MetricDefinitions"] = [{"Name": "m", "Regex": change["regex"]}]
    request["AlgorithmSpecification"] = algorithm
    if "instance" in change:
        request["ResourceConfig"] = {**request["ResourceConfig"], "InstanceType": change["instance"]}
    from botocore.validate import validate_parameters

    shape = limits.service_model("sagemaker").operation_model("CreateTrainingJob").input_shape
    validate_parameters(request, shape)  # botocore itself lets it through: raises nothing …
    client = sagemaker_client(aws_env)
    with Stubber(client) as stub, pytest.raises(limits.RequestLimitError, match=message):  # … ours refuses it
        from components.sagemaker.jobs import call

        call(client, "sagemaker", "CreateTrainingJob", request)  # no response queued: a call would fail otherwise
    stub.assert_no_pending_responses()


def test_a_tuning_job_name_over_32_characters_is_refused() -> None:
    request = _tuning_request(SPECS["grid"], settings_body())
    request["HyperParameterTuningJobName"] = "bert-tune-" + "a" * 23
    with pytest.raises(limits.RequestLimitError, match="HyperParameterTuningJobName: 33 characters, at most 32"):
        limits.check_request("sagemaker", "CreateHyperParameterTuningJob", request)
    assert len(requests.job_name("tune", RUN, attempt=9)) <= 32


# --- metric definitions against real training output ---------------------------------------------------------


@pytest.fixture(scope="module")
def training_output(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Every line (stdout and stderr, as CloudWatch receives both) of a real, tiny training run."""
    from tests import testing
    from tests.stores import synthetic_feature_store

    root = tmp_path_factory.mktemp("sm-train")
    store = synthetic_feature_store(root, rows=60, seed=3)
    model = testing.tiny_model(root / "tiny")
    argv = [
        sys.executable,
        "-m",
        "components.train",
        "--feature-store",
        str(store),
        "--base-model",
        str(model),
        "--output-dir",
        str(root / "out"),
        "--no-mlflow",
        "--max-steps",
        "4",
        "--eval-steps",
        "2",
        "--logging-steps",
        "1",
        "--per-device-train-batch-size",
        "8",
        "--max-seq-length",
        "32",
        "--use-cpu",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return (done.stdout + done.stderr).splitlines()


def _metric_value(regex: str, line: str) -> float | None:
    """What SageMaker takes from a log line for a metric definition: ``re.search``, the first group as a float."""
    match = re.search(regex, line)
    return float(match.group(1)) if match else None


def test_metric_definitions_match_the_lines_the_training_prints(training_output: list[str]) -> None:
    """Applied as SageMaker applies them — ``re.search`` on each log line, the first group is the value."""
    definitions = requests.metric_definitions()
    found: dict[str, list[float]] = {d["Name"]: [] for d in definitions}
    for line in training_output:
        for d in definitions:
            value = _metric_value(d["Regex"], line)
            if value is not None:
                found[d["Name"]].append(value)
    metric_lines = [trial_metrics.parse_line(line) for line in training_output]
    parsed = [m for m in metric_lines if m is not None]
    assert len(parsed) >= 2  # evaluations at steps 2 and 4
    for name in trial_metrics.METRIC_NAMES:  # every metric line gives every validation metric, to 6 digits
        assert found[name] == pytest.approx([m.metrics[name] for m in parsed], abs=1e-6)
    assert len(found["train-loss"]) == len(found["train-epoch"]) == len(found["train-samples-per-second"]) >= 4
    assert all(v > 0 for v in found["train-loss"]) and all(v >= 0 for v in found["train-learning-rate"])
    assert len(definitions) <= 40 and all(len(d["Regex"]) <= 500 for d in definitions)


def test_metric_definitions_ignore_other_lines() -> None:
    lines = [
        trial_metrics.format_line(1, 2, {"accuracy": 0.5}),  # a line with only accuracy
        "2026-12-06 warning: validation-accuracy=0.99 seen in a message",  # not a metric line
        "step 3/10 | epoch 0.30 | loss nan | lr 5e-05 | grad nan | 12.0 samples/s | 0.100 s/step | ETA 0m01s",
    ]
    definitions = {d["Name"]: d["Regex"] for d in requests.metric_definitions()}
    assert _metric_value(definitions["validation-accuracy"], lines[0]) == 0.5
    assert _metric_value(definitions["validation-loss"], lines[0]) is None
    assert _metric_value(definitions["validation-accuracy"], lines[1]) is None
    assert _metric_value(definitions["train-loss"], lines[2]) is None  # nan is no value
    assert _metric_value(definitions["train-samples-per-second"], lines[2]) == 12.0


def test_the_progress_line_format_is_the_one_the_regexes_read() -> None:
    """The progress line as `components.train.callbacks` logs it, through the project's log format."""
    from components.common.logs import configure_logging
    from components.train.callbacks import Throughput

    configure_logging()
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.getLogger("components").handlers[0].formatter)
    logger = logging.getLogger("components.train")
    logger.addHandler(handler)
    try:
        meter = Throughput(world_size=1)
        meter.steps, meter.seconds = 5, 2.0
        meter.log_line(
            5, 50, {"epoch": 0.5, "loss": 1.0986, "learning_rate": 3e-05, "grad_norm": 1.5, "samples_per_second": 80.0}
        )
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    definitions = {d["Name"]: d["Regex"] for d in requests.metric_definitions()}
    assert _metric_value(definitions["train-loss"], line) == 1.0986
    assert _metric_value(definitions["train-epoch"], line) == 0.5
    assert _metric_value(definitions["train-learning-rate"], line) == 3e-05
    assert _metric_value(definitions["train-samples-per-second"], line) == 80.0


def test_hyperparameters_refuse_an_unknown_training_option() -> None:
    with pytest.raises(ValueError, match=r"Unknown training option\(s\) \['learning_rat'\]; valid: .*learning_rate"):
        requests.hyperparameters({"learning_rat": 1e-5}, training_option_names())


def test_job_names_are_stable_per_run_and_valid(tmp_path: Path) -> None:
    assert requests.job_name("train", RUN) == requests.job_name("train", RUN) != requests.job_name("train", "other")
    assert requests.job_name("train", RUN, 2).endswith("-a2")
