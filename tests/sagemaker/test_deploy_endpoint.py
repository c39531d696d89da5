"""The SageMaker deploy step (`components.sagemaker.endpoint_step`): create, canary update, SageMaker's rollback,
failure, timeout, no-op, a smoke mismatch, a busy endpoint — and MLflow's champion moved only on success.

AWS cannot be reached from here: SageMaker and SageMaker Runtime are botocore's ``Stubber`` on real clients (the
only mock these tests use) — every request is validated against botocore's bundled service model before the
stub answers (``expected_params`` compares it too), every stubbed answer against the operation's output shape.
What InvokeEndpoint answers is what the real model server answers: the serve image's `serve` program runs on a
free loopback port with the environment the step gives CreateModel, and each stubbed Body is its
``/invocations`` answer to the very body the step sent.  Evaluate's answers come from evaluate's core on the same
tiny classifier; the registry is a real embedded MLflow (SQLite).  Time is a counter (`Clock`), so waiting and
timeouts take no time.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from components.common import schema, tracking
from components.deploy.core import DeploymentError
from components.evaluate import core as evaluate
from components.sagemaker import endpoint as E
from components.sagemaker import endpoint_client, endpoint_step, jobs
from components.sagemaker.settings import SageMakerSettings, parse
from serving.testing import ServerProcess, request
from tests import testing
from tests.sagemaker.conftest import ECR, REGION, ROLE, settings_body

ROOT = Path(__file__).resolve().parents[2]
SEQ = 16
SMOKE = 12
ENDPOINT = "bert-review-sentiment"
STAMP = "20261206040000"
T0 = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
ARN = f"arn:aws:sagemaker:{REGION}:111122223333"


class Clock(jobs.Clock):
    """Seconds that pass only when the waiting sleeps."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        super().__init__(now=lambda: self.t, sleep=self._sleep)

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


@dataclass(frozen=True)
class Handoff:
    """What the pipeline hands deploy, and the real server that stands in for the endpoint's container."""

    predictions: Path
    reviews: Path
    uri: str
    version: str
    server: ServerProcess


@pytest.fixture(scope="module")
def handoff(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Handoff]:
    """A tiny classifier evaluated by evaluate's core on 24 synthetic reviews (version 1 in a fresh SQLite
    registry), prepare's reviews, and images/serve serving that model with the step's container environment."""
    from serving.testing import untrained_classifier

    root = tmp_path_factory.mktemp("sagemaker-deploy")
    model_dir = untrained_classifier(testing.tiny_model(root / "base", dropout=0.0), root / "model")
    texts, labels, facets = testing.synthetic_reviews(24, seed=11)
    features = testing.features(texts, labels, SEQ, facets=facets)
    reviews = pd.DataFrame({schema.REVIEW_ID: features[schema.REVIEW_ID], schema.TEXT: texts})
    reviews.to_parquet(root / "reviews.parquet", index=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    report = evaluate.run(
        features, model_dir, root / "e.json", root / "e.html", 0.0, uri, "clf", "run-1",
        predictions_path=root / "predictions.parquet",
    )  # fmt: skip
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **E.serving_environment(SEQ, max(len(t) for t in texts)),
    }
    server = ServerProcess(model_dir, root / "server.log", program=[str(ROOT / "images" / "serve")], env=environment)
    try:
        yield Handoff(
            root / "predictions.parquet", root / "reviews.parquet", uri, report.registered_version, server.wait()
        )
    finally:
        server.stop()


@pytest.fixture
def champion_at_version_one(handoff: Handoff) -> None:
    tracking.promote(handoff.uri, "clf", handoff.version)


def _second_version(handoff: Handoff) -> str:
    champion = tracking.get_alias(handoff.uri, "clf", tracking.CHAMPION)
    return tracking.register_version(handoff.uri, "clf", champion.source, champion.run_id, {}).version


def _champion(handoff: Handoff) -> str:
    return tracking.get_alias(handoff.uri, "clf", tracking.CHAMPION).version


def settings(**overrides: Any) -> SageMakerSettings:
    return parse(settings_body(**overrides))


def config_name(version: str, when: str = STAMP) -> str:
    return f"{ENDPOINT}-v{version}-{when}"


def described(status: str, config: str, reason: str = "") -> dict[str, Any]:
    """A DescribeEndpoint answer."""
    answer = {
        "EndpointName": ENDPOINT,
        "EndpointArn": f"{ARN}:endpoint/{ENDPOINT}",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": T0,
        "LastModifiedTime": T0,
    }
    return answer | ({"FailureReason": reason} if reason else {})


