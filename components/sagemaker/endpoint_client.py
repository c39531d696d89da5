"""The SageMaker calls of a deployment (boto3 clients passed in; the decisions are `components.sagemaker.endpoint`).

`rollout` describes the endpoint, decides (`endpoint.plan`) and acts:

- no endpoint: CreateModel, CreateEndpointConfig, CreateEndpoint, wait until it settles, smoke-test it through
  ``sagemaker-runtime`` InvokeEndpoint; on a failure, a timeout or a failed smoke test the endpoint is deleted
  again (nothing served before) — ``failed``;
- this version live: nothing (``no_op``);
- another version live: CreateModel, CreateEndpointConfig, UpdateEndpoint with the blue/green canary, wait until
  it settles; SageMaker's own rollback (an alarm fired, the deployment ran out of time) shows as the old config
  still in service (``rolled_back``); then the smoke test — a canary that passed the alarms but answers
  otherwise than evaluate is rolled back by an UpdateEndpoint to the previous config (``rolled_back``).

After ``created`` or ``promoted``, the Models and EndpointConfigs of earlier deployments of the endpoint are
deleted, but for the one the update replaced (`remove_earlier`; a refused deletion is a warning: the rollout
stands).

Every request is first checked against the service model's limits (`components.sagemaker.limits`, through
`jobs.call`).  The waiting polls DescribeEndpoint with the profile's backoff (`settings.Waiting`), prints each
status change, and gives up after ``timeout_seconds`` (the endpoint keeps changing on SageMaker's side; the step
fails and the champion stays).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from components.deploy.smoke import v1_predictions
from components.sagemaker import endpoint as E
from components.sagemaker.jobs import Clock, call
from components.sagemaker.limits import check_request
from components.sagemaker.settings import SageMakerSettings


class EndpointTimeoutError(RuntimeError):
    """The endpoint did not settle within the step's timeout."""


class SmokeTestError(RuntimeError):
    """The served model answered otherwise than evaluate (the endpoint was rolled back or deleted)."""


#: The step's default wait for a first deployment, and beyond a canary's own time limit: an hour.
SLACK_SECONDS = 3600


def wait_timeout(settings: SageMakerSettings, action: E.Action) -> float:
    """How long the step waits for the endpoint: ``waiting.timeout_seconds``, else an hour for a creation and the
    canary's ``max_execution_timeout_seconds`` plus an hour for an update."""
    if settings.waiting.timeout_seconds is not None:
        return float(settings.waiting.timeout_seconds)
    return float(SLACK_SECONDS + (settings.canary.max_execution_timeout_seconds if action == "update" else 0))


def describe(client: Any, name: str) -> dict[str, Any] | None:
    """DescribeEndpoint; None when there is no such endpoint."""
    from botocore.exceptions import ClientError

    try:
        found: dict[str, Any] = call(client, "sagemaker", "DescribeEndpoint", {"EndpointName": name})
        return found
    except ClientError as error:
        details = error.response.get("Error", {})
        missing = "could not find endpoint" in details.get("Message", "").lower()
        if details.get("Code") == "ValidationException" and missing:
            return None
        raise


def wait(client: Any, settings: SageMakerSettings, timeout_seconds: float, clock: Clock, out: TextIO) -> dict[str, Any]:
    """Poll DescribeEndpoint until the endpoint leaves the transitional states; its last description.

    Raises:
        EndpointTimeoutError: Still changing after ``timeout_seconds``.
        RuntimeError: The endpoint disappeared.
    """
    name, waiting = settings.hosting.endpoint_name, settings.waiting
    deadline = clock.now() + timeout_seconds
    interval = waiting.poll_seconds
    last = ""
    while True:
        found = describe(client, name)
        if found is None:
            raise RuntimeError(f"SageMaker endpoint {name} disappeared while the step waited for it (deleted?)")
        status = found.get("EndpointStatus", "")
        line = f"{status} on {found.get('EndpointConfigName', '?')}"
        if line != last:
            print(f"SageMaker endpoint {name}: {line}", file=out, flush=True)
            last = line
        if status not in E.TRANSITIONAL:
            return found
        if clock.now() >= deadline:
            raise EndpointTimeoutError(
                f"SageMaker endpoint {name} is still {status} after {timeout_seconds:.0f} s; SageMaker goes on with "
                "it (raise the profile's sagemaker.waiting.timeout_seconds)"
            )
        clock.sleep(min(interval, max(0.0, deadline - clock.now())))
        interval = min(interval * waiting.backoff, waiting.max_poll_seconds)


