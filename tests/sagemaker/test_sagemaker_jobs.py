"""Starting, waiting for, failing, timing out and cancelling SageMaker training and tuning jobs.

AWS cannot be reached from here: SageMaker and CloudWatch Logs are botocore's ``Stubber`` on real clients (the
only mock these tests use) — every request is validated against botocore's bundled service model before the stub
answers, and every stubbed answer against the operation's output shape.  Time is a counter (`FakeClock`), so
the backoff is checked without sleeping.
"""

from __future__ import annotations

import io
import os
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from components.sagemaker import jobs
from components.sagemaker.settings import Waiting
from tests.sagemaker.conftest import REGION

T0 = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
NAME = "bert-train-0123456789"


class FakeClock(jobs.Clock):
    """Seconds that pass only when the waiting sleeps; ``on_sleep`` runs at a given sleep (e.g. a SIGTERM)."""

    def __init__(self, on_sleep: dict[int, Any] | None = None) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep or {}
        super().__init__(now=lambda: self.t, sleep=self._sleep)

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        action = self.on_sleep.get(len(self.sleeps))
        if action is not None:
            action()


def client(service: str, aws_env: None) -> Any:
    import boto3

    return boto3.session.Session(region_name=REGION).client(service)


def training(status: str, secondary: str, **extra: Any) -> dict[str, Any]:
    """A DescribeTrainingJob answer (the members the output shape requires, and ``extra``)."""
    return {
        "TrainingJobName": NAME,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:111122223333:training-job/{NAME}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://bert-test-bucket/runs/r/models/{NAME}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": T0,
        "SecondaryStatusTransitions": [{"Status": secondary, "StartTime": T0, "StatusMessage": f"{secondary} now"}],
        **extra,
    }


def event(i: int, message: str) -> dict[str, Any]:
    stamp = int((T0 + timedelta(seconds=i)).timestamp() * 1000)
    return {"logStreamName": f"{NAME}/algo-1-1765000000", "timestamp": stamp, "message": message, "eventId": f"e{i}"}


WAIT = Waiting(poll_seconds=10, max_poll_seconds=40, backoff=2, stop_wait_seconds=20)
DESCRIBE = {"TrainingJobName": NAME}
LOGS = {"logGroupName": jobs.TRAINING_LOG_GROUP, "logStreamNamePrefix": f"{NAME}/"}


def test_wait_prints_transitions_and_log_lines_with_backoff(aws_env: None) -> None:
    sm, logs = client("sagemaker", aws_env), client("logs", aws_env)
    with Stubber(sm) as sms, Stubber(logs) as ls:
        sms.add_response("describe_training_job", training("InProgress", "Starting"), DESCRIBE)
        ls.add_client_error(
            "filter_log_events", "ResourceNotFoundException", "The specified log group does not exist.", 400, LOGS
        )
        sms.add_response("describe_training_job", training("InProgress", "Training"), DESCRIBE)
        ls.add_response("filter_log_events", {"events": [event(1, "hello"), event(2, "step 1/3")]}, LOGS)
        sms.add_response("describe_training_job", training("InProgress", "Training"), DESCRIBE)
        later = {**LOGS, "startTime": int((T0 + timedelta(seconds=2)).timestamp() * 1000)}
        ls.add_response(
            "filter_log_events", {"events": [event(2, "step 1/3")], "nextToken": "t1"}, later
        )  # an event seen already is not printed twice
        ls.add_response("filter_log_events", {"events": [event(3, "done")]}, {**later, "nextToken": "t1"})
        final = training(
            "Completed", "Completed", FinalMetricDataList=[{"MetricName": "validation-accuracy", "Value": 0.7}]
        )
        sms.add_response("describe_training_job", final, DESCRIBE)
        ls.add_response("filter_log_events", {"events": []}, {**LOGS, "startTime": ANY})
        out, clock = io.StringIO(), FakeClock()
        job = jobs.wait(sm, jobs.TRAINING, NAME, WAIT, 3600, clock, jobs.LogTail(logs, NAME), out)
        sms.assert_no_pending_responses()
        ls.assert_no_pending_responses()
    assert job["TrainingJobStatus"] == "Completed"
    assert clock.sleeps == [10, 20, 40]  # backoff ×2 up to the ceiling
    text = out.getvalue()
    assert "InProgress / Starting: Starting now" in text and "InProgress / Training: Training now" in text
    assert text.count("step 1/3") == 1 and "[algo-1-1765000000] done" in text
    assert text.index("hello") < text.index("done") < text.index("Completed / Completed")


def test_a_failed_job_fails_the_step_with_its_reason(aws_env: None) -> None:
    sm = client("sagemaker", aws_env)
    with Stubber(sm) as sms:
        sms.add_response("describe_training_job", training("InProgress", "Training"), DESCRIBE)
        failed = training("Failed", "Failed", FailureReason="AlgorithmError: bad --learning-rate")
        sms.add_response("describe_training_job", failed, DESCRIBE)
        with pytest.raises(jobs.JobFailed, match="ended Failed: AlgorithmError: bad --learning-rate"):
            jobs.wait(sm, jobs.TRAINING, NAME, WAIT, 3600, FakeClock(), None, io.StringIO())
        sms.assert_no_pending_responses()