class Cloud:
    """The two stubbed clients; queue answers with the methods, then `activate`."""

    def __init__(self, aws_env: None) -> None:
        import boto3

        session = boto3.session.Session(region_name=REGION)
        self.sagemaker = session.client("sagemaker")
        self.runtime = session.client("sagemaker-runtime")
        self.sm = Stubber(self.sagemaker)
        self.rt = Stubber(self.runtime)

    def describe(self, *states: dict[str, Any]) -> None:
        for state in states:
            self.sm.add_response("describe_endpoint", state, {"EndpointName": ENDPOINT})

    def no_endpoint(self) -> None:
        self.sm.add_client_error(
            "describe_endpoint",
            service_error_code="ValidationException",
            service_message=f'Could not find endpoint "{ARN}:endpoint/{ENDPOINT}".',
            http_status_code=400,
            expected_params={"EndpointName": ENDPOINT},
        )

    def create_model_and_config(
        self, version: str, expected_model: dict | None = None, expected_config: dict | None = None
    ) -> None:
        """CreateModel and CreateEndpointConfig of ``version`` (the names checked; the bodies where given)."""
        name = config_name(version)
        model = {"ModelName": name, "PrimaryContainer": ANY, "ExecutionRoleArn": ROLE, "Tags": ANY}
        config = {"EndpointConfigName": name, "ProductionVariants": ANY, "Tags": ANY}
        self.sm.add_response("create_model", {"ModelArn": f"{ARN}:model/{name}"}, expected_model or model)
        self.sm.add_response(
            "create_endpoint_config", {"EndpointConfigArn": f"{ARN}:endpoint-config/{name}"}, expected_config or config
        )

    def update(self, config: str, deployment: dict | None) -> None:
        expected: dict[str, Any] = {"EndpointName": ENDPOINT, "EndpointConfigName": config}
        if deployment is not None:
            expected["DeploymentConfig"] = deployment
        self.sm.add_response("update_endpoint", {"EndpointArn": f"{ARN}:endpoint/{ENDPOINT}"}, expected)

    def earlier(self, configs: list[str], models: list[str], deleted: list[str] = ()) -> None:  # type: ignore[assignment]
        """ListEndpointConfigs and ListModels (one page each) answering ``configs`` and ``models``, each followed
        by the deletions expected of those in ``deleted`` (in name order)."""
        listing = {"NameContains": ENDPOINT, "MaxResults": 100}
        for operation, key, names, arn in (
            ("endpoint_config", "EndpointConfig", configs, "endpoint-config"),
            ("model", "Model", models, "model"),
        ):
            items = [{f"{key}Name": n, f"{key}Arn": f"{ARN}:{arn}/{n}", "CreationTime": T0} for n in names]
            self.sm.add_response(f"list_{operation}s", {f"{key}s": items}, listing)
            for name in sorted(n for n in names if n in deleted):
                self.sm.add_response(f"delete_{operation}", {}, {f"{key}Name": name})

    def invoke(self, server: ServerProcess, texts: list[str]) -> None:
        """InvokeEndpoint's answer to the smoke texts: the real server's /invocations answer to the same body."""
        body = json.dumps({"instances": texts}).encode()
        reply = request(f"{server.url}/invocations", body, headers={"Content-Type": "application/json"})
        assert reply.status == 200, reply.body
        expected = {
            "EndpointName": ENDPOINT,
            "Body": body,
            "ContentType": "application/json",
            "Accept": "application/json",
        }
        answer = {"Body": StreamingBody(io.BytesIO(reply.body), len(reply.body)), "ContentType": "application/json"}
        self.rt.add_response("invoke_endpoint", answer, expected)

    def activate(self) -> Cloud:
        self.sm.activate()
        self.rt.activate()
        return self

    def done(self) -> None:
        self.sm.assert_no_pending_responses()
        self.rt.assert_no_pending_responses()


@pytest.fixture
def cloud(aws_env: None) -> Cloud:
    return Cloud(aws_env)


def smoke_texts(handoff: Handoff) -> list[str]:
    from components.deploy.smoke import smoke_set

    return [r.text for r in smoke_set(handoff.predictions, handoff.reviews, SMOKE)]


