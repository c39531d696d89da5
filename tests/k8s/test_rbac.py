"""The pipeline's Role (manifests/base/rbac.yaml) suffices and confines: applied to the real API server, the
project's cluster calls run as the bound ServiceAccount (impersonated by the admin) — Katib through
`components.tune.engines.katib_experiment`, the verbs the train step uses on TrainJobs and the deploy step
on InferenceServices, pods and their logs, the named Secrets — while anything else is denied with 403."""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    AuthorizationV1Api,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
    V1ResourceAttributes,
    V1SubjectAccessReview,
    V1SubjectAccessReviewSpec,
)
from kubernetes.client.exceptions import ApiException

from components.common import cluster as profile
from components.common import trainjob as TJ
from components.train import trainjob as J
from components.tune import spec as S
from components.tune.engines import katib_experiment as K
from tests.manifests.kustomize import PIPELINE_SERVICE_ACCOUNT, Json, build, one

from .cluster import Cluster
from .controllers import EXPERIMENT, INFERENCE_SERVICE, OptimalTrial, Resource, get, once_created, succeed_experiment
from .test_kserve_rollout import NAME
from .test_kserve_rollout import Controller as KServe
from .test_kserve_rollout import _config as kserve_config
from .test_kserve_rollout import _rollout as kserve_rollout
from .test_trainjob import finish_trainjob

pytestmark = pytest.mark.usefixtures("k8s_crds")

IMAGE = "registry.example/bert-kfp/train:1.2.0-abc1234"
TRAINJOB_API = (TJ.GROUP, TJ.VERSION, TJ.PLURAL)
TRAINJOB = Resource(TJ.GROUP, TJ.VERSION, TJ.PLURAL, TJ.KIND)
TRIALS = ("kubeflow.org", "v1beta1", "trials")
ISVC = (INFERENCE_SERVICE.group, INFERENCE_SERVICE.version, INFERENCE_SERVICE.plural)
SPEC = S.SearchSpec(
    parameters=(S.Parameter("learning_rate", "double", 1e-5, 5e-5, log=True),),
    algorithm="random",
    max_trial_count=2,
    parallel_trial_count=1,
)


@pytest.fixture
def bound(k8s_api: ApiClient, k8s_namespace: str) -> str:
    """The manifests' ServiceAccount, Role and RoleBinding, applied in the test's namespace."""
    objects = build("onprem")
    core, rbac = CoreV1Api(k8s_api), RbacAuthorizationV1Api(k8s_api)
    ns = k8s_namespace

    def local(obj: Json) -> Json:
        body = copy.deepcopy(obj)
        body["metadata"]["namespace"] = ns
        for subject in body.get("subjects", []):
            subject["namespace"] = ns
        return body

    core.create_namespaced_service_account(ns, local(one(objects, "ServiceAccount", PIPELINE_SERVICE_ACCOUNT)))
    rbac.create_namespaced_role(ns, local(one(objects, "Role", PIPELINE_SERVICE_ACCOUNT)))
    rbac.create_namespaced_role_binding(ns, local(one(objects, "RoleBinding", PIPELINE_SERVICE_ACCOUNT)))
    return f"system:serviceaccount:{ns}:{PIPELINE_SERVICE_ACCOUNT}"


@pytest.fixture
def as_sa(k8s_cluster: Cluster, bound: str) -> Iterator[ApiClient]:
    """A client that acts as the bound ServiceAccount (admin credentials + Impersonate-User)."""
    client = k8s_cluster.api_client()
    client.set_default_header("Impersonate-User", bound)
    yield client
    client.close()


def _status(call: Callable[[], Any]) -> int:
    """The HTTP status of one request (200 when it returned)."""
    try:
        response = call()
    except ApiException as error:
        return int(error.status)
    if hasattr(response, "release_conn"):  # a watch stream (_preload_content=False): it ends by its timeout
        response.read()
        response.release_conn()
    return 200


@pytest.fixture
def plays_controllers(k8s_cluster: Cluster) -> None:
    if not k8s_cluster.local:
        pytest.skip("plays the Trainer/KServe controllers: local API server only (a real cluster: tests/e2e)")


def _exists(api: ApiClient, resource: Resource, namespace: str, name: str) -> bool:
    try:
        get(api, resource, namespace, name)
    except ApiException as error:
        assert error.status == 404
        return False
    return True


def _pod(name: str, labels: dict[str, str]) -> Json:
    """A pod as a controller would make it (never scheduled: the server runs no kubelet)."""
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceAccountName": PIPELINE_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "containers": [{"name": TJ.NODE, "image": IMAGE}],
        },
    }


def _watch(custom: CustomObjectsApi, resource: tuple[str, str, str], ns: str) -> Callable[[], Any]:
    return lambda: custom.list_namespaced_custom_object(
        *resource[:2], ns, resource[2], watch=True, timeout_seconds=1, _preload_content=False
    )


