"""The SageMaker endpoint of a deployment: names, checks, request bodies and decisions — pure, no boto3.

A model version that passed evaluate's gate becomes, on SageMaker (`components.sagemaker.endpoint_client`
makes the calls):

1. a **Model** (`model_request`): the serve image with the model data (the training job's ``model.tar.gz``)
   and the server's options as environment variables (`serving_environment`);
2. a new **EndpointConfig** per version (`endpoint_config_request`), its one production variant always under
   the same name (``hosting.variant_name``);
3. the **Endpoint** created with it the first time (`create_endpoint_request`), else updated to it by a
   blue/green **canary** (`update_endpoint_request`): ``canary.size_percent`` of the new fleet's capacity
   takes traffic for ``wait_interval_seconds`` while the CloudWatch alarms watch it, then all of it; any alarm
   rolls the update back (``AutoRollbackConfiguration``).

After a successful rollout the Models and EndpointConfigs of earlier deployments of the endpoint are deleted
(`earlier_resources`), but for the one it replaced: SageMaker keeps every one until deleted, and an account
holds a limited number.  The model data in S3 and the MLflow versions stay, so any version can be deployed again.

`plan` decides from DescribeEndpoint what to do (create, update, or nothing: this version is already live);
`outcome` reads the endpoint once it has settled.  After a rollback SageMaker's endpoint is ``InService``
again — on the *old* EndpointConfig, with the reason in ``FailureReason`` — so the config name is what tells
success from rollback (the boto3 waiter alone would report success).

Model and EndpointConfig names carry the version and the UTC time of the attempt
(``<endpoint>-v<version>-<yyyymmddHHMMSS>``): a retried version gets new ones (SageMaker refuses to create a
name that exists), and `live_version` reads the live version back from the endpoint's config name.

The limits botocore's validation leaves out (its checks stop at required keys, types and minimums; DESIGN.md
§9) are `check`ed here before any call: the names' patterns and lengths, the canary's size (≤ 50 % of the
variant's capacity), wait (0–3,600 s), maximum execution time (600–28,800 s and longer than the waits),
1–10 alarms, room for the version tag, the model data's S3 URI; `endpoint_client` then checks every request
against the service model's own limits (`components.sagemaker.limits`) before the first call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover - typing only
    from components.sagemaker.settings import SageMakerSettings

#: SageMaker's name pattern for endpoints, endpoint configs, variants (API reference: EndpointName).
NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MAX_NAME = 63
#: ContainerDefinition.ModelDataUrl: an S3 URI of a model.tar.gz (SageMaker unpacks it into /opt/ml/model).
_MODEL_DATA = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+\.tar\.gz$")
_STAMPED = re.compile(r"-v(\d+)-(\d{14})$")
#: Prefix of the model server's options in its environment (`serving.config.ENV_PREFIX`, `python -m serving serve`).
SERVING_ENV_PREFIX = "SERVING_"
#: Texts per InvokeEndpoint request of the smoke test (the server's default limit is 64).
SMOKE_CHUNK = 32
#: The server's default --max-text-chars; the smoke test raises it to its longest review.
DEFAULT_MAX_TEXT_CHARS = 5000

#: The tag on each Model and EndpointConfig naming the MLflow model version; SageMaker's limit of tags per resource.
VERSION_TAG = "bert-kfp:model-version"
MAX_TAGS = 50

#: DescribeEndpoint's EndpointStatus values while SageMaker is still at work.
TRANSITIONAL = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
IN_SERVICE = "InService"

Action = Literal["create", "update", "no_op"]


class EndpointBusyError(RuntimeError):
    """The endpoint is in a state in which it cannot be updated now (another update, a failed creation)."""


def check_name(value: str, key: str) -> str:
    """``value`` if it is a valid SageMaker resource name.

    Raises:
        ValueError: Naming ``key`` and the rule.
    """
    if not NAME.match(value):
        raise ValueError(
            f"{key} {value!r} is not a SageMaker name: letters, digits and '-', starting and ending with a letter or "
            f"digit, at most {MAX_NAME} characters"
        )
    return value


def check_model_version(version: str) -> str:
    """The MLflow model version (digits), stripped.

    Raises:
        ValueError: Empty or not a number.
    """
    version = version.strip()
    if not version.isdigit():
        raise ValueError(
            f"model_version {version!r} is not an MLflow model version number: pass the version evaluate registered"
        )
    return version


def check_model_data(uri: str) -> str:
    """``uri`` if it is the S3 URI of a ``model.tar.gz`` (what a SageMaker training job writes).

    Raises:
        ValueError: Anything else (a local path, a directory), naming the input.
    """
    if not _MODEL_DATA.match(uri):
        raise ValueError(
            f"model {uri!r} is not the S3 URI of a model.tar.gz: the SageMaker endpoint serves what the SageMaker "
            "training step wrote (s3://bucket/.../model.tar.gz); compile with --target sagemaker"
        )
    return uri


def check(settings: SageMakerSettings) -> None:
    """The endpoint's settings against SageMaker's limits that botocore does not check (see the module
    docstring).  The settings' own validation already holds most; this repeats the canary's limits where the
    deployment depends on them and adds the rules between keys.

    Raises:
        ValueError: The first problem, naming the profile key (``sagemaker.…``).
    """
    hosting, canary = settings.hosting, settings.canary
    check_name(hosting.endpoint_name, "sagemaker.hosting.endpoint_name")
    check_name(hosting.variant_name, "sagemaker.hosting.variant_name")
    if hosting.instance_count < 1:
        raise ValueError(f"sagemaker.hosting.instance_count {hosting.instance_count}: at least 1 instance")
    if not 1 <= canary.size_percent <= 50:
        raise ValueError(
            f"sagemaker.canary.size_percent {canary.size_percent}: the canary takes 1 to 50 % of the variant's "
            f"{hosting.instance_count} instance(s) (SageMaker's limit: at most half)"
        )
    if not 0 <= canary.wait_interval_seconds <= 3600:
        raise ValueError(f"sagemaker.canary.wait_interval_seconds {canary.wait_interval_seconds}: 0 to 3600 s")
    if not 0 <= canary.termination_wait_seconds <= 3600:
        raise ValueError(f"sagemaker.canary.termination_wait_seconds {canary.termination_wait_seconds}: 0 to 3600 s")
    timeout = canary.max_execution_timeout_seconds
    if not 600 <= timeout <= 28_800:
        raise ValueError(f"sagemaker.canary.max_execution_timeout_seconds {timeout}: 600 to 28800 s")
    waits = canary.wait_interval_seconds + canary.termination_wait_seconds
    if timeout <= waits:
        raise ValueError(
            f"sagemaker.canary.max_execution_timeout_seconds {timeout} must exceed wait_interval_seconds + "
            f"termination_wait_seconds ({waits} s): SageMaker rolls back a deployment that runs out of time"
        )
    if not 1 <= len(canary.alarms) <= 10:
        raise ValueError(
            f"sagemaker.canary.alarms: {len(canary.alarms)} alarm(s); name 1 to 10 CloudWatch alarms that roll a "
            "canary back"
        )
    blank = [a for a in canary.alarms if not a.strip() or len(a) > 255]
    if blank:
        raise ValueError(f"sagemaker.canary.alarms: {blank[0]!r} is not a CloudWatch alarm name (1-255 characters)")
    if len(settings.tags) > MAX_TAGS - 1:
        raise ValueError(
            f"sagemaker.tags: {len(settings.tags)} tags; the endpoint's Model and EndpointConfig carry one more "
            f"({VERSION_TAG}) and SageMaker takes at most {MAX_TAGS}: drop one"
        )


def stamp(now: datetime | None = None) -> str:
    """The attempt's UTC time as it appears in the names (14 digits)."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S")