def test_timeout_stops_the_job(aws_env: None) -> None:
    sm = client("sagemaker", aws_env)
    with Stubber(sm) as sms:
        for _ in range(3):  # t = 0, 10, 25 (the last sleep is cut at the deadline)
            sms.add_response("describe_training_job", training("InProgress", "Training"), DESCRIBE)
        sms.add_response("stop_training_job", {}, DESCRIBE)
        sms.add_response("describe_training_job", training("Stopping", "Stopping"), DESCRIBE)
        sms.add_response("describe_training_job", training("Stopped", "Stopped"), DESCRIBE)
        out, clock = io.StringIO(), FakeClock()
        with pytest.raises(jobs.JobTimeout, match="did not end within 25 s; it was stopped"):
            jobs.wait(sm, jobs.TRAINING, NAME, WAIT, 25, clock, None, out)
        sms.assert_no_pending_responses()
    assert clock.sleeps[:2] == [10, 15]
    assert "Stopping SageMaker training job" in out.getvalue() and "Stopped / Stopped" in out.getvalue()


def test_sigterm_stops_the_job(aws_env: None) -> None:
    """What Kubernetes sends when the KFP task is cancelled: the job is stopped before the step exits."""
    sm = client("sagemaker", aws_env)
    with Stubber(sm) as sms:
        sms.add_response("describe_training_job", training("InProgress", "Training"), DESCRIBE)
        sms.add_response("stop_training_job", {}, DESCRIBE)
        sms.add_response("describe_training_job", training("Stopped", "Stopped"), DESCRIBE)
        clock = FakeClock({1: lambda: os.kill(os.getpid(), signal.SIGTERM)})
        previous = signal.getsignal(signal.SIGTERM)
        with pytest.raises(jobs.Cancelled), jobs.stop_on_sigterm():
            jobs.wait(sm, jobs.TRAINING, NAME, WAIT, 3600, clock, None, io.StringIO())
        sms.assert_no_pending_responses()
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back


def _not_found(stubber: Stubber, name: str) -> None:
    stubber.add_client_error(
        "describe_training_job", "ValidationException", "Requested resource not found.", 400, {"TrainingJobName": name}
    )


def test_start_creates_once_and_a_retried_task_waits_for_its_job(aws_env: None) -> None:
    sm = client("sagemaker", aws_env)
    names = [jobs_name(a) for a in (1, 2, 3)]
    request = {
        "TrainingJobName": names[1],
        "AlgorithmSpecification": {"TrainingImage": "x", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::111122223333:role/r",
        "OutputDataConfig": {"S3OutputPath": "s3://b/p"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }
    with Stubber(sm) as sms:
        # first try: attempt 1 ended Failed earlier, attempt 2 is new
        sms.add_response(
            "describe_training_job",
            training("Failed", "Failed", TrainingJobName=names[0]),
            {"TrainingJobName": names[0]},
        )
        _not_found(sms, names[1])
        sms.add_response(
            "create_training_job", {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:1:training-job/x"}, request
        )
        # a retried task: attempt 2 is still running, so nothing is created
        sms.add_response(
            "describe_training_job",
            training("Failed", "Failed", TrainingJobName=names[0]),
            {"TrainingJobName": names[0]},
        )
        sms.add_response(
            "describe_training_job",
            training("InProgress", "Training", TrainingJobName=names[1]),
            {"TrainingJobName": names[1]},
        )
        out = io.StringIO()

        def make(name: str) -> dict[str, Any]:
            return {**request, "TrainingJobName": name}

        assert jobs.start(sm, jobs.TRAINING, make, jobs_name, out) == names[1]
        assert jobs.start(sm, jobs.TRAINING, make, jobs_name, out) == names[1]
        sms.assert_no_pending_responses()
    assert "ended Failed earlier: starting a new one" in out.getvalue() and "exists (InProgress)" in out.getvalue()


def jobs_name(attempt: int) -> str:
    from components.sagemaker.requests import job_name

    return job_name("train", "run-1", attempt)


def test_tuning_job_is_polled_with_its_trial_counters(aws_env: None) -> None:
    sm = client("sagemaker", aws_env)
    name = "bert-tune-0123456789"

    def tuning(status: str, completed: int) -> dict[str, Any]:
        return {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobArn": f"arn:aws:sagemaker:{REGION}:111122223333:hyper-parameter-tuning-job/{name}",
            "HyperParameterTuningJobConfig": {"Strategy": "Random", "ResourceLimits": {"MaxParallelTrainingJobs": 1}},
            "HyperParameterTuningJobStatus": status,
            "CreationTime": T0,
            "TrainingJobStatusCounters": {"Completed": completed, "InProgress": 2 - completed},
            "ObjectiveStatusCounters": {"Succeeded": completed},
        }

    with Stubber(sm) as sms:
        describe = {"HyperParameterTuningJobName": name}
        sms.add_response("describe_hyper_parameter_tuning_job", tuning("InProgress", 0), describe)
        sms.add_response("describe_hyper_parameter_tuning_job", tuning("InProgress", 1), describe)
        sms.add_response("describe_hyper_parameter_tuning_job", tuning("Completed", 2), describe)
        out = io.StringIO()
        job = jobs.wait(sm, jobs.TUNING, name, WAIT, 3600, FakeClock(), None, out)
        sms.assert_no_pending_responses()
    assert job["HyperParameterTuningJobStatus"] == "Completed"
    assert "InProgress (training jobs: Completed 1, InProgress 1)" in out.getvalue()