def deploy(handoff: Handoff, cloud: Cloud, tmp_path: Path, version: str, the_settings: SageMakerSettings | None = None,
           clock: Clock | None = None, **changes: Any) -> Any:  # fmt: skip
    arguments: dict[str, Any] = {
        "model_data_url": "s3://bert-test-bucket/runs/r2/models/job/output/model.tar.gz",
        "model_version": version,
        "reason": "test accuracy 0.5 ≥ --min-accuracy 0.0",
        "predictions_path": handoff.predictions,
        "reviews_path": handoff.reviews,
        "smoke_reviews": SMOKE,
        "max_seq_length": SEQ,
        "report_path": tmp_path / "report.json",
        "tracking_uri": handoff.uri,
        "registered_model_name": "clf",
        "pipeline_run_id": "run-2",
        **changes,
    }
    return endpoint_step.run(
        the_settings or settings(),
        clients=(cloud.sagemaker, cloud.runtime),
        clock=clock or Clock(),
        now=T0,
        **arguments,
    )


def test_the_first_deployment_creates_the_endpoint_smoke_tests_it_and_promotes(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None
) -> None:
    version = _second_version(handoff)
    name = config_name(version)
    tags = [{"Key": "bert-kfp:model-version", "Value": version}]
    cloud.no_endpoint()
    cloud.create_model_and_config(
        version,
        expected_model={
            "ModelName": name,
            "PrimaryContainer": {
                "Image": f"{ECR}/serve:0.1.0-test",
                "Mode": "SingleModel",
                "ModelDataUrl": "s3://bert-test-bucket/runs/r2/models/job/output/model.tar.gz",
                "Environment": {"SERVING_MAX_SEQ_LENGTH": str(SEQ), "SERVING_MAX_TEXT_CHARS": "5000"},
            },
            "ExecutionRoleArn": ROLE,
            "Tags": tags,
        },
        expected_config={
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InitialInstanceCount": 2,
                    "InstanceType": "ml.g5.xlarge",
                    "InitialVariantWeight": 1.0,
                }
            ],
            "Tags": tags,
        },
    )
    cloud.sm.add_response(
        "create_endpoint",
        {"EndpointArn": f"{ARN}:endpoint/{ENDPOINT}"},
        {"EndpointName": ENDPOINT, "EndpointConfigName": name, "Tags": []},
    )
    cloud.describe(described("Creating", name), described("Creating", name), described("InService", name))
    cloud.invoke(handoff.server, smoke_texts(handoff))
    cloud.earlier([name], [name])  # nothing earlier to delete
    clock = Clock()
    report = deploy(handoff, cloud.activate(), tmp_path, version, clock=clock)
    cloud.done()
    assert report.decision == "deployed" and report.outcome == "created" and report.backend == "sagemaker"
    assert report.endpoint == ENDPOINT and report.canary["endpoint_config"] == name
    assert report.smoke["passed"] is True and report.smoke["reviews"] == SMOKE
    assert report.smoke["max_probability_difference"] < 1e-4  # the served model is the evaluated one
    assert _champion(handoff) == version == report.champion
    assert clock.sleeps == [1, 2]  # the profile's backoff: 1 s, then twice as long
    assert json.loads((tmp_path / "report.json").read_text()) == report.to_dict()


CANARY = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
            "WaitIntervalInSeconds": 600,
        },
        "TerminationWaitInSeconds": 300,
        "MaximumExecutionTimeoutInSeconds": 3600,
    },
    "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "bert-5xx"}]},
}


def test_an_update_is_a_blue_green_canary_and_promotes(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None
) -> None:
    version = _second_version(handoff)
    live, new = config_name(handoff.version, "20261201000000"), config_name(version)
    cloud.describe(described("InService", live))
    cloud.create_model_and_config(version)
    cloud.update(new, CANARY)
    cloud.describe(described("Updating", live), described("InService", new))
    cloud.invoke(handoff.server, smoke_texts(handoff))
    older, failed = config_name("1", "20261101000000"), config_name("3", "20261115000000")
    later = config_name("4", "20261206040001")  # another run's, made after this attempt began: it stays
    others = [f"{ENDPOINT}-v1-x", f"{ENDPOINT}-blue-v1-20261101000000"]  # not names this project makes
    cloud.earlier([live, new, older, failed, later, *others], [older, live, new, failed], deleted=[older, failed])
    report = deploy(handoff, cloud.activate(), tmp_path, version)
    cloud.done()
    assert report.outcome == "promoted" and report.canary["previous_config"] == live
    assert "deleted 4 Model(s)/EndpointConfig(s) of earlier deployments" in report.canary["message"]
    assert _champion(handoff) == version