def resource_name(endpoint_name: str, model_version: str, when: str) -> str:
    """The Model's and the EndpointConfig's name for ``model_version``: ``<endpoint>-v<version>-<when>``, the
    endpoint's name cut so the whole is at most 63 characters."""
    suffix = f"-v{model_version}-{when}"
    return endpoint_name[: MAX_NAME - len(suffix)].rstrip("-") + suffix


def list_filter(endpoint_name: str) -> str:
    """ListModels' and ListEndpointConfigs' ``NameContains`` that finds every name `resource_name` makes for the
    endpoint (its first 40 characters: what stays of a long name beside a 6-digit version), and maybe more."""
    return endpoint_name[:40].rstrip("-")


def earlier_resources(names: Iterable[str], endpoint_name: str, before: str, keep: Iterable[str | None]) -> list[str]:
    """The Models or EndpointConfigs among ``names`` that earlier deployments of ``endpoint_name`` made (named by
    `resource_name`, stamped before ``before``, this attempt's stamp) and that are not in ``keep`` (the live
    config and the one it replaced, for a rollback by hand): what a successful rollout removes.  A name made
    after this attempt began is another run's, mid-deployment, and stays."""
    kept = {name for name in keep if name}
    found = ((name, _STAMPED.search(name)) for name in set(names))
    return sorted(
        name
        for name, match in found
        if match
        and resource_name(endpoint_name, match.group(1), match.group(2)) == name
        and match.group(2) < before
        and name not in kept
    )


