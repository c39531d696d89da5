"""Play the controllers that a bare API server does not run, by patching the `status` subresource.

The statuses follow what KServe, Katib and the Training Operator write, as far as their CRD
schemas carry them (the server prunes anything else); each rule names the upstream file it comes from
(KServe after v0.20.0, Katib v0.19.0, Trainer v2.3.0), so tests can read as scenarios:

    create(api, INFERENCE_SERVICE, namespace, isvc)
    mark_inference_service_ready(api, namespace, "bert")
    ... the code under test waits for Ready and reads status.url ...
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

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


def once_created(
    api: ApiClient, resource: Resource, namespace: str, name: str, action: Callable[[], object], timeout_s: float = 20
) -> threading.Thread:
    """Play a controller's part in the background: run ``action`` once the object exists (the code under test
    creates it), as a controller reacts to a new object.  Join the returned thread."""

    def play() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                get(api, resource, namespace, name)
            except ApiException:
                time.sleep(0.05)
                continue
            action()
            return

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


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


# --- KServe's InferenceService controller ------------------------------------------------------------------------
#
# Played as upstream KServe (kserve/kserve, after v0.20.0) writes the status, per deployment mode.  What a bare API
# server lacks (the Knative Service, the Deployments) is kept here, with the counters they have upstream: the
# InferenceService's status.observedGeneration is theirs, not the InferenceService's generation.

_ISVC_CONDITIONS = ("IngressReady", "PredictorConfigurationReady", "PredictorReady", "PredictorRouteReady", "Ready")
#: Fields of a canary's predictor that upstream zeroes or sets itself (predictor.go, buildCanaryPredictor).
_CANARY_ZEROED = ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")


def _merged(stable: Json, override: Json) -> Json:
    """mergo.Merge(&stable, override, mergo.WithOverride) for the JSON the predictor is made of."""
    out = dict(stable)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        elif value not in (None, "", [], {}):
            out[key] = value
    return out


@dataclass
class _Knative:
    """A Knative Service's counters: its generation (any spec change) and its Configuration's (template changes
    only; a revision is named ``<configuration>-<generation:05d>``, knative.dev/serving
    pkg/reconciler/configuration/resources/names.go)."""

    spec: Json | None = None
    generation: int = 0
    config_generation: int = 0
    template: Json | None = None
    ready_revisions: tuple[str, ...] = ()


@dataclass
class _Deployment:
    spec: Json
    generation: int = 1
    available: bool = False


class KServeController:
    """One InferenceService's controller; `reconcile` plays one pass over its current spec.

    ``behaviour`` is what the pods do with the model of this pass: ``ready`` (they serve), ``fail`` (the model
    does not load: the storage initializer crash-loops) or ``ignore`` (the controller does not get to it).
    """

    def __init__(self, api: ApiClient, namespace: str, name: str, mode: str = "") -> None:
        self.api, self.namespace, self.name, self.mode = api, namespace, name, mode
        self.ksvc = _Knative()
        self.deployments: dict[str, _Deployment] = {}

    def reconcile(self, behaviour: str = "ready") -> Json:
        isvc = get(self.api, INFERENCE_SERVICE, self.namespace, self.name)
        if behaviour == "ignore":
            return isvc
        annotations = isvc["metadata"].get("annotations") or {}
        # pkg/controller/v1beta1/inferenceservice/utils/utils.go GetDeploymentMode: status, then the annotation.
        mode = isvc.get("status", {}).get("deploymentMode") or annotations.get(
            "serving.kserve.io/deploymentMode", self.mode or "Knative"
        )
        mode = {"Serverless": "Knative", "RawDeployment": "Standard"}.get(mode, mode)
        status = self._standard(isvc, behaviour) if mode == "Standard" else self._knative(isvc, behaviour)
        status["deploymentMode"] = mode  # controller.go: desiredService.Status.DeploymentMode
        return replace_status(self.api, INFERENCE_SERVICE, self.namespace, self.name, isvc, status)

    # Knative mode -----------------------------------------------------------------------------------------------

    def _knative(self, isvc: Json, behaviour: str) -> Json:
        name, ns, ksvc = self.name, self.namespace, self.ksvc
        predictor = dict(isvc["spec"]["predictor"])
        percent = predictor.pop("canaryTrafficPercent", None)
        old = isvc.get("status") or {}
        component = dict((old.get("components") or {}).get("predictor") or {})
        rolled_out = component.get("latestRolledoutRevision", "")
        tags = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/enable-tag-routing") == "true"
        # reconcilers/knative/ksvc_reconciler.go (lines ~132-163): the traffic targets of the Knative Service.
        if percent is not None and rolled_out:
            traffic = [{"latestRevision": True, "percent": percent} | ({"tag": "latest"} if tags else {})]
            if percent < 100:
                traffic.append(
                    {"revisionName": rolled_out, "latestRevision": False, "percent": 100 - percent, "tag": "prev"}
                )
        else:
            traffic = [{"latestRevision": True, "percent": 100} | ({"tag": "latest"} if tags else {})]
        spec = {"template": predictor, "traffic": traffic}
        if spec != ksvc.spec:  # the API server bumps metadata.generation on a spec change
            ksvc.spec, ksvc.generation = spec, ksvc.generation + 1
            if predictor != ksvc.template:
                ksvc.template, ksvc.config_generation = predictor, ksvc.config_generation + 1
        created = f"{name}-predictor-{ksvc.config_generation:05d}"
        if behaviour == "ready" and created not in ksvc.ready_revisions:
            ksvc.ready_revisions += (created,)
        latest_ready = ksvc.ready_revisions[-1] if ksvc.ready_revisions else ""
        # Knative's route: latestRevision targets resolve to the latest *ready* revision.
        route = [
            {"revisionName": t.get("revisionName") or latest_ready}
            | {k: v for k, v in t.items() if k != "revisionName"}
            for t in traffic
        ]
        up = created == latest_ready
        message = "model failed to load"
        ready = _condition("Ready", True) if up else _condition("Ready", False, "RevisionFailed", message)
        # pkg/apis/serving/v1beta1/inference_service_status.go PropagateStatus (lines ~567-636).
        component["latestCreatedRevision"] = created
        for target in route:
            if target["revisionName"] == latest_ready and target.get("latestRevision"):
                if component.get("latestRolledoutRevision") != latest_ready:
                    if target["percent"] == 100:
                        if component.get("latestRolledoutRevision"):
                            component["previousRolledoutRevision"] = component["latestRolledoutRevision"]
                        component["latestRolledoutRevision"] = latest_ready
                elif latest_ready == created and target["percent"] < 100:
                    same = sum(t["percent"] for t in route if t["revisionName"] == target["revisionName"])
                    if same == 100 and component.get("previousRolledoutRevision"):
                        component["latestRolledoutRevision"] = component["previousRolledoutRevision"]
        if latest_ready:
            component["latestReadyRevision"] = latest_ready
        component["traffic"] = route
        status: Json = {"observedGeneration": ksvc.generation}  # inference_service_status.go:635
        if up:
            component["url"] = f"http://{name}-predictor.{ns}.example.com"
            component["address"] = {"url": f"http://{name}-predictor.{ns}.svc.cluster.local"}
            status |= {"url": f"http://{name}.{ns}.example.com"}
            status["address"] = {"url": f"http://{name}.{ns}.svc.cluster.local"}
        else:
            status |= {k: old[k] for k in ("url", "address") if k in old}
        status["components"] = {"predictor": component}
        status["conditions"] = [
            _condition(t, True) if up or t == "IngressReady" else ready | {"type": t} for t in _ISVC_CONDITIONS
        ]
        # inference_service_status.go PropagateModelStatus: the latest created revision's pods.
        status["modelStatus"] = self._model_status(up, behaviour)
        return status

    # Standard mode ----------------------------------------------------------------------------------------------

    def _deploy(self, name: str, spec: Json, available: bool) -> _Deployment:
        deployment = self.deployments.get(name)
        if deployment is None:
            deployment = self.deployments[name] = _Deployment(spec)
        elif deployment.spec != spec:
            deployment.spec, deployment.generation = spec, deployment.generation + 1
        deployment.available = available or deployment.available  # a rollout keeps the old ReplicaSet serving
        return deployment

    def _standard(self, isvc: Json, behaviour: str) -> Json:
        name, ns = self.name, self.namespace
        stable = dict(isvc["spec"]["predictor"])
        canaries = isvc["spec"].get("canary") or []
        old = isvc.get("status") or {}
        ready_before = {c["name"]: c["ready"] for c in old.get("canaryStatuses") or []}
        # constants.go PredictorServiceName: <isvc>-<predictor name>-predictor, or <isvc>-predictor without one.
        stable_name = f"{name}-{stable['name']}-predictor" if stable.get("name") else f"{name}-predictor"
        expected = {stable_name}
        # components/predictor.go reconcileCanaryDeployments (lines ~900-998): one Deployment per canary, then
        # canaryStatuses with name, ready (availableReplicas > 0) and trafficPercent only, and the condition.
        statuses = []
        for canary in canaries:
            deployment_name = f"{name}-{canary['predictor']['name']}-predictor"
            expected.add(deployment_name)
            stable_replicas = stable.get("minReplicas") or 1
            replicas = canary["predictor"].get("minReplicas") or -(-stable_replicas * canary["trafficPercent"] // 100)
            spec = _merged(stable, canary["predictor"])
            spec = {k: v for k, v in spec.items() if k not in _CANARY_ZEROED} | {"minReplicas": replicas}
            deployment = self._deploy(deployment_name, spec, behaviour == "ready")
            if behaviour == "fail":
                self._crash_looping_pod(deployment_name)
            statuses.append(
                {
                    "name": canary["predictor"]["name"],
                    "ready": deployment.available,
                    "trafficPercent": canary["trafficPercent"],
                }
            )
        # predictor.go adjustStableMinReplicasForCanaries: returns at once when minReplicas is unset, so adding a
        # canary leaves the stable Deployment (and its generation) as it was.
        if stable.get("minReplicas") is not None and canaries:
            ready_replicas = sum(
                c["predictor"].get("minReplicas") or -(-stable["minReplicas"] * c["trafficPercent"] // 100)
                for c in canaries
                if ready_before.get(c["predictor"]["name"])
            )
            if ready_replicas:
                stable["minReplicas"] = max(stable["minReplicas"] - ready_replicas, 1)
        stable_spec = {k: v for k, v in stable.items() if k != "name"}
        had = stable_name in self.deployments
        deployment = self._deploy(stable_name, stable_spec, behaviour == "ready" or had)
        for orphan in set(self.deployments) - expected:  # predictor.go: orphaned predictor Deployments deleted
            del self.deployments[orphan]
        available = deployment.available
        # inference_service_status.go PropagateRawStatus: PredictorReady from the Deployment's Available
        # condition; observedGeneration = deploymentList[0].Status.ObservedGeneration (line ~456).
        status: Json = {"observedGeneration": deployment.generation}
        reason = "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable"
        conditions = [_condition(t, available, reason) for t in ("IngressReady", "PredictorReady", "Ready")]
        if canaries:
            all_ready = all(c["ready"] for c in statuses)
            conditions.append(
                _condition("CanaryPredictorReady", all_ready, "AllCanariesReady" if all_ready else "CanariesNotReady")
            )
            status["canaryStatuses"] = statuses
        status["conditions"] = conditions
        if available:
            status["url"] = f"http://{name}-{ns}.example.com"
            status["address"] = {"url": f"http://{stable_name}.{ns}.svc.cluster.local"}
            status["components"] = {"predictor": {"url": f"http://{stable_name}-{ns}.example.com"}}
        # PropagateModelStatus reads the *stable* predictor's pods (predictor.go: podLabelValue of objectMeta).
        status["modelStatus"] = self._model_status(available, "ready" if available else behaviour)
        return status

    def _crash_looping_pod(self, deployment: str) -> None:
        """A pod of ``deployment`` whose storage initializer crash-loops, as the kubelet reports it (labels from
        pkg/constants/constants.go GetRawServiceLabel)."""
        core = CoreV1Api(self.api)
        pod_name = f"{deployment}-5d9c7b-x1"
        with contextlib.suppress(ApiException):
            core.create_namespaced_service_account(self.namespace, {"metadata": {"name": "default"}})
        pod = {
            "metadata": {
                "name": pod_name,
                "labels": {
                    "app": f"isvc.{deployment}",
                    "serving.kserve.io/inferenceservice": self.name,
                    "component": "predictor",
                },
            },
            "spec": {
                "automountServiceAccountToken": False,  # no token controller runs here
                "initContainers": [{"name": "storage-initializer", "image": "kserve/storage-initializer:v0.15.0"}],
                "containers": [{"name": "kserve-container", "image": "serve:1"}],
            },
        }
        try:
            core.create_namespaced_pod(self.namespace, pod)
        except ApiException as error:
            if error.status != 409:
                raise
        terminated = {"exitCode": 1, "reason": "Error", "message": "no config.json in /mnt/models"}
        status = {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "storage-initializer",
                    "ready": False,
                    "restartCount": 2,
                    "image": "kserve/storage-initializer:v0.15.0",
                    "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting"}},
                    "lastState": {"terminated": terminated},
                }
            ],
        }
        core.patch_namespaced_pod_status(pod_name, self.namespace, {"status": status})

    @staticmethod
    def _model_status(up: bool, behaviour: str) -> Json:
        if up:
            return {
                "transitionStatus": "UpToDate",
                "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
                "copies": {"failedCopies": 0, "totalCopies": 1},
            }
        if behaviour == "fail":
            return {
                "transitionStatus": "BlockedByFailedLoad",
                "states": {"activeModelState": "FailedToLoad", "targetModelState": "FailedToLoad"},
                "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "model failed to load"},
            }
        return {
            "transitionStatus": "InProgress",
            "states": {"activeModelState": "Pending", "targetModelState": "Pending"},
        }


_KSERVE: dict[tuple[str, str], KServeController] = {}


def kserve(api: ApiClient, namespace: str, name: str, mode: str = "") -> KServeController:
    """The controller of ``namespace/name`` (one per InferenceService, kept for the session)."""
    return _KSERVE.setdefault((namespace, name), KServeController(api, namespace, name, mode))


def mark_inference_service_ready(api: ApiClient, namespace: str, name: str) -> Json:
    """KServe reconciles the current spec and its pods serve (Knative mode unless the object says otherwise)."""
    return kserve(api, namespace, name).reconcile("ready")


def fail_canary(api: ApiClient, namespace: str, name: str) -> Json:
    """KServe reconciles the current spec and its pods do not load the model."""
    return kserve(api, namespace, name).reconcile("fail")


def replace_status(api: ApiClient, resource: Resource, namespace: str, name: str, obj: Json, status: Json) -> Json:
    """Replace the whole status (at the resourceVersion read), as a controller's status update does; fail if the
    server pruned part of it."""
    body = dict(obj) | {"status": status}
    result = cast(
        Json,
        CustomObjectsApi(api).replace_namespaced_custom_object_status(
            resource.group, resource.version, namespace, resource.plural, name, body
        ),
    )
    pruned = pruned_paths(status, result.get("status", {}), "status")
    if pruned:
        raise AssertionError(f"{resource.kind} {namespace}/{name}: the server pruned {pruned}")
    return result


# --- Katib ------------------------------------------------------------------------------------------------------


def _grid_points(parameter: Json) -> int:
    """HyperParameterSearchSpace.convert_to_combinations (kubeflow/katib v0.19.0
    pkg/suggestion/v1beta1/internal/search_space.py): a list's length, or min..max by step."""
    space = parameter.get("feasibleSpace") or {}
    if "list" in space:
        return len(space["list"])
    low, high, step = float(space["min"]), float(space["max"]), float(space.get("step") or 1)
    return int((high - low) / step + 1e-9) + 1