def test_katib_engine_runs_as_the_service_account(k8s_api: ApiClient, as_sa: ApiClient, k8s_namespace: str) -> None:
    ns, name = k8s_namespace, "rbac-tune"
    experiment = K.render_experiment(
        SPEC,
        name=name,
        namespace=ns,
        image="registry.example/bert-train:1.2.0",
        training_args={},
        gpu=None,
    )
    best = OptimalTrial("rbac-tune-1", {"learning_rate": 2e-05}, {"validation-accuracy": 0.7})

    def controller() -> None:  # Katib's part, as the admin, once the Experiment exists
        succeed_experiment(k8s_api, ns, name, optimal_trial=best)

    thread = once_created(k8s_api, EXPERIMENT, ns, name, controller)
    result = K.run_katib(as_sa, experiment, namespace=ns, timeout_s=30, poll_s=0.1, cleanup=True)
    thread.join(5)
    assert result.best_trial == "rbac-tune-1" and result.params == {"learning_rate": 2e-05}
    with pytest.raises(ApiException) as gone:  # cleanup=True: the SA deleted it
        get(k8s_api, EXPERIMENT, ns, name)
    assert gone.value.status == 404
    custom = CustomObjectsApi(as_sa)
    assert _status(lambda: custom.list_namespaced_custom_object(*TRIALS[:2], ns, TRIALS[2])) == 200
    assert _status(_watch(custom, TRIALS, ns)) == 403  # not a call the step makes
    trial = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial", "metadata": {"name": "forged"}, "spec": {}}
    assert _status(lambda: custom.create_namespaced_custom_object(*TRIALS[:2], ns, TRIALS[2], trial)) == 403


@pytest.mark.usefixtures("plays_controllers")
def test_train_steps_trainjob_and_log_follower_run_as_the_service_account(
    k8s_api: ApiClient, as_sa: ApiClient, k8s_namespace: str
) -> None:
    """`run_trainjob` creates, polls and deletes the TrainJob; its `LogFollower` finds node 0's pod (list), asks
    for its log and its phase (get) — all as the ServiceAccount, while the test plays Trainer (as the admin)."""
    ns, name = k8s_namespace, "rbac-train"
    gpu = {"accelerator_type": "nvidia.com/gpu", "node_selector": {"nvidia.com/gpu.present": "true"}, "nodes": 2}
    placement = profile.Cluster.model_validate({"image": IMAGE, "gpu": gpu, "trainjob": {"shared_pvc": "shared"}})
    job = TJ.render_trainjob(placement, ["--epochs", "1"], name=name, namespace=ns)
    follower = J.LogFollower(as_sa, ns, name, lambda line: None, retry_s=0.05)
    node0 = f"{name}-node-0-0-abcde"
    labels = {TJ.JOBSET_NAME_LABEL: name, TJ.REPLICATED_JOB_LABEL: TJ.NODE, TJ.JOB_INDEX_LABEL: "0"}

    def trainer() -> None:  # the controller's part: node 0's pod, then Complete once the follower has asked
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _exists(k8s_api, TRAINJOB, ns, name):
            time.sleep(0.05)
        CoreV1Api(k8s_api).create_namespaced_pod(ns, _pod(node0, labels))
        while time.monotonic() < deadline and (follower.pod != node0 or follower.attempts < 3):
            time.sleep(0.05)
        finish_trainjob(k8s_api, ns, name, complete=True)

    thread = threading.Thread(target=trainer, daemon=True)
    thread.start()
    done = J.run_trainjob(as_sa, job, namespace=ns, timeout_s=30, poll_s=0.1, cleanup=True, follower=follower)
    thread.join(5)
    assert [c["type"] for c in done["status"]["conditions"]] == ["Complete"]
    assert follower.pod == node0 and follower.attempts >= 3
    assert follower.last_error == ""  # no 403 on list pods, pods/log or get pod
    assert not _exists(k8s_api, TRAINJOB, ns, name)  # deleted by the ServiceAccount
    custom = CustomObjectsApi(as_sa)
    assert _status(_watch(custom, TRAINJOB_API, ns)) == 403  # not a call the step makes
    denied = {"spec": {"trainer": {"numNodes": 4}}}
    job_args = (*TRAINJOB_API[:2], ns, TRAINJOB_API[2])
    custom.create_namespaced_custom_object(*job_args, TJ.render_trainjob(placement, [], name="other", namespace=ns))
    assert _status(lambda: custom.patch_namespaced_custom_object(*job_args, "other", denied)) == 403
    status = {"status": {"conditions": []}}
    assert _status(lambda: custom.patch_namespaced_custom_object_status(*job_args, "other", status)) == 403