def live_version(config_name: str) -> str | None:
    """The model version in an endpoint config name `resource_name` made; None for other names."""
    found = _STAMPED.search(config_name)
    return found.group(1) if found else None


def serving_environment(max_seq_length: int, longest_text: int) -> dict[str, str]:
    """The model server's options as the container's environment (`python -m serving serve` reads them): the
    training's token limit, and a text limit that admits every smoke review (as the local smoke test does)."""
    return {
        f"{SERVING_ENV_PREFIX}MAX_SEQ_LENGTH": str(max_seq_length),
        f"{SERVING_ENV_PREFIX}MAX_TEXT_CHARS": str(max(DEFAULT_MAX_TEXT_CHARS, longest_text)),
    }


def _tags(settings: SageMakerSettings, model_version: str) -> list[dict[str, str]]:
    return [*settings.tag_list(), {"Key": VERSION_TAG, "Value": model_version}]


def model_request(
    settings: SageMakerSettings,
    name: str,
    *,
    image: str,
    model_data_url: str,
    environment: dict[str, str],
    model_version: str,
) -> dict[str, Any]:
    """CreateModel: the serve image, the model data, the server's options, the execution role."""
    request: dict[str, Any] = {
        "ModelName": name,
        "PrimaryContainer": {
            "Image": image,
            "Mode": "SingleModel",
            "ModelDataUrl": model_data_url,
            "Environment": environment,
        },
        "ExecutionRoleArn": settings.role_arn,
        "Tags": _tags(settings, model_version),
    }
    if settings.vpc is not None:
        request["VpcConfig"] = {
            "SecurityGroupIds": list(settings.vpc.security_group_ids),
            "Subnets": list(settings.vpc.subnets),
        }
    return request


def endpoint_config_request(
    settings: SageMakerSettings, name: str, *, model_name: str, model_version: str
) -> dict[str, Any]:
    """CreateEndpointConfig: one production variant, under the same variant name for every version."""
    request: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [
            {
                "VariantName": settings.hosting.variant_name,
                "ModelName": model_name,
                "InitialInstanceCount": settings.hosting.instance_count,
                "InstanceType": settings.hosting.instance_type,
                "InitialVariantWeight": 1.0,
            }
        ],
        "Tags": _tags(settings, model_version),
    }
    if settings.kms_key_id:
        request["KmsKeyId"] = settings.kms_key_id
    return request


def create_endpoint_request(settings: SageMakerSettings, config_name: str) -> dict[str, Any]:
    """CreateEndpoint: the first deployment (no canary: nothing serves yet)."""
    return {
        "EndpointName": settings.hosting.endpoint_name,
        "EndpointConfigName": config_name,
        "Tags": settings.tag_list(),
    }


