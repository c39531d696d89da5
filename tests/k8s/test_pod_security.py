"""Every pod template the project renders passes the "restricted" Pod Security Standard on the API server: a
server-side dry-run create of each as a Pod in a namespace labelled ``pod-security.kubernetes.io/enforce:
restricted``, admitted or refused by PodSecurity (played by `pod_security.PodSecurityWebhook`: the 1.20 test
server has no PodSecurity plugin).  And the pods that stock controllers add (KServe's storage initializer,
Katib's metrics collector) are refused by "restricted" but admitted with the namespace labels of manifests/
(enforce "baseline"), and admitted by "restricted" with the controller settings manifests/overlays/restricted
names."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from components.common import trainjob as T
from components.common.cluster import Cluster
from components.deploy import inference_service as I
from components.deploy.config import DeployConfig
from components.tune import spec as S
from components.tune.engines import katib_experiment as K
from tests.manifests.kustomize import NAMESPACE, build, one, pod_templates

from .pod_security import ENFORCE_LABEL, PodSecurityWebhook, violations

Json = dict[str, Any]
IMAGE = "registry.example/bert-kfp/serve:0.1.0"
TRAIN_IMAGE = "registry.example/bert-kfp/train:1.2.0"
#: What the issue's restricted level asks of a container, as a controller setting gives it (the overlay's doc).
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
#: KServe's injected storage initializer, as its ClusterStorageContainer `default` gives it (no securityContext:
#: kserve/kserve config/storagecontainers/default.yaml; kserve#5373).
STORAGE_INITIALIZER = {
    "name": "storage-initializer",
    "image": "kserve/storage-initializer:v0.15.2",
    "args": ["s3://models/bert/1", "/mnt/models"],
}
#: Katib's metrics collector sidecar (pkg/webhook/v1beta1/pod/inject_webhook.go: no securityContext unless
#: katib-config's injectSecurityContext, then container[0]'s copied).
METRICS_COLLECTOR = {
    "name": "metrics-logger-and-collector",
    "image": "ghcr.io/kubeflow/katib/file-metrics-collector:v0.19.0",
}


@pytest.fixture(scope="module")
def pod_security(k8s_api: ApiClient) -> Iterator[PodSecurityWebhook]:
    with PodSecurityWebhook(k8s_api).running() as webhook:
        yield webhook


def _labelled(api: ApiClient, namespace: str, labels: dict[str, str]) -> str:
    core = CoreV1Api(api)
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})  # no controller makes it
    return namespace


def _dry_run(api: ApiClient, namespace: str, name: str, spec: Json) -> str:
    """'' when the API server admits ``spec`` as a Pod (dry run), else its refusal's message."""
    body = {"metadata": {"name": name}, "spec": copy.deepcopy(spec) | {"automountServiceAccountToken": False}}
    account = spec.get("serviceAccountName")
    if account:  # the manifests' own ServiceAccounts (no controller makes them here)
        with contextlib.suppress(ApiException):
            CoreV1Api(api).create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    try:
        CoreV1Api(api).create_namespaced_pod(namespace, body, dry_run="All")
    except ApiException as error:
        assert error.status == 403, error.body
        return str(error.body)
    return ""


# --- the pod templates the project renders ----------------------------------------------------------------------


def _predictor_pods() -> dict[str, Json]:
    """The predictor's pod as KServe builds it from `render_predictor` (its containers and pod securityContext)."""
    pods = {}
    for runtime in ("project", "huggingface"):
        config = DeployConfig(serving_runtime=runtime)
        predictor = I.render_predictor(config, storage_uri="s3://models/bert/1", model_version="1", image=IMAGE)
        if runtime == "huggingface":  # the ServingRuntime's container, with what the model sets on it
            model = predictor["model"]
            container = {"name": I.CONTAINER, "image": "kserve/huggingfaceserver:v0.15.2", "args": model["args"]}
            containers = [container | {"securityContext": model["securityContext"]}]
        else:
            containers = predictor["containers"]
        pods[f"predictor-{runtime}"] = {"securityContext": predictor["securityContext"], "containers": containers}
    return pods


