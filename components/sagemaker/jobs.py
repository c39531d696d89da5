"""Create, wait for and stop SageMaker training and tuning jobs.

No waiter exists for tuning jobs, and a training job's waiter shows nothing while it waits, so both are
polled here: ``Describe*`` with a growing interval (`settings.Waiting`: first interval, factor, ceiling),
every change of status printed (with a training job's ``SecondaryStatus`` and its message, a tuning job's
trial counters), a training job's CloudWatch log lines (log group ``/aws/sagemaker/TrainingJobs``, streams
``<job>/algo-<n>-<time>``) printed as they come, until the job ends or the step's timeout passes.

A timeout, and SIGTERM (what Kubernetes sends when the KFP task is cancelled), stop the job
(``StopTrainingJob`` / ``StopHyperParameterTuningJob``) and wait for it to reach ``Stopped`` for at most
``stop_wait_seconds`` — within the pod's termination grace period.

Each request is checked first (`components.sagemaker.limits.check_request`).  A retried task finds its job by
name (`requests.job_name`): one still running, or completed, is waited for again instead of started twice.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from components.sagemaker.limits import check_request
from components.sagemaker.settings import Waiting

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


class JobFailed(RuntimeError):
    """The job ended Failed (or Stopped by someone else); the message holds SageMaker's FailureReason."""


class JobTimeout(RuntimeError):
    """The job did not end within the step's timeout; it was stopped."""


class Cancelled(Exception):
    """SIGTERM arrived (the KFP task was cancelled)."""


@dataclass(frozen=True)
class JobKind:
    """How one kind of job is described, named and stopped."""

    label: str
    describe: str
    stop: str
    name_key: str
    status_key: str
    ended: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})


TRAINING = JobKind("training job", "DescribeTrainingJob", "StopTrainingJob", "TrainingJobName", "TrainingJobStatus")
TUNING = JobKind(
    "tuning job",
    "DescribeHyperParameterTuningJob",
    "StopHyperParameterTuningJob",
    "HyperParameterTuningJobName",
    "HyperParameterTuningJobStatus",
)
_CREATE = {TRAINING.label: "CreateTrainingJob", TUNING.label: "CreateHyperParameterTuningJob"}


def _snake(operation: str) -> str:
    out = [operation[0].lower()]
    for char in operation[1:]:
        out.append(f"_{char.lower()}" if char.isupper() else char)
    return "".join(out)


def call(client: Any, service: str, operation: str, params: Mapping[str, Any]) -> Any:
    """Check ``params`` against the model's limits, then call ``operation``."""
    check_request(service, operation, params)
    return getattr(client, _snake(operation))(**params)


def describe(client: Any, kind: JobKind, name: str) -> dict[str, Any] | None:
    """The job's description; None when no job has that name."""
    from botocore.exceptions import ClientError

    try:
        return call(client, "sagemaker", kind.describe, {kind.name_key: name})
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        # DescribeHyperParameterTuningJob has a modelled ResourceNotFound; DescribeTrainingJob answers a
        # ValidationException "Requested resource not found."
        if code == "ResourceNotFound" or (code == "ValidationException" and "not found" in message.lower()):
            return None
        raise


def start(
    client: Any,
    kind: JobKind,
    request_for: Callable[[str], dict[str, Any]],
    name_for: Callable[[int], str],
    out: TextIO = sys.stdout,
    max_attempts: int = 9,
) -> str:
    """Start the job, or find the one a previous try of this task started; return its name.

    The first name (``name_for(1)``) whose job is missing is created; a job of that name still running or
    completed is the one to wait for; one that failed or was stopped moves on to the next name.

    Raises:
        RequestLimitError: A request SageMaker would refuse (before anything is created).
        RuntimeError: Every name of ``max_attempts`` has a failed job.
    """
    for attempt in range(1, max_attempts + 1):
        name = name_for(attempt)
        found = describe(client, kind, name)
        if found is None:
            call(client, "sagemaker", _CREATE[kind.label], request_for(name))
            print(f"Created SageMaker {kind.label} {name}", file=out, flush=True)
            return name
        status = found[kind.status_key]
        if status not in ("Failed", "Stopped"):
            print(f"SageMaker {kind.label} {name} exists ({status}): waiting for it", file=out, flush=True)
            return name
        print(f"SageMaker {kind.label} {name} ended {status} earlier: starting a new one", file=out, flush=True)
    raise RuntimeError(f"{max_attempts} {kind.label}s of this run ended Failed or Stopped; start a new run")


