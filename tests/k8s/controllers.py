"""Play the controllers that a bare API server does not run, by patching the `status` subresource.

The statuses follow what KServe, Katib and the Training Operator write, as far as their CRD
schemas carry them (the server prunes anything else), so tests can read as scenarios:

    create(api, INFERENCE_SERVICE, namespace, isvc)
    mark_inference_service_ready(api, namespace, "bert")
    ... the code under test waits for Ready and reads status.url ...
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes.client import ApiClient, CustomObjectsApi

Json = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


INFERENCE_SERVICE = Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
EXPERIMENT = Resource("kubeflow.org", "v1beta1", "experiments", "Experiment")
PYTORCH_JOB = Resource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")


@dataclass(frozen=True)
class OptimalTrial:
    """The best trial of a Katib Experiment: its parameter values and observed metrics."""

    name: str
    parameters: Mapping[str, str | int | float]
    metrics: Mapping[str, float]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, status: bool, reason: str = "", message: str = "", **extra: str) -> Json:
    condition: Json = {"type": type_, "status": "True" if status else "False", "lastTransitionTime": _now()}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition | extra


def get(api: ApiClient, resource: Resource, namespace: str, name: str) -> Json:
    return cast(
        Json,
        CustomObjectsApi(api).get_namespaced_custom_object(
            resource.group, resource.version, namespace, resource.plural, name
        ),
    )


def create(api: ApiClient, resource: Resource, namespace: str, body: Json) -> Json:
    body = {"apiVersion": resource.api_version, "kind": resource.kind} | body
    return cast(
        Json,
        CustomObjectsApi(api).create_namespaced_custom_object(
            resource.group, resource.version, namespace, resource.plural, body
        ),
    )


def pruned_paths(sent: Any, stored: Any, path: str = "") -> list[str]:
    """The paths of fields in `sent` that `stored` (the object read back) lacks: what the server
    pruned as unknown to the schema. Changed values (defaults, coercions) do not count."""
    if isinstance(sent, dict) and isinstance(stored, dict):
        missing = []
        for key, value in sent.items():
            child = f"{path}.{key}" if path else str(key)
            missing += [child] if key not in stored else pruned_paths(value, stored[key], child)
        return missing
    if isinstance(sent, list) and isinstance(stored, list) and len(sent) == len(stored):
        return [
            p for i, (a, b) in enumerate(zip(sent, stored, strict=True)) for p in pruned_paths(a, b, f"{path}[{i}]")
        ]
    return []


def patch_status(api: ApiClient, resource: Resource, namespace: str, name: str, status: Json) -> Json:
    """Merge-patch `status` through the status subresource, as a controller does; fail if the
    server pruned part of it (the helper wrote a field the CRD schema does not have)."""
    result = cast(
        Json,
        CustomObjectsApi(api).patch_namespaced_custom_object_status(
            resource.group, resource.version, namespace, resource.plural, name, {"status": status}
        ),
    )
    pruned = pruned_paths(status, result.get("status", {}), "status")
    if pruned:
        raise AssertionError(f"{resource.kind} {namespace}/{name}: the server pruned {pruned}")
    return result


def _revision(name: str, generation: int) -> str:
    return f"{name}-predictor-{generation:05d}"


def mark_inference_service_ready(api: ApiClient, namespace: str, name: str, *, url: str | None = None) -> Json:
    """The current generation's predictor revision is up; with `canaryTrafficPercent` set and an
    earlier revision rolled out, traffic is split between the two as KServe does."""
    isvc = get(api, INFERENCE_SERVICE, namespace, name)
    generation = int(isvc["metadata"].get("generation", 1))
    revision = _revision(name, generation)
    predictor = isvc.get("status", {}).get("components", {}).get("predictor", {})
    previous = predictor.get("latestRolledoutRevision")
    canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
    url = url or f"http://{name}.{namespace}.example.com"
    if canary is not None and previous and previous != revision and canary < 100:
        traffic = [
            {"revisionName": revision, "percent": canary, "latestRevision": True, "tag": "latest"},
            {"revisionName": previous, "percent": 100 - canary, "latestRevision": False, "tag": "prev"},
        ]
        rolled_out, previous_rolled_out = previous, predictor.get("previousRolledoutRevision")
    else:
        traffic = [{"revisionName": revision, "percent": 100, "latestRevision": True}]
        rolled_out, previous_rolled_out = revision, previous
    components: Json = {
        "latestCreatedRevision": revision,
        "latestReadyRevision": revision,
        "latestRolledoutRevision": rolled_out,
        "traffic": traffic,
        "url": f"http://{name}-predictor.{namespace}.example.com",
    }
    if previous_rolled_out:
        components["previousRolledoutRevision"] = previous_rolled_out
    status = {
        "observedGeneration": generation,
        "url": url,
        "address": {"url": f"http://{name}.{namespace}.svc.cluster.local"},
        "components": {"predictor": components},
        "conditions": [
            _condition(type_, True)
            for type_ in (
                "IngressReady",
                "PredictorConfigurationReady",
                "PredictorReady",
                "PredictorRouteReady",
                "Ready",
            )
        ],
        "modelStatus": {
            "transitionStatus": "UpToDate",
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
            "copies": {"failedCopies": 0, "totalCopies": 1},
        },
    }
    return patch_status(api, INFERENCE_SERVICE, namespace, name, status)


def fail_canary(api: ApiClient, namespace: str, name: str, *, message: str = "model failed to load") -> Json:
    """The current generation's revision failed: not Ready, all traffic stays on the revision
    rolled out before (KServe's rollback)."""
    isvc = get(api, INFERENCE_SERVICE, namespace, name)
    generation = int(isvc["metadata"].get("generation", 1))
    predictor = isvc.get("status", {}).get("components", {}).get("predictor", {})
    previous = predictor.get("latestRolledoutRevision")
    components: Json = {"latestCreatedRevision": _revision(name, generation)}
    if previous:
        components |= {
            "latestReadyRevision": previous,
            "latestRolledoutRevision": previous,
            "traffic": [{"revisionName": previous, "percent": 100, "latestRevision": False}],
        }
    status = {
        "observedGeneration": generation,
        "components": {"predictor": components},
        "conditions": [
            _condition("IngressReady", True),
            _condition("PredictorConfigurationReady", False, "RevisionFailed", message),
            _condition("PredictorReady", False, "RevisionFailed", message),
            _condition("Ready", False, "RevisionFailed", message),
        ],
        "modelStatus": {
            "transitionStatus": "BlockedByFailedLoad",
            "states": {
                "activeModelState": "Loaded" if previous else "FailedToLoad",
                "targetModelState": "FailedToLoad",
            },
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message},
        },
    }
    return patch_status(api, INFERENCE_SERVICE, namespace, name, status)