SPEC = S.SearchSpec(parameters=(S.Parameter("learning_rate", "double", 1e-5, 5e-5, log=True),), max_trial_count=2)


def _placement(nodes: int) -> Cluster:
    return Cluster.model_validate(
        {
            "image": TRAIN_IMAGE,
            "gpu": {"accelerator_type": "nvidia.com/gpu", "accelerator_count": 1, "shm_size": "2Gi", "nodes": nodes},
            "trainjob": {"shared_pvc": "bert-shared", "mount_path": "/mnt/shared"},
            "feast": {"pvc": "feast-store", "mount_path": "/mnt/feast", "config_map": "feast-config"},
        }
    )


def _trainjob_node(job: Json) -> Json:
    """A TrainJob node's pod: the runtime patch's pod spec, the trainer's image, command, env and resources on its
    `node` container (kubeflow/trainer v2.3.0 pkg/runtime/framework/plugins/torch: the trainer fields go there)."""
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = copy.deepcopy(patch["template"]["spec"]["template"]["spec"])
    trainer = job["spec"]["trainer"]
    node = pod["containers"][0]
    node |= {"image": trainer["image"], "command": trainer["command"], "env": trainer.get("env") or []}
    return pod


def _trial_pods() -> dict[str, Json]:
    experiment = K.render_experiment(SPEC, name="e", namespace="ns", image=TRAIN_IMAGE, training_args={}, gpu=None)
    job = experiment["spec"]["trialTemplate"]["trialSpec"]
    pods = {"katib-trial-job": job["spec"]["template"]["spec"]}
    multi = K.render_experiment(
        SPEC,
        name="e",
        namespace="ns",
        image=TRAIN_IMAGE,
        training_args={},
        gpu=None,
        cluster=_placement(2),
    )
    pods["katib-trial-trainjob-node"] = _trainjob_node(multi["spec"]["trialTemplate"]["trialSpec"])
    pods["trainjob-node"] = _trainjob_node(
        T.render_trainjob(_placement(2), ["--epochs", "1"], name="t", namespace="ns")
    )
    return pods


def _manifest_pods() -> dict[str, Json]:
    """Each workload's pod; a StatefulSet's with the volume its controller adds for each volumeClaimTemplate."""
    pods = {}
    for overlay in ("onprem", "eks"):
        objects = build(overlay)
        claims = {
            f"StatefulSet/{o['metadata']['name']}": [
                c["metadata"]["name"] for c in o["spec"].get("volumeClaimTemplates") or []
            ]
            for o in objects
            if o["kind"] == "StatefulSet"
        }
        for where, pod in pod_templates(objects):
            pod = copy.deepcopy(pod)
            for claim in claims.get(where, []):
                name = f"{claim}-{where.split('/')[1]}-0"
                pod.setdefault("volumes", []).append({"name": claim, "persistentVolumeClaim": {"claimName": name}})
            pods[f"{overlay}-{where.replace('/', '-').lower()}"] = pod
    return pods


PROJECT_PODS = {**_predictor_pods(), **_trial_pods(), **_manifest_pods()}


def test_every_pod_template_the_project_renders_passes_restricted_on_the_api_server(
    k8s_api: ApiClient, k8s_namespace: str, pod_security: PodSecurityWebhook
) -> None:
    ns = _labelled(k8s_api, k8s_namespace, {ENFORCE_LABEL: "restricted"})
    refused = {name: _dry_run(k8s_api, ns, name, spec) for name, spec in PROJECT_PODS.items()}
    assert {name: why for name, why in refused.items() if why} == {}
    assert len(PROJECT_PODS) >= 8
    assert {r["level"] for r in pod_security.reviews} == {"restricted"}  # each went through PodSecurity, dry run
    assert all(r["dryRun"] for r in pod_security.reviews)


