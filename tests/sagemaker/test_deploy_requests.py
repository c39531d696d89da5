"""The SageMaker deploy step's requests and decisions (`components.sagemaker.endpoint`), without a call: every
request passes botocore's own parameter validation and the limits of its bundled service model
(`limits.check_request`) for the default and a tuned configuration; the limits no model carries are refused by
`endpoint.check` naming the profile key; names, plans and outcomes; the server reads the environment the step
gives the container.  Nothing here talks to AWS (it cannot be reached from here) and nothing is mocked."""

from __future__ import annotations

from typing import Any

import pytest

from components.sagemaker import endpoint as E
from components.sagemaker.limits import check_request
from components.sagemaker.settings import SageMakerSettings, parse
from tests.sagemaker.conftest import ECR, settings_body

MODEL_DATA = "s3://bert-test-bucket/runs/r/models/job/output/model.tar.gz"


def tuned() -> SageMakerSettings:
    """Everything the endpoint takes set: VPC, KMS, 50 tags, ten alarms, the largest canary and waits."""
    return parse(
        settings_body(
            hosting={"instance_type": "ml.c5.xlarge", "instance_count": 4, "endpoint_name": "e" * 63},
            canary={
                "size_percent": 50,
                "wait_interval_seconds": 3600,
                "termination_wait_seconds": 3600,
                "max_execution_timeout_seconds": 28_800,
                "alarms": [f"bert-alarm-{i}" for i in range(10)],
            },
            vpc={"security_group_ids": ["sg-0123abcd"], "subnets": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]},
            kms_key_id="arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            tags={f"team{i}": f"ml-{i}" for i in range(49)},
        )
    )


def requests(settings: SageMakerSettings, version: str = "12") -> list[tuple[str, dict[str, Any]]]:
    name = E.resource_name(settings.hosting.endpoint_name, version, E.stamp())
    environment = E.serving_environment(256, 12_000)
    return [
        (
            "CreateModel",
            E.model_request(
                settings,
                name,
                image=f"{ECR}/serve:1",
                model_data_url=MODEL_DATA,
                environment=environment,
                model_version=version,
            ),
        ),
        ("CreateEndpointConfig", E.endpoint_config_request(settings, name, model_name=name, model_version=version)),
        ("CreateEndpoint", E.create_endpoint_request(settings, name)),
        ("UpdateEndpoint", E.update_endpoint_request(settings, name)),
        ("UpdateEndpoint", E.revert_endpoint_request(settings, name)),
    ]