def succeed_experiment(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    optimal_trial: OptimalTrial,
    reason: str = "ExperimentMaxTrialsReached",
) -> Json:
    """All trials ran (spec.maxTrialCount of them) and `optimal_trial` was the best."""
    experiment = get(api, EXPERIMENT, namespace, name)
    trials = int(experiment.get("spec", {}).get("maxTrialCount", 1))
    now = _now()
    status = {
        "startTime": experiment.get("status", {}).get("startTime", now),
        "completionTime": now,
        "conditions": [
            _condition("Created", True, "ExperimentCreated", "Experiment is created", lastUpdateTime=now),
            _condition("Running", False, "ExperimentRunning", "Experiment is running", lastUpdateTime=now),
            _condition("Succeeded", True, reason, "Experiment has succeeded", lastUpdateTime=now),
        ],
        "currentOptimalTrial": {
            "bestTrialName": optimal_trial.name,
            "parameterAssignments": [
                {"name": key, "value": str(value)} for key, value in optimal_trial.parameters.items()
            ],
            "observation": {
                "metrics": [
                    {"name": key, "latest": str(value), "min": str(value), "max": str(value)}
                    for key, value in optimal_trial.metrics.items()
                ]
            },
        },
        "trials": trials,
        "trialsSucceeded": trials,
    }
    return patch_status(api, EXPERIMENT, namespace, name, status)


def fail_experiment(api: ApiClient, namespace: str, name: str, *, message: str = "trials failed") -> Json:
    now = _now()
    status = {
        "completionTime": now,
        "conditions": [
            _condition("Created", True, "ExperimentCreated", "Experiment is created", lastUpdateTime=now),
            _condition("Failed", True, "ExperimentFailed", message, lastUpdateTime=now),
        ],
    }
    return patch_status(api, EXPERIMENT, namespace, name, status)


def finish_pytorchjob(api: ApiClient, namespace: str, name: str, *, succeeded: bool = True) -> Json:
    """Every replica of every type succeeded (or, with succeeded=False, the Master failed)."""
    job = get(api, PYTORCH_JOB, namespace, name)
    specs: Mapping[str, Json] = job["spec"].get("pytorchReplicaSpecs", {})
    now = _now()
    if succeeded:
        replicas = {kind: {"succeeded": int(spec.get("replicas", 1))} for kind, spec in specs.items()}
        final = _condition("Succeeded", True, "PyTorchJobSucceeded", f"PyTorchJob {name} is successfully completed.")
    else:
        replicas = {kind: {"failed": 1 if kind == "Master" else 0} for kind in specs}
        final = _condition("Failed", True, "PyTorchJobFailed", f"PyTorchJob {name} has failed.")
    status = {
        "startTime": job.get("status", {}).get("startTime", now),
        "completionTime": now,
        "lastReconcileTime": now,
        "replicaStatuses": replicas,
        "conditions": [
            _condition("Created", True, "PyTorchJobCreated", f"PyTorchJob {name} is created.", lastUpdateTime=now),
            _condition("Running", False, "PyTorchJobRunning", f"PyTorchJob {name} is running.", lastUpdateTime=now),
            final | {"lastUpdateTime": now},
        ],
    }
    return patch_status(api, PYTORCH_JOB, namespace, name, status)


def condition_status(obj: Json, type_: str) -> str | None:
    """status.conditions[type=type_].status ("True"/"False"), or None when absent."""
    for condition in obj.get("status", {}).get("conditions", []):
        if condition.get("type") == type_:
            return cast(str, condition.get("status"))
    return None