def test_the_check_can_fail(k8s_api: ApiClient, k8s_namespace: str, pod_security: PodSecurityWebhook) -> None:
    """The predictor without the securityContext render_predictor gives it (as before issue 18) is refused."""
    ns = _labelled(k8s_api, k8s_namespace, {ENFORCE_LABEL: "restricted"})
    bare = copy.deepcopy(PROJECT_PODS["predictor-project"])
    del bare["securityContext"], bare["containers"][0]["securityContext"]
    why = _dry_run(k8s_api, ns, "bare", bare)
    assert 'violates PodSecurity \\"restricted:latest\\"' in why
    for check in ("allowPrivilegeEscalation != false", "runAsNonRoot != true", "seccompProfile", "capabilities"):
        assert check in why


# --- what stock controllers add, and the namespace labels of manifests/ -------------------------------------


def _with_controllers(settings: bool) -> dict[str, Json]:
    """The predictor with KServe's storage initializer and the Katib trial with its metrics collector, as stock
    installs add them, or (``settings``) with the settings manifests/overlays/restricted names."""
    predictor = copy.deepcopy(PROJECT_PODS["predictor-project"])
    initializer = STORAGE_INITIALIZER | ({"securityContext": RESTRICTED_CONTAINER} if settings else {})
    predictor["initContainers"] = [initializer]  # storage_initializer_injector.go merges the ClusterStorageContainer
    trial = copy.deepcopy(PROJECT_PODS["katib-trial-job"])
    copied = copy.deepcopy(trial["containers"][0]["securityContext"])  # injectSecurityContext: container[0]'s
    trial["containers"].append(METRICS_COLLECTOR | ({"securityContext": copied} if settings else {}))
    return {"predictor-with-storage-initializer": predictor, "katib-trial-with-metrics-collector": trial}


def test_stock_controllers_pods_need_the_default_labels_and_the_overlay_needs_their_settings(
    k8s_api: ApiClient, k8s_namespace: str, pod_security: PodSecurityWebhook
) -> None:
    default = one(build("onprem"), "Namespace", NAMESPACE)["metadata"]["labels"]
    assert default[ENFORCE_LABEL] == "baseline"
    ns = _labelled(k8s_api, k8s_namespace, {k: v for k, v in default.items() if k.startswith("pod-security")})
    stock, configured = _with_controllers(settings=False), _with_controllers(settings=True)
    for name, spec in stock.items():
        assert _dry_run(k8s_api, ns, name, spec) == "", name  # the default labels: a stock install works
        assert violations(spec, "restricted"), name  # what the warn/audit labels report
    CoreV1Api(k8s_api).patch_namespace(ns, {"metadata": {"labels": {ENFORCE_LABEL: "restricted"}}})
    _wait_for_level(k8s_api, ns, "restricted", stock["predictor-with-storage-initializer"])
    for name, spec in stock.items():
        why = _dry_run(k8s_api, ns, name, spec)
        assert "allowPrivilegeEscalation != false" in why and "unrestricted capabilities" in why, name
    for name, spec in configured.items():
        assert _dry_run(k8s_api, ns, name, spec) == "", name


def _wait_for_level(api: ApiClient, namespace: str, level: str, refused: Json) -> None:
    """The webhook's namespaceSelector and label reads see a label change at once here; a short retry covers
    the API server's namespace informer."""
    import time

    deadline = time.monotonic() + 10
    while not _dry_run(api, namespace, "probe", refused) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_the_played_checks_follow_upstreams_examples() -> None:
    """A few cases from upstream's check tests (policy/check_*_test.go): pod-level settings cover the containers,
    a container's explicit value wins, and a baseline pod may keep its capabilities."""
    ok = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {"name": "a", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
        ],
    }
    assert violations(ok, "restricted") == []
    explicit_root = copy.deepcopy(ok)
    explicit_root["containers"][0]["securityContext"]["runAsNonRoot"] = False
    assert [v.split(" (")[0] for v in violations(explicit_root, "restricted")] == ["runAsNonRoot != true"]
    assert violations({"containers": [{"name": "a"}]}, "baseline") == []
    assert violations({"containers": [{"name": "a"}], "hostNetwork": True}, "baseline") == [
        "host namespaces (hostNetwork=true)"
    ]
    assert violations({"volumes": [{"name": "h", "hostPath": {"path": "/"}}], "containers": []}, "restricted")