def test_earlier_resources_that_cannot_be_deleted_leave_the_promotion_standing(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None
) -> None:
    version = _second_version(handoff)
    live, new, older = (
        config_name(handoff.version, "20261201000000"),
        config_name(version),
        config_name("1", "20261101000000"),
    )
    cloud.describe(described("InService", live))
    cloud.create_model_and_config(version)
    cloud.update(new, CANARY)
    cloud.describe(described("InService", new))
    cloud.invoke(handoff.server, smoke_texts(handoff))
    listing = {"NameContains": ENDPOINT, "MaxResults": 100}
    cloud.sm.add_client_error(
        "list_endpoint_configs", "AccessDeniedException", "not authorized to perform: sagemaker:ListEndpointConfigs",
        400, expected_params=listing,
    )  # fmt: skip
    cloud.sm.add_response("list_models", {"Models": [
        {"ModelName": n, "ModelArn": f"{ARN}:model/{n}", "CreationTime": T0} for n in (older, live, new)
    ]}, listing)  # fmt: skip
    cloud.sm.add_response("delete_model", {}, {"ModelName": older})
    report = deploy(handoff, cloud.activate(), tmp_path, version)
    cloud.done()
    assert report.outcome == "promoted" and _champion(handoff) == version
    message = report.canary["message"]
    assert "deleted 1 Model(s)/EndpointConfig(s)" in message and "AccessDeniedException" in message
    assert message.endswith("delete them by hand")


def test_a_rollback_by_sagemaker_is_detected_and_the_champion_stays(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None
) -> None:
    """The endpoint is InService again — on the old config: the waiter would call that a success."""
    version = _second_version(handoff)
    live, new = config_name(handoff.version, "20261201000000"), config_name(version)
    cloud.describe(described("InService", live))
    cloud.create_model_and_config(version)
    cloud.update(new, CANARY)
    reason = "Deployment rolled back: alarm bert-5xx went into ALARM state"
    cloud.describe(described("Updating", live), described("RollingBack", live), described("InService", live, reason))
    with pytest.raises(DeploymentError, match=rf"rolled back: .*serves {live}, not {new} \({reason}\).*champion left"):
        deploy(handoff, cloud.activate(), tmp_path, version)
    cloud.done()  # no InvokeEndpoint: nothing was smoke-tested
    assert _champion(handoff) == handoff.version and not (tmp_path / "report.json").exists()
    run = tracking.PipelineRun(handoff.uri, tracking.DEFAULT_EXPERIMENT, "run-2")
    assert run.client.get_run(run.run_id).data.tags["deploy.decision"] == "failed"


def test_a_failed_creation_deletes_the_endpoint_and_the_champion_stays(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None
) -> None:
    version = _second_version(handoff)
    name = config_name(version)
    cloud.no_endpoint()
    cloud.create_model_and_config(version)
    expected = {"EndpointName": ENDPOINT, "EndpointConfigName": name, "Tags": []}
    cloud.sm.add_response("create_endpoint", {"EndpointArn": f"{ARN}:endpoint/{ENDPOINT}"}, expected)
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    cloud.describe(described("Creating", name), described("Failed", name, reason))
    cloud.sm.add_response("delete_endpoint", {}, {"EndpointName": ENDPOINT})
    with pytest.raises(DeploymentError, match=rf"failed: the endpoint is Failed: {reason}; the endpoint was deleted"):
        deploy(handoff, cloud.activate(), tmp_path, version)
    cloud.done()
    assert _champion(handoff) == handoff.version


def test_an_update_that_does_not_settle_in_time_fails_and_the_champion_stays(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None
) -> None:
    version = _second_version(handoff)
    live = config_name(handoff.version, "20261201000000")
    cloud.describe(described("InService", live))
    cloud.create_model_and_config(version)
    cloud.update(config_name(version), CANARY)
    cloud.describe(*[described("Updating", live)] * 18)  # at 0, 1, 3, 7, 11, …, 59 and 60 s
    short = settings(waiting={"poll_seconds": 1, "max_poll_seconds": 4, "backoff": 2, "timeout_seconds": 60})
    clock = Clock()
    with pytest.raises(endpoint_client.EndpointTimeoutError, match=r"still Updating after 60 s"):
        deploy(handoff, cloud.activate(), tmp_path, version, short, clock=clock)
    cloud.done()
    assert clock.t == 60
    assert _champion(handoff) == handoff.version