def deployment_config(settings: SageMakerSettings) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig: a blue/green canary rolled back by the profile's alarms."""
    canary = settings.canary
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": canary.size_percent},
                "WaitIntervalInSeconds": canary.wait_interval_seconds,
            },
            "TerminationWaitInSeconds": canary.termination_wait_seconds,
            "MaximumExecutionTimeoutInSeconds": canary.max_execution_timeout_seconds,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in canary.alarms]},
    }


def update_endpoint_request(settings: SageMakerSettings, config_name: str) -> dict[str, Any]:
    """UpdateEndpoint to the new version's config, as a canary."""
    return {
        "EndpointName": settings.hosting.endpoint_name,
        "EndpointConfigName": config_name,
        "DeploymentConfig": deployment_config(settings),
    }


def revert_endpoint_request(settings: SageMakerSettings, previous_config: str) -> dict[str, Any]:
    """UpdateEndpoint back to the config that served before (a canary that passed the alarms but failed the smoke
    test): SageMaker's default blue/green update, all traffic at once."""
    return {"EndpointName": settings.hosting.endpoint_name, "EndpointConfigName": previous_config}


@dataclass(frozen=True)
class Plan:
    """What to do with the endpoint: create it, update it (from ``previous_config``), or nothing."""

    action: Action
    previous_config: str | None = None
    message: str = ""


def plan(endpoint: dict[str, Any] | None, endpoint_name: str, model_version: str) -> Plan:
    """Decide from DescribeEndpoint (None: no such endpoint).

    Raises:
        EndpointBusyError: The endpoint is still changing (another deployment), or Failed / UpdateRollbackFailed
            (it must be deleted or repaired by hand first).
    """
    if endpoint is None:
        return Plan("create", message=f"endpoint {endpoint_name} does not exist: create it")
    status = endpoint.get("EndpointStatus", "")
    config = endpoint.get("EndpointConfigName", "")
    if status in TRANSITIONAL:
        raise EndpointBusyError(
            f"endpoint {endpoint_name} is {status} (another deployment or a SageMaker update is under way): wait "
            "until it is InService and run the pipeline again"
        )
    if status != IN_SERVICE:
        reason = endpoint.get("FailureReason") or "no reason given"
        raise EndpointBusyError(
            f"endpoint {endpoint_name} is {status} ({reason}): it cannot be updated; delete it (aws sagemaker "
            f"delete-endpoint --endpoint-name {endpoint_name}) and run the pipeline again"
        )
    live = live_version(config)
    if live == model_version:
        return Plan("no_op", config, f"version {model_version} already serves on {endpoint_name} ({config})")
    shown = f"version {live}" if live else "a config this pipeline did not make"
    return Plan("update", config, f"{shown} serves on {endpoint_name} ({config}): canary update to {model_version}")


@dataclass(frozen=True)
class Outcome:
    """How the endpoint settled after a create or update."""

    ok: bool
    rolled_back: bool
    status: str
    config: str
    message: str


def outcome(endpoint: dict[str, Any], new_config: str) -> Outcome:
    """Read a settled DescribeEndpoint: in service on ``new_config`` (ok), in service on another config
    (rolled back: an alarm fired, or the deployment ran out of time), or failed."""
    status = endpoint.get("EndpointStatus", "")
    config = endpoint.get("EndpointConfigName", "")
    reason = endpoint.get("FailureReason") or ""
    if status == IN_SERVICE and config == new_config:
        return Outcome(True, False, status, config, f"in service on {config}")
    if status == IN_SERVICE:
        return Outcome(
            False,
            True,
            status,
            config,
            f"SageMaker rolled the update back: the endpoint serves {config}, not {new_config} "
            f"({reason or 'no FailureReason given'})",
        )
    return Outcome(False, False, status, config, f"the endpoint is {status}: {reason or 'no FailureReason given'}")


@dataclass(frozen=True)
class Rollout:
    """What the SageMaker rollout did (the report's ``canary``). The step moves ``champion`` only on
    ``created`` and ``promoted`` (`components.deploy.core.PROMOTING_ACTIONS`)."""

    action: Literal["created", "promoted", "rolled_back", "failed", "no_op"]
    endpoint: str
    endpoint_config: str
    previous_config: str | None
    model_name: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