def invoke(runtime: Any, name: str, texts: list[str]) -> list[dict[str, Any]]:
    """The predictions of ``texts`` by the endpoint (InvokeEndpoint, a V1 body, `endpoint.SMOKE_CHUNK` texts per
    request).

    Raises:
        RuntimeError: An answer without a list of predictions.
    """
    answers: list[dict[str, Any]] = []
    for start in range(0, len(texts), E.SMOKE_CHUNK):
        body = json.dumps({"instances": texts[start : start + E.SMOKE_CHUNK]}).encode()
        request = {"EndpointName": name, "Body": body, "ContentType": "application/json", "Accept": "application/json"}
        reply = call(runtime, "sagemaker-runtime", "InvokeEndpoint", request)
        raw = reply["Body"].read()
        predictions = v1_predictions(raw)
        if predictions is None:
            raise RuntimeError(f"SageMaker endpoint {name} answered without predictions: {raw[:300]!r}")
        answers += predictions
    return answers


@dataclass
class Deployment:
    """What one rollout needs besides the settings."""

    model_version: str
    model_data_url: str
    image: str
    environment: dict[str, str]
    #: Called with the endpoint's predictions of the smoke texts; raises `SmokeTestError` on a mismatch.
    smoke: Callable[[Callable[[list[str]], list[dict[str, Any]]]], str]
    #: The attempt's UTC time in the names (`endpoint.stamp`).
    stamp: str = field(default_factory=lambda: E.stamp())


def _delete(client: Any, name: str, out: TextIO) -> str:
    from botocore.exceptions import ClientError

    try:
        call(client, "sagemaker", "DeleteEndpoint", {"EndpointName": name})
    except ClientError as error:
        return f"; deleting the endpoint failed ({' '.join(str(error).split())[:200]}): delete it by hand"
    print(f"SageMaker endpoint {name}: deleted (nothing served before this deployment)", file=out, flush=True)
    return "; the endpoint was deleted (nothing served before)"


#: (list operation, its answer's list, delete operation, name key) of the two resources each deployment makes.
_RESOURCES = (
    ("ListEndpointConfigs", "EndpointConfigs", "DeleteEndpointConfig", "EndpointConfigName"),
    ("ListModels", "Models", "DeleteModel", "ModelName"),
)


def remove_earlier(client: Any, endpoint_name: str, before: str, keep: tuple[str | None, ...], out: TextIO) -> str:
    """Delete the EndpointConfigs, then the Models, of earlier deployments of the endpoint, all but ``keep``
    (`endpoint.earlier_resources`).  The rollout has succeeded by then: a refused call is reported, not raised.

    Returns:
        A note for the rollout's message ("" when there was nothing to remove).
    """
    from botocore.exceptions import ClientError

    removed: list[str] = []
    refused: list[str] = []
    for list_operation, key, delete_operation, name_key in _RESOURCES:
        params: dict[str, Any] = {"NameContains": E.list_filter(endpoint_name), "MaxResults": 100}
        names: list[str] = []
        try:
            while True:
                page = call(client, "sagemaker", list_operation, params)
                names += [item[name_key] for item in page.get(key, [])]
                if not page.get("NextToken"):
                    break
                params["NextToken"] = page["NextToken"]
            for name in E.earlier_resources(names, endpoint_name, before, keep):
                call(client, "sagemaker", delete_operation, {name_key: name})
                removed.append(name)
        except ClientError as error:
            refused.append(f"{list_operation.removeprefix('List')}: {' '.join(str(error).split())[:200]}")
    note = ""
    if removed:
        print(f"SageMaker endpoint {endpoint_name}: deleted earlier {', '.join(removed)}", file=out, flush=True)
        note += f"; deleted {len(removed)} Model(s)/EndpointConfig(s) of earlier deployments"
    if refused:
        warning = f"could not delete earlier deployments' resources ({'; '.join(refused)}): delete them by hand"
        print(f"SageMaker endpoint {endpoint_name}: {warning}", file=out, flush=True)
        note += f"; {warning}"
    return note


