"""The harness itself: a real API server validates, prunes, enforces RBAC and resource versions,
and the controller helpers write statuses that the CRD schemas keep."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client import ApiClient, CustomObjectsApi, RbacAuthorizationV1Api
from kubernetes.client.exceptions import ApiException

from .cluster import Cluster
from .controllers import (
    EXPERIMENT,
    INFERENCE_SERVICE,
    PYTORCH_JOB,
    OptimalTrial,
    Resource,
    condition_status,
    create,
    fail_canary,
    finish_pytorchjob,
    get,
    mark_inference_service_ready,
    pruned_paths,
    succeed_experiment,
)

Json = dict[str, Any]
pytestmark = pytest.mark.usefixtures("k8s_crds")


def inference_service(name: str, **predictor: Any) -> Json:
    model = {"modelFormat": {"name": "huggingface"}, "storageUri": "s3://models/bert/v1"}
    return {"metadata": {"name": name}, "spec": {"predictor": {"model": model} | predictor}}


def experiment(name: str) -> Json:
    trial_spec = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {"template": {"spec": {"containers": [{"name": "train", "image": "bert-train:dev"}]}}},
    }
    return {
        "metadata": {"name": name},
        "spec": {
            "objective": {"type": "maximize", "goal": 0.95, "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "maxTrialCount": 4,
            "parallelTrialCount": 2,
            "parameters": [{"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "1e-5", "max": "1e-4"}}],
            "trialTemplate": {
                "primaryContainerName": "train",
                "trialParameters": [{"name": "lr", "reference": "lr"}],
                "trialSpec": trial_spec,
            },
        },
    }


def pytorch_job(name: str, workers: Any = 2) -> Json:
    def replica(replicas: Any) -> Json:
        container = {"name": "pytorch", "image": "bert-train:dev", "command": ["python", "-m", "train"]}
        return {"replicas": replicas, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [container]}}}

    return {
        "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(workers)}},
    }


@dataclass(frozen=True)
class Lifecycle:
    resource: Resource
    manifest: Callable[[str], Json]
    spec_patch: Json
    play_controller: Callable[[ApiClient, str, str], Json]
    check_status: Callable[[Json], None]


def _isvc_ready(obj: Json) -> None:
    assert condition_status(obj, "Ready") == "True"
    assert obj["status"]["url"].startswith("http://")
    traffic = obj["status"]["components"]["predictor"]["traffic"]
    assert sum(t["percent"] for t in traffic) == 100


def _experiment_succeeded(obj: Json) -> None:
    assert condition_status(obj, "Succeeded") == "True"
    best = obj["status"]["currentOptimalTrial"]
    assert best["parameterAssignments"] == [{"name": "lr", "value": "3e-05"}]


def _pytorchjob_succeeded(obj: Json) -> None:
    assert condition_status(obj, "Succeeded") == "True"
    assert obj["status"]["replicaStatuses"] == {"Master": {"succeeded": 1}, "Worker": {"succeeded": 3}}


LIFECYCLES = {
    "inferenceservice": Lifecycle(
        INFERENCE_SERVICE,
        inference_service,
        {"spec": {"predictor": {"minReplicas": 2}}},
        mark_inference_service_ready,
        _isvc_ready,
    ),
    "experiment": Lifecycle(
        EXPERIMENT,
        experiment,
        {"spec": {"maxTrialCount": 6}},
        lambda api, ns, name: succeed_experiment(
            api, ns, name, optimal_trial=OptimalTrial("bert-tune-x1", {"lr": 3e-05}, {"accuracy": 0.91})
        ),
        _experiment_succeeded,
    ),
    "pytorchjob": Lifecycle(
        PYTORCH_JOB,
        pytorch_job,
        {"spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 3}}}},
        finish_pytorchjob,
        _pytorchjob_succeeded,
    ),
}


@pytest.mark.parametrize("kind", LIFECYCLES)
def test_create_patch_watch_delete(k8s_api: ApiClient, k8s_namespace: str, kind: str) -> None:
    case, name, ns = LIFECYCLES[kind], f"smoke-{kind}", k8s_namespace
    res, custom = case.resource, CustomObjectsApi(k8s_api)
    start = custom.list_namespaced_custom_object(res.group, res.version, ns, res.plural)["metadata"]["resourceVersion"]

    created = create(k8s_api, res, ns, case.manifest(name))
    patched = custom.patch_namespaced_custom_object(res.group, res.version, ns, res.plural, name, case.spec_patch)
    assert patched["metadata"]["generation"] == created["metadata"]["generation"] + 1
    assert pruned_paths(case.spec_patch, patched) == []
    case.check_status(case.play_controller(k8s_api, ns, name))
    case.check_status(get(k8s_api, res, ns, name))
    custom.delete_namespaced_custom_object(res.group, res.version, ns, res.plural, name)

    events: list[tuple[str, Json]] = []
    stream = watch.Watch()
    for event in stream.stream(
        custom.list_namespaced_custom_object,
        res.group,
        res.version,
        ns,
        res.plural,
        resource_version=start,
        timeout_seconds=30,
    ):
        events.append((event["type"], event["object"]))
        if event["type"] == "DELETED":
            stream.stop()
    types = [type_ for type_, _ in events]
    assert types[0] == "ADDED" and types[-1] == "DELETED" and "MODIFIED" in types, types
    assert any(condition_status(obj, "Succeeded") or condition_status(obj, "Ready") for _, obj in events)


@pytest.mark.parametrize(
    ("resource", "manifest", "field"),
    [
        (INFERENCE_SERVICE, inference_service("bad-canary", canaryTrafficPercent="ten"), "canaryTrafficPercent"),
        (PYTORCH_JOB, pytorch_job("bad-workers", workers="two"), "replicas"),
        (PYTORCH_JOB, {"metadata": {"name": "no-replicas"}, "spec": {}}, "pytorchReplicaSpecs"),
    ],
    ids=["isvc-canary-not-int", "pytorchjob-replicas-not-int", "pytorchjob-missing-required"],
)
def test_invalid_objects_are_rejected(
    k8s_api: ApiClient, k8s_namespace: str, resource: Resource, manifest: Json, field: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        create(k8s_api, resource, k8s_namespace, manifest)
    assert rejected.value.status == 422
    assert field in rejected.value.body


def test_misspelt_field_is_pruned(k8s_api: ApiClient, k8s_namespace: str) -> None:
    sent = inference_service("typo", minReplica=2)  # the field is minReplicas
    sent["spec"]["predictor"]["model"]["storageURI"] = "s3://models/bert/v2"  # storageUri
    create(k8s_api, INFERENCE_SERVICE, k8s_namespace, sent)
    stored = get(k8s_api, INFERENCE_SERVICE, k8s_namespace, "typo")
    assert sorted(pruned_paths(sent, stored)) == ["spec.predictor.minReplica", "spec.predictor.model.storageURI"]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == "s3://models/bert/v1"


def test_status_is_a_subresource(k8s_api: ApiClient, k8s_namespace: str) -> None:
    """Writing status through the main resource is ignored: controllers (and helpers) use /status."""
    create(k8s_api, INFERENCE_SERVICE, k8s_namespace, inference_service("sub"))
    res = INFERENCE_SERVICE
    patched = CustomObjectsApi(k8s_api).patch_namespaced_custom_object(
        res.group, res.version, k8s_namespace, res.plural, "sub", {"status": {"url": "http://sneaky"}}
    )
    assert "url" not in patched.get("status", {})
    mark_inference_service_ready(k8s_api, k8s_namespace, "sub")
    assert get(k8s_api, res, k8s_namespace, "sub")["status"]["url"] == f"http://sub.{k8s_namespace}.example.com"


def test_stale_resource_version_conflicts(k8s_api: ApiClient, k8s_namespace: str) -> None:
    res = PYTORCH_JOB
    stale = create(k8s_api, res, k8s_namespace, pytorch_job("rv"))
    finish_pytorchjob(k8s_api, k8s_namespace, "rv")  # a controller wrote in between
    stale["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 4
    with pytest.raises(ApiException) as conflict:
        CustomObjectsApi(k8s_api).replace_namespaced_custom_object(
            res.group, res.version, k8s_namespace, res.plural, "rv", stale
        )
    assert conflict.value.status == 409


def test_canary_failure_keeps_traffic_on_previous_revision(k8s_api: ApiClient, k8s_namespace: str) -> None:
    """Knative routes `latestRevision` traffic to the latest *ready* revision: a canary revision that fails gets
    none; the next good one gets its percent (controllers.KServeController plays KServe and Knative)."""
    ns, res = k8s_namespace, INFERENCE_SERVICE
    create(k8s_api, res, ns, inference_service("bert"))
    mark_inference_service_ready(k8s_api, ns, "bert")

    def canary(uri: str) -> None:
        CustomObjectsApi(k8s_api).patch_namespaced_custom_object(
            res.group,
            res.version,
            ns,
            res.plural,
            "bert",
            {"spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": uri}}}},
        )

    canary("s3://models/bert/v2")
    failed = fail_canary(k8s_api, ns, "bert")
    assert condition_status(failed, "Ready") == "False"
    predictor = failed["status"]["components"]["predictor"]
    assert predictor["latestCreatedRevision"] == "bert-predictor-00002"
    assert [(t["revisionName"], t["percent"]) for t in predictor["traffic"]] == [
        ("bert-predictor-00001", 10),
        ("bert-predictor-00001", 90),
    ]
    canary("s3://models/bert/v3")
    ready = mark_inference_service_ready(k8s_api, ns, "bert")["status"]["components"]["predictor"]
    assert [(t["revisionName"], t["percent"]) for t in ready["traffic"]] == [
        ("bert-predictor-00003", 10),
        ("bert-predictor-00001", 90),
    ]


def _wait_allowed(call: Callable[[], object], timeout: float = 10.0) -> None:
    """RBAC changes reach the authorizer through an informer: allow it a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_unprivileged_user_needs_a_role(k8s_cluster: Cluster, k8s_api: ApiClient, k8s_namespace: str) -> None:
    res, ns = INFERENCE_SERVICE, k8s_namespace
    user = k8s_cluster.unprivileged_api_client()
    try:
        as_user = CustomObjectsApi(user)

        def list_isvcs() -> object:
            return as_user.list_namespaced_custom_object(res.group, res.version, ns, res.plural)

        with pytest.raises(ApiException) as denied:
            list_isvcs()
        assert denied.value.status == 403

        rbac = RbacAuthorizationV1Api(k8s_api)
        rbac.create_namespaced_role(
            ns,
            {
                "metadata": {"name": "isvc-reader"},
                "rules": [{"apiGroups": [res.group], "resources": [res.plural], "verbs": ["get", "list", "watch"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            ns,
            {
                "metadata": {"name": "isvc-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "isvc-reader"},
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": k8s_cluster.unprivileged_user}
                ],
            },
        )
        _wait_allowed(list_isvcs)

        with pytest.raises(ApiException) as still_denied:  # the Role grants reading only
            create(user, res, ns, inference_service("not-mine"))
        assert still_denied.value.status == 403
    finally:
        user.close()
