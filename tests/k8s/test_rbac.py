"""The pipeline's Role (manifests/base/rbac.yaml) suffices and confines: applied to the real API server, the
project's cluster calls run as the bound ServiceAccount (impersonated by the admin) — Katib through
`components.tune.engines.katib_experiment`, the verbs the train step uses on TrainJobs and the deploy step
on InferenceServices, pods and their logs, the named Secrets — while anything else is denied with 403."""

from __future__ import annotations

import copy
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

from components.tune import spec as S
from components.tune.engines import katib_experiment as K
from components.tune.training_cli import TrainingOption
from tests.manifests.kustomize import PIPELINE_SERVICE_ACCOUNT, Json, build, one

from .cluster import Cluster
from .controllers import EXPERIMENT, INFERENCE_SERVICE, OptimalTrial, get, succeed_experiment

pytestmark = pytest.mark.usefixtures("k8s_crds")

TRAINJOB = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
TRIALS = ("kubeflow.org", "v1beta1", "trials")
ISVC = (INFERENCE_SERVICE.group, INFERENCE_SERVICE.version, INFERENCE_SERVICE.plural)
KNOWN = {"learning_rate": TrainingOption("learning_rate", ("--learning-rate",), "float")}
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
        training_options=KNOWN,
    )
    best = OptimalTrial("rbac-tune-1", {"learning_rate": 2e-05}, {"validation-accuracy": 0.7})

    def controller() -> None:  # Katib's part, as the admin, once the Experiment exists
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                get(k8s_api, EXPERIMENT, ns, name)
            except ApiException:
                time.sleep(0.05)
                continue
            succeed_experiment(k8s_api, ns, name, optimal_trial=best)
            return

    thread = threading.Thread(target=controller, daemon=True)
    thread.start()
    result = K.run_katib(as_sa, experiment, namespace=ns, timeout_s=30, poll_s=0.1, cleanup=True)
    thread.join(5)
    assert result.best_trial == "rbac-tune-1" and result.params == {"learning_rate": 2e-05}
    with pytest.raises(ApiException) as gone:  # cleanup=True: the SA deleted it
        get(k8s_api, EXPERIMENT, ns, name)
    assert gone.value.status == 404
    custom = CustomObjectsApi(as_sa)
    assert _status(lambda: custom.list_namespaced_custom_object(*TRIALS[:2], ns, TRIALS[2])) == 200
    assert _status(_watch(custom, TRIALS, ns)) == 200
    trial = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial", "metadata": {"name": "forged"}, "spec": {}}
    assert _status(lambda: custom.create_namespaced_custom_object(*TRIALS[:2], ns, TRIALS[2], trial)) == 403


def test_trainjob_verbs_of_the_train_step(as_sa: ApiClient, k8s_namespace: str) -> None:
    ns, custom = k8s_namespace, CustomObjectsApi(as_sa)
    group, version, plural = TRAINJOB
    job = {
        "apiVersion": f"{group}/{version}",
        "kind": "TrainJob",
        "metadata": {"name": "rbac-train"},
        "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": 2}},
    }
    created = custom.create_namespaced_custom_object(group, version, ns, plural, job)
    assert created["spec"]["trainer"]["numNodes"] == 2
    assert custom.get_namespaced_custom_object(group, version, ns, plural, "rbac-train")["metadata"]["name"]
    assert [
        i["metadata"]["name"] for i in custom.list_namespaced_custom_object(group, version, ns, plural)["items"]
    ] == ["rbac-train"]
    assert _status(_watch(custom, TRAINJOB, ns)) == 200
    patch = {"spec": {"trainer": {"numNodes": 4}}}
    assert (
        _status(lambda: custom.patch_namespaced_custom_object(group, version, ns, plural, "rbac-train", patch)) == 403
    )
    status = {"status": {"conditions": []}}
    assert (
        _status(lambda: custom.patch_namespaced_custom_object_status(group, version, ns, plural, "rbac-train", status))
        == 403
    )
    assert _status(lambda: custom.delete_namespaced_custom_object(group, version, ns, plural, "rbac-train")) == 200


def test_inference_service_verbs_of_the_deploy_step(as_sa: ApiClient, k8s_namespace: str) -> None:
    ns, custom = k8s_namespace, CustomObjectsApi(as_sa)
    group, version, plural = ISVC
    isvc = {
        "apiVersion": INFERENCE_SERVICE.api_version,
        "kind": INFERENCE_SERVICE.kind,
        "metadata": {"name": "review-sentiment"},
        "spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "registry.example/serve:1"}]}},
    }
    custom.create_namespaced_custom_object(group, version, ns, plural, isvc)
    current = custom.get_namespaced_custom_object(group, version, ns, plural, "review-sentiment")
    assert len(custom.list_namespaced_custom_object(group, version, ns, plural)["items"]) == 1
    assert _status(_watch(custom, ISVC, ns)) == 200
    canary = {"spec": {"predictor": {"canaryTrafficPercent": 10}}}
    patched = custom.patch_namespaced_custom_object(group, version, ns, plural, "review-sentiment", canary)
    assert patched["spec"]["predictor"]["canaryTrafficPercent"] == 10
    current = patched | {"spec": {**patched["spec"], "predictor": {**patched["spec"]["predictor"], "minReplicas": 1}}}
    replaced = custom.replace_namespaced_custom_object(group, version, ns, plural, "review-sentiment", current)
    assert replaced["spec"]["predictor"]["minReplicas"] == 1
    assert (
        _status(lambda: custom.delete_namespaced_custom_object(group, version, ns, plural, "review-sentiment")) == 200
    )


def test_pods_logs_and_named_secrets(k8s_api: ApiClient, as_sa: ApiClient, k8s_namespace: str) -> None:
    ns, admin = k8s_namespace, CoreV1Api(k8s_api)
    pod = {
        "metadata": {"name": "rbac-train-node-0"},
        "spec": {
            "serviceAccountName": PIPELINE_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "containers": [{"name": "node", "image": "registry.example/bert-train:1.2.0"}],
        },
    }
    admin.create_namespaced_pod(ns, pod)
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
    assert checked == 7 + 5 + 3 + 5 + 6 + 2