@pytest.mark.parametrize("configuration", ["default", "tuned"])
def test_every_request_passes_botocores_validation_and_the_models_limits(configuration: str) -> None:
    settings = tuned() if configuration == "tuned" else parse(settings_body())
    for operation, request in requests(settings):
        check_request("sagemaker", operation, request)
    update = requests(settings)[3][1]["DeploymentConfig"]
    assert update["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert len(update["AutoRollbackConfiguration"]["Alarms"]) == len(settings.canary.alarms)
    if configuration == "tuned":
        model, config = requests(settings)[0][1], requests(settings)[1][1]
        assert model["VpcConfig"]["Subnets"] == ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
        assert config["KmsKeyId"].startswith("arn:aws:kms:") and len(config["Tags"]) == 50


@pytest.mark.parametrize(
    ("section", "changes", "error"),
    [
        ("canary", {"size_percent": 51}, r"sagemaker.canary.size_percent 51: .* 1 to 50 %"),
        ("canary", {"wait_interval_seconds": 3601}, r"sagemaker.canary.wait_interval_seconds 3601: 0 to 3600 s"),
        ("canary", {"termination_wait_seconds": -1}, r"sagemaker.canary.termination_wait_seconds -1"),
        ("canary", {"max_execution_timeout_seconds": 599}, r"max_execution_timeout_seconds 599: 600 to 28800 s"),
        ("canary", {"max_execution_timeout_seconds": 28_801}, r"max_execution_timeout_seconds 28801: 600 to 28800"),
        ("canary", {"max_execution_timeout_seconds": 900}, r"900 must exceed .*termination_wait_seconds \(900 s\)"),
        ("canary", {"alarms": ()}, r"sagemaker.canary.alarms: 0 alarm\(s\); name 1 to 10"),
        ("canary", {"alarms": tuple(f"a{i}" for i in range(11))}, r"sagemaker.canary.alarms: 11 alarm\(s\)"),
        ("canary", {"alarms": ("ok", " ")}, r"sagemaker.canary.alarms: ' ' is not a CloudWatch alarm name"),
        ("hosting", {"endpoint_name": "bad_name"}, r"sagemaker.hosting.endpoint_name 'bad_name' is not a SageMaker"),
        ("hosting", {"variant_name": "-x"}, r"sagemaker.hosting.variant_name '-x'"),
        ("tags", {f"k{i}": "v" for i in range(50)}, r"sagemaker.tags: 50 tags; .*SageMaker takes at most 50"),
    ],
)
def test_the_limits_botocore_does_not_check_are_refused_naming_the_key(
    section: str, changes: dict[str, Any], error: str
) -> None:
    """The settings as a profile parses them, then changed past their own validation (`model_copy` does not
    validate): `endpoint.check` is the step's own guard before any call."""
    settings = parse(settings_body())
    part = changes if section == "tags" else getattr(settings, section).model_copy(update=changes)
    with pytest.raises(ValueError, match=error):
        E.check(settings.model_copy(update={section: part}))


def test_names_carry_the_version_and_fit_sagemakers_limit() -> None:
    name = E.resource_name("e" * 63, "123456", "20261206040000")
    assert len(name) == 63 and name.endswith("-v123456-20261206040000") and E.NAME.match(name)
    assert E.live_version(name) == "123456"
    assert E.live_version("hand-made-config") is None
    assert E.resource_name("ab", "7", "20261206040000") == "ab-v7-20261206040000"


def test_earlier_resources_are_the_endpoints_own_names_made_before_this_attempt() -> None:
    endpoint, now = "e" * 63, "20261206040000"
    old, older = E.resource_name(endpoint, "123456", "20261101000000"), E.resource_name(endpoint, "7", "20251101000000")
    live, new = E.resource_name(endpoint, "8", "20261201000000"), E.resource_name(endpoint, "9", now)
    later = E.resource_name(endpoint, "10", "20261206040001")
    assert len(old) == 63 and old.startswith(E.list_filter(endpoint)) and older.startswith(E.list_filter(endpoint))
    names = [old, older, live, new, later, "hand-made-config", "e" * 30 + "-v1-20251101000000", old]
    assert E.earlier_resources(names, endpoint, now, keep=(new, live)) == sorted([old, older])
    assert E.earlier_resources(names, endpoint, now, keep=(new, None)) == sorted([old, older, live])
    assert E.earlier_resources(["ab-v1-20251101000000", "abc-v1-20251101000000"], "ab", now, (None,)) == [
        "ab-v1-20251101000000"
    ]


def described(status: str, config: str, reason: str = "") -> dict[str, Any]:
    return {"EndpointStatus": status, "EndpointConfigName": config, "FailureReason": reason}


@pytest.mark.parametrize(
    ("endpoint", "action"),
    [
        (None, "create"),
        (described("InService", "ep-v3-20261206040000"), "no_op"),
        (described("InService", "ep-v2-20261206040000"), "update"),
        (described("InService", "made-by-hand"), "update"),
    ],
)
def test_plan(endpoint: dict[str, Any] | None, action: str) -> None:
    assert E.plan(endpoint, "ep", "3").action == action


@pytest.mark.parametrize("status", [*E.TRANSITIONAL, "Failed", "UpdateRollbackFailed", "OutOfService"])
def test_an_endpoint_that_is_not_in_service_is_not_touched(status: str) -> None:
    with pytest.raises(E.EndpointBusyError, match=f"endpoint ep is {status}"):
        E.plan(described(status, "ep-v2-20261206040000", "boom"), "ep", "3")


def test_outcome_tells_success_from_sagemakers_rollback_by_the_config_name() -> None:
    assert E.outcome(described("InService", "new"), "new").ok
    rolled = E.outcome(described("InService", "old", "alarm x fired"), "new")
    assert rolled.rolled_back and not rolled.ok and "serves old, not new (alarm x fired)" in rolled.message
    failed = E.outcome(described("UpdateRollbackFailed", "old", "both failed"), "new")
    assert not failed.ok and not failed.rolled_back and "UpdateRollbackFailed: both failed" in failed.message


@pytest.mark.parametrize(
    "uri", ["/tmp/model", "s3://bucket/models/", "s3://bucket/model.zip", "https://bucket.s3.amazonaws.com/m.tar.gz"]
)
def test_model_data_must_be_an_s3_model_tar_gz(uri: str) -> None:
    with pytest.raises(ValueError, match=r"is not the S3 URI of a model\.tar\.gz"):
        E.check_model_data(uri)


def test_the_server_reads_the_environment_the_step_gives_the_container() -> None:
    """Each variable `serving_environment` sets becomes the option of the same name of `python -m serving serve`."""
    from serving import __main__ as cli

    assert cli.ENV_PREFIX == E.SERVING_ENV_PREFIX
    environment = E.serving_environment(64, 9000)
    args = cli.parser().parse_args(cli.serve_argv([], environment))
    assert (args.max_seq_length, args.max_text_chars) == (64, 9000)
    assert E.serving_environment(64, 10)[f"{E.SERVING_ENV_PREFIX}MAX_TEXT_CHARS"] == "5000"  # the server's default


def test_the_component_swaps_in_for_deploy_model(tmp_path: Any) -> None:
    """deploy_sagemaker_endpoint takes deploy_model's inputs less those of the KServe and local backends (its
    endpoint settings come from the profile's sagemaker section), gives the same outputs, and compiles."""
    from kfp import compiler

    from components.deploy.component import deploy_model
    from components.sagemaker.deploy import deploy_sagemaker_endpoint

    kserve_or_local = {
        "deploy_backend", "canary_traffic_percent", "inference_service", "kserve_namespace", "kserve_mode",
        "serving_runtime", "rollout_timeout_seconds", "local_port", "kserve_service_account", "kserve_resources",
    }  # fmt: skip
    ours, theirs = deploy_sagemaker_endpoint.component_spec, deploy_model.component_spec
    assert set(ours.inputs) == set(theirs.inputs) - kserve_or_local
    assert {k: v.type for k, v in ours.inputs.items()} == {k: theirs.inputs[k].type for k in ours.inputs}
    assert {k: v.type for k, v in ours.outputs.items()} == {k: v.type for k, v in theirs.outputs.items()}
    compiler.Compiler().compile(deploy_sagemaker_endpoint, str(tmp_path / "deploy.yaml"))
    assert "deploy-sagemaker-endpoint" in (tmp_path / "deploy.yaml").read_text()