@pytest.mark.usefixtures("plays_controllers")
def test_deploy_steps_kserve_rollout_runs_as_the_service_account(
    k8s_api: ApiClient, as_sa: ApiClient, k8s_namespace: str
) -> None:
    """`components.deploy.kserve.rollout` as the ServiceAccount: create (with its dry run), canary and promotion
    (replace), and the delete of a first deployment that never gets ready; the test plays KServe (admin)."""
    ns = k8s_namespace
    with KServe(k8s_api, ns, "Standard"):
        assert kserve_rollout(as_sa, kserve_config(ns, "Standard"), "1").action == "created"
        promoted = kserve_rollout(as_sa, kserve_config(ns, "", canary_traffic_percent=20), "2")
    assert promoted.action == "promoted", promoted
    other = dataclasses.replace(kserve_config(ns, "Standard", timeout=1), inference_service="other")
    never_ready = kserve_rollout(as_sa, other, "1")
    assert never_ready.action == "rolled_back" and "not ready within 1 s" in never_ready.message
    assert not _exists(k8s_api, INFERENCE_SERVICE, ns, "other")  # deleted by the ServiceAccount
    custom = CustomObjectsApi(as_sa)
    assert len(CustomObjectsApi(k8s_api).list_namespaced_custom_object(*ISVC[:2], ns, ISVC[2])["items"]) == 1
    assert _status(lambda: custom.list_namespaced_custom_object(*ISVC[:2], ns, ISVC[2])) == 403  # not needed
    assert _status(_watch(custom, ISVC, ns)) == 403
    status = {"status": {"url": "http://forged"}}
    assert _status(lambda: custom.patch_namespaced_custom_object_status(*ISVC[:2], ns, ISVC[2], NAME, status)) == 403


def test_pods_logs_and_named_secrets(k8s_api: ApiClient, as_sa: ApiClient, k8s_namespace: str) -> None:
    ns, admin = k8s_namespace, CoreV1Api(k8s_api)
    admin.create_namespaced_pod(ns, _pod("rbac-train-node-0", {}))
    for name in ("feast-redis", "mlflow-credentials", "unrelated"):
        admin.create_namespaced_secret(ns, {"metadata": {"name": name}, "stringData": {"K": "v"}})
    core = CoreV1Api(as_sa)
    assert core.read_namespaced_pod("rbac-train-node-0", ns).metadata.name == "rbac-train-node-0"
    assert [p.metadata.name for p in core.list_namespaced_pod(ns).items] == ["rbac-train-node-0"]
    # Authorised: what refuses the log is that no kubelet runs the (unscheduled) pod, not RBAC.
    assert _status(lambda: core.read_namespaced_pod_log("rbac-train-node-0", ns)) not in (401, 403)
    assert _status(lambda: CoreV1Api(k8s_api).read_namespaced_pod_log("rbac-train-node-0", ns)) == _status(
        lambda: core.read_namespaced_pod_log("rbac-train-node-0", ns)
    )
    assert core.read_namespaced_secret("feast-redis", ns).data["K"]
    assert core.read_namespaced_secret("mlflow-credentials", ns).data["K"]
    assert _status(lambda: core.read_namespaced_secret("unrelated", ns)) == 403
    assert _status(lambda: core.list_namespaced_secret(ns)) == 403
    assert _status(lambda: core.delete_namespaced_pod("rbac-train-node-0", ns)) == 403


def test_requests_outside_the_role_are_denied(as_sa: ApiClient, k8s_namespace: str) -> None:
    ns = k8s_namespace
    deployment = {
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}},
        },
    }
    role = {"metadata": {"name": "more"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]}
    denied = {
        "create deployments": lambda: AppsV1Api(as_sa).create_namespaced_deployment(ns, deployment),
        "create secrets": lambda: CoreV1Api(as_sa).create_namespaced_secret(ns, {"metadata": {"name": "s"}}),
        "list configmaps": lambda: CoreV1Api(as_sa).list_namespaced_config_map(ns),
        "create roles": lambda: RbacAuthorizationV1Api(as_sa).create_namespaced_role(ns, role),
        "list pods elsewhere": lambda: CoreV1Api(as_sa).list_namespaced_pod("default"),
        "list namespaces": lambda: CoreV1Api(as_sa).list_namespace(),
    }
    assert {what: _status(call) for what, call in denied.items()} == dict.fromkeys(denied, 403)


def test_the_authorizer_grants_every_rule_of_the_role(k8s_api: ApiClient, bound: str, k8s_namespace: str) -> None:
    """Every (group, resource, verb) the Role lists, asked of the server's authorizer for the ServiceAccount;
    and the same verbs in another namespace are refused (the grant is namespaced)."""
    role = one(build("onprem"), "Role", PIPELINE_SERVICE_ACCOUNT)
    authz = AuthorizationV1Api(k8s_api)

    def allowed(group: str, resource: str, verb: str, namespace: str, name: str | None) -> bool:
        sub, _, sub_resource = resource.partition("/")
        attributes = V1ResourceAttributes(
            group=group, resource=sub, subresource=sub_resource or None, verb=verb, namespace=namespace, name=name
        )
        review = V1SubjectAccessReview(spec=V1SubjectAccessReviewSpec(user=bound, resource_attributes=attributes))
        return bool(authz.create_subject_access_review(review).status.allowed)

    checked = 0
    for rule in role["rules"]:
        for name in rule.get("resourceNames") or [None]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert allowed(group, resource, verb, k8s_namespace, name), (group, resource, verb)
                        assert not allowed(group, resource, verb, "default", name), (group, resource, verb)
                        checked += 1
    assert checked == 4 + 3 + 1 + 3 + 2 + 1 + 2