def suggestion_refusal(experiment: Json) -> str:
    """What Katib's suggestion service says to ValidateAlgorithmSettings for ``experiment`` ('' when it accepts):
    grid: pkg/suggestion/v1beta1/optuna/service.py (_validate_grid_setting, maxTrialCount > combinations);
    cmaes: pkg/suggestion/v1beta1/goptuna/service.go (ValidateAlgorithmSettings, fewer than two int/double)."""
    spec = experiment.get("spec") or {}
    algorithm = (spec.get("algorithm") or {}).get("algorithmName")
    parameters = spec.get("parameters") or []
    if algorithm == "grid":
        combinations = 1
        for parameter in parameters:
            combinations *= _grid_points(parameter)
        if int(spec.get("maxTrialCount") or 0) > combinations:
            return f"Max Trial Count: {spec['maxTrialCount']} > all possible search combinations: {combinations}"
    if algorithm == "cmaes" and sum(p.get("parameterType") in ("int", "double") for p in parameters) < 2:
        return "CMA-ES only supports two or more dimensional continuous search space."
    return ""


def succeed_experiment(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    optimal_trial: OptimalTrial,
    reason: str = "ExperimentMaxTrialsReached",
) -> Json:
    """All trials ran (spec.maxTrialCount of them) and `optimal_trial` was the best; unless the suggestion service
    refuses the Experiment (`suggestion_refusal`): then the Suggestion fails (suggestion_controller.go, "Validation
    failed") and with it the Experiment ("Suggestion has failed", experiment_controller.go ~line 484)."""
    experiment = get(api, EXPERIMENT, namespace, name)
    if suggestion_refusal(experiment):
        return fail_experiment(api, namespace, name, message="Suggestion has failed")
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