@dataclass
class LogTail:
    """A training job's CloudWatch log lines not printed yet (FilterLogEvents over its streams)."""

    logs: Any
    job: str
    group: str = TRAINING_LOG_GROUP
    _seen: set[str] = field(default_factory=set)
    _start: int = 0

    def lines(self) -> list[str]:
        from botocore.exceptions import ClientError

        params: dict[str, Any] = {"logGroupName": self.group, "logStreamNamePrefix": f"{self.job}/"}
        if self._start:
            params["startTime"] = self._start
        out: list[str] = []
        while True:
            try:
                page = call(self.logs, "logs", "FilterLogEvents", params)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return out  # no log group yet: the job has not started an instance
                raise
            for event in page.get("events", []):
                if event["eventId"] in self._seen:
                    continue
                self._seen.add(event["eventId"])
                self._start = max(self._start, int(event["timestamp"]))
                out.append(f"[{event.get('logStreamName', self.job).split('/', 1)[-1]}] {event['message'].rstrip()}")
            token = page.get("nextToken")
            if not token:
                return out
            params["nextToken"] = token


def _status_line(kind: JobKind, job: Mapping[str, Any]) -> str:
    status = job[kind.status_key]
    if kind is TRAINING:
        secondary = job.get("SecondaryStatus", "")
        transitions = job.get("SecondaryStatusTransitions") or []
        message = transitions[-1].get("StatusMessage", "") if transitions else ""
        return f"{status} / {secondary}" + (f": {message}" if message else "")
    counters = job.get("TrainingJobStatusCounters") or {}
    shown = ", ".join(f"{k} {v}" for k, v in counters.items() if v)
    return f"{status}" + (f" (training jobs: {shown})" if shown else "")


@dataclass
class Clock:
    """Time as the waiting sees it (the process's monotonic clock and sleep)."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def stop(client: Any, kind: JobKind, name: str, waiting: Waiting, clock: Clock, out: TextIO) -> dict[str, Any] | None:
    """Stop the job and wait (at most ``stop_wait_seconds``) until it has ended; its last description."""
    from botocore.exceptions import ClientError

    try:
        call(client, "sagemaker", kind.stop, {kind.name_key: name})
        print(f"Stopping SageMaker {kind.label} {name}", file=out, flush=True)
    except ClientError as error:  # it ended meanwhile
        print(f"Could not stop SageMaker {kind.label} {name}: {error}", file=out, flush=True)
    deadline = clock.now() + waiting.stop_wait_seconds
    job = None
    while True:
        job = describe(client, kind, name)
        if job is None or job[kind.status_key] in kind.ended or clock.now() >= deadline:
            if job is not None:
                print(f"SageMaker {kind.label} {name}: {_status_line(kind, job)}", file=out, flush=True)
            return job
        clock.sleep(min(5.0, max(0.0, deadline - clock.now())))


def wait(
    client: Any,
    kind: JobKind,
    name: str,
    waiting: Waiting,
    timeout_seconds: float,
    clock: Clock | None = None,
    logs: LogTail | None = None,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Poll the job until it ends; its final description.

    Raises:
        JobFailed: It ended Failed or Stopped (FailureReason in the message).
        JobTimeout: ``timeout_seconds`` passed; the job was stopped.
        Cancelled: SIGTERM arrived (`stop_on_sigterm`); the job was stopped.
    """
    clock = clock or Clock()
    deadline = clock.now() + timeout_seconds
    interval = waiting.poll_seconds
    last = ""
    try:
        while True:
            job = describe(client, kind, name)
            if job is None:
                raise JobFailed(f"SageMaker {kind.label} {name} does not exist (deleted?)")
            line = _status_line(kind, job)
            if line != last:
                print(f"SageMaker {kind.label} {name}: {line}", file=out, flush=True)
                last = line
            for text in logs.lines() if logs is not None else []:
                print(text, file=out, flush=True)
            status = job[kind.status_key]
            if status == "Completed":
                return job
            if status in ("Failed", "Stopped"):
                reason = job.get("FailureReason") or "no FailureReason given"
                raise JobFailed(f"SageMaker {kind.label} {name} ended {status}: {reason}")
            if clock.now() >= deadline:
                stop(client, kind, name, waiting, clock, out)
                raise JobTimeout(
                    f"SageMaker {kind.label} {name} did not end within {timeout_seconds:.0f} s; it was stopped "
                    "(raise the profile's sagemaker.waiting.timeout_seconds)"
                )
            clock.sleep(min(interval, max(0.0, deadline - clock.now())))
            interval = min(interval * waiting.backoff, waiting.max_poll_seconds)
    except Cancelled:
        stop(client, kind, name, waiting, clock, out)
        raise


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises `Cancelled` (so `wait` stops the job); the old handler comes back after."""

    def _raise(signum: int, frame: Any) -> None:
        raise Cancelled(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