def test_the_same_version_already_live_is_a_no_op(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None
) -> None:
    cloud.describe(described("InService", config_name(handoff.version, "20261201000000")))
    report = deploy(handoff, cloud.activate(), tmp_path, handoff.version)
    cloud.done()  # nothing created, nothing updated, nothing invoked
    assert report.outcome == "no_op" and report.smoke is None
    assert _champion(handoff) == handoff.version


def test_a_canary_that_answers_otherwise_than_evaluate_is_rolled_back_and_the_champion_stays(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None
) -> None:
    """The alarms passed the canary, but evaluate's predictions say otherwise (another model's answers, with
    clear margins): the step updates the endpoint back to the previous config."""
    predicted = pd.read_parquet(handoff.predictions)
    others = {"negative": "positive", "neutral": "negative", "positive": "neutral"}
    changed = predicted.assign(**{schema.PREDICTED_LABEL: predicted[schema.PREDICTED_LABEL].map(others)})
    for label in ("negative", "neutral", "positive"):
        changed[f"{schema.PROBABILITY_PREFIX}{label}"] = (changed[schema.PREDICTED_LABEL] == label).astype(float)
    changed.to_parquet(tmp_path / "other.parquet", index=False)
    version = _second_version(handoff)
    live, new = config_name(handoff.version, "20261201000000"), config_name(version)
    cloud.describe(described("InService", live))
    cloud.create_model_and_config(version)
    cloud.update(new, CANARY)
    cloud.describe(described("InService", new))
    cloud.invoke(handoff.server, smoke_texts(handoff))
    cloud.update(live, None)  # back, SageMaker's default blue/green (all at once)
    cloud.describe(described("Updating", new), described("InService", live))
    mismatch = rf"rolled back: smoke test failed: .* 0/{SMOKE} labels equal evaluate's.*; rolled back to {live}"
    with pytest.raises(DeploymentError, match=mismatch):
        deploy(handoff, cloud.activate(), tmp_path, version, predictions_path=tmp_path / "other.parquet")
    cloud.done()
    assert _champion(handoff) == handoff.version


@pytest.mark.parametrize(
    ("status", "message"),
    [("Updating", "is Updating .*wait until it is InService"), ("Failed", r"is Failed \(boom\).*delete-endpoint")],
)
def test_a_busy_or_failed_endpoint_is_refused_before_anything_is_created(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None, status: str, message: str
) -> None:
    cloud.describe(described(status, config_name(handoff.version, "20261201000000"), "boom"))
    with pytest.raises(E.EndpointBusyError, match=message):
        deploy(handoff, cloud.activate(), tmp_path, _second_version(handoff))
    cloud.done()
    assert _champion(handoff) == handoff.version


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"model_data_url": "/tmp/model"}, r"model '/tmp/model' is not the S3 URI of a model.tar.gz"),
        ({"model_version": "latest"}, r"model_version 'latest' is not an MLflow model version number"),
        ({"model_version": "99"}, r"Version 99 of registered model 'clf' is not in the MLflow registry"),
        ({"max_seq_length": 2}, r"--max-seq-length must be at least 3"),
        ({"tracking_uri": "http://127.0.0.1:9"}, r"is unreachable"),
        ({"the_settings": "docker.io/me/serve:1"}, r"sagemaker.images.serve: 'docker.io/me/serve:1' is not an ECR"),
        ({"the_settings": (600, 300)}, r"max_execution_timeout_seconds 600 must exceed .* \(900 s\)"),
    ],
)
def test_bad_input_is_refused_before_any_call(
    handoff: Handoff, cloud: Cloud, tmp_path: Path, champion_at_version_one: None, changes: dict, error: str
) -> None:
    """Nothing is queued on the stubs: a call would fail with botocore's UnStubbedResponseError instead."""
    the_settings = changes.pop("the_settings", None)
    if isinstance(the_settings, str):
        body = settings_body()
        the_settings = parse(body | {"images": {**body["images"], "serve": the_settings}})
    elif isinstance(the_settings, tuple):
        canary = {"alarms": ["a"], "max_execution_timeout_seconds": the_settings[0], "wait_interval_seconds": 600}
        the_settings = settings(canary={**canary, "termination_wait_seconds": the_settings[1]})
    version = _second_version(handoff)
    with pytest.raises(ValueError, match=error):
        deploy(handoff, cloud.activate(), tmp_path, changes.pop("model_version", version), the_settings, **changes)
    cloud.done()
    assert _champion(handoff) == handoff.version and not (tmp_path / "report.json").exists()