def rollout(
    client: Any,
    runtime: Any,
    settings: SageMakerSettings,
    deployment: Deployment,
    clock: Clock | None = None,
    out: TextIO = sys.stdout,
) -> E.Rollout:
    """Create or canary-update the endpoint to the version, wait, smoke-test (see the module docstring).

    Returns:
        What happened: ``created``, ``promoted`` or ``no_op``; ``failed`` or ``rolled_back`` with the reason in
        its message (the caller fails the step).

    Raises:
        ValueError: Bad settings or input, or a request over a limit (before any call).
        endpoint.EndpointBusyError: The endpoint is changing or failed (before anything is created).
        EndpointTimeoutError: It did not settle in time (a new endpoint is deleted again).
        botocore.exceptions.ClientError: A call SageMaker refused.
    """
    clock = clock or Clock()
    E.check(settings)
    version = E.check_model_version(deployment.model_version)
    E.check_model_data(deployment.model_data_url)
    name = settings.hosting.endpoint_name
    resource = E.resource_name(name, version, deployment.stamp)
    model = E.model_request(
        settings,
        resource,
        image=deployment.image,
        model_data_url=deployment.model_data_url,
        environment=deployment.environment,
        model_version=version,
    )
    config = E.endpoint_config_request(settings, resource, model_name=resource, model_version=version)
    create, update = E.create_endpoint_request(settings, resource), E.update_endpoint_request(settings, resource)
    for operation, request in (
        ("CreateModel", model),
        ("CreateEndpointConfig", config),
        ("CreateEndpoint", create),
        ("UpdateEndpoint", update),
    ):
        check_request("sagemaker", operation, request)  # all of them before the first call
    plan = E.plan(describe(client, name), name, version)
    print(f"SageMaker endpoint {name}: {plan.message}", file=out, flush=True)
    if plan.action == "no_op":
        return E.Rollout("no_op", name, plan.previous_config or "", plan.previous_config, None, plan.message)
    call(client, "sagemaker", "CreateModel", model)
    call(client, "sagemaker", "CreateEndpointConfig", config)
    creating = plan.action == "create"
    if creating:
        call(client, "sagemaker", "CreateEndpoint", create)
    else:
        call(client, "sagemaker", "UpdateEndpoint", update)

    def failed(message: str) -> E.Rollout:
        message += _delete(client, name, out) if creating else ""
        return E.Rollout("failed", name, resource, plan.previous_config, resource, message)

    try:
        settled = wait(client, settings, wait_timeout(settings, plan.action), clock, out)
    except EndpointTimeoutError as error:
        if creating:
            raise EndpointTimeoutError(f"{error}{_delete(client, name, out)}") from None
        raise
    result = E.outcome(settled, resource)
    if result.rolled_back:
        return E.Rollout("rolled_back", name, resource, plan.previous_config, resource, result.message)
    if not result.ok:
        return failed(result.message)
    try:
        smoke = deployment.smoke(lambda texts: invoke(runtime, name, texts))
    except Exception as error:  # a mismatch (SmokeTestError), an error answer (ClientError, RuntimeError)
        reason = " ".join(str(error).split())[:1000]
        if creating:
            return failed(reason)
        previous = plan.previous_config or ""  # an update always has one
        print(f"SageMaker endpoint {name}: smoke test failed; back to {previous}", file=out, flush=True)
        call(client, "sagemaker", "UpdateEndpoint", E.revert_endpoint_request(settings, previous))
        back = E.outcome(wait(client, settings, wait_timeout(settings, "update"), clock, out), previous)
        note = f"rolled back to {previous}" if back.ok else f"the rollback to {previous} did not settle: {back.message}"
        return E.Rollout("rolled_back", name, resource, previous, resource, f"{reason}; {note}")
    action = "created" if creating else "promoted"
    removed = remove_earlier(client, name, deployment.stamp, (resource, plan.previous_config), out)
    return E.Rollout(action, name, resource, plan.previous_config, resource, f"{result.message}; {smoke}{removed}")
