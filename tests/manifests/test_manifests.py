"""The kustomize overlays build, every workload meets the "restricted" Pod Security Standard, the pipeline's
Role is namespaced and wildcard-free, and the names the cluster profiles use exist in what is applied.

(The objects against a real API server: tests/k8s/test_manifests_apiserver.py and tests/k8s/test_rbac.py.)
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from pipelines.profiles import load_profiles
from tests.manifests.kustomize import (
    NAMESPACE,
    OVERLAYS,
    PIPELINE_SERVICE_ACCOUNT,
    REPO,
    Json,
    build,
    of_kind,
    one,
    pod_templates,
    restricted_violations,
)

CLUSTER_SCOPED = {"Namespace", "StorageClass"}
#: Enforce "baseline" (stock KServe, Katib and KFP pods meet it), warn and audit "restricted"; Katib's pod webhook
#: injects its metrics collector only with the last label (Katib v0.19.0 manifests/v1beta1/components/webhook/
#: webhooks.yaml, namespaceSelector).
DEFAULT_LABELS = {
    "pod-security.kubernetes.io/enforce": "baseline",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/audit-version": "latest",
    "katib.kubeflow.org/metrics-collector-injection": "enabled",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Json]]:
    return request.param, build(request.param)


def _secret_refs(objects: list[Json]) -> set[tuple[str, str]]:
    """(Secret, key) of every secretKeyRef in the workloads."""
    refs = set()
    for _, pod in pod_templates(objects):
        for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    return refs


def test_overlay_builds_into_its_namespace(overlay: tuple[str, list[Json]]) -> None:
    name, objects = overlay
    namespace = one(objects, "Namespace", NAMESPACE)
    assert {
        k: v for k, v in namespace["metadata"]["labels"].items() if "/" in k and "part-of" not in k
    } == DEFAULT_LABELS
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{name}: {obj['kind']}/{obj['metadata']['name']}"
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "Role"} <= {o["kind"] for o in objects}


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_the_restricted_component_makes_the_namespace_enforce_restricted(overlay_name: str, tmp_path: Path) -> None:
    """manifests/overlays/restricted, added to an overlay as its docs say, changes the enforced level and nothing
    else."""
    plain = build(overlay_name)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(REPO / "manifests" / "overlays" / overlay_name, tmp_path)],
                "components": [os.path.relpath(REPO / "manifests" / "overlays" / "restricted", tmp_path)],
            }
        )
    )
    strict = build(str(tmp_path))
    labels = one(strict, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["katib.kubeflow.org/metrics-collector-injection"] == "enabled"
    one(plain, "Namespace", NAMESPACE)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "restricted"
    assert strict == plain


def test_every_workload_meets_the_restricted_pod_security_standard(overlay: tuple[str, list[Json]]) -> None:
    name, objects = overlay
    pods = list(pod_templates(objects))
    assert len(pods) >= 2, f"{name}: expected the Redis and MLflow workloads at least"
    problems = [p for where, pod in pods for p in restricted_violations(where, pod)]
    assert problems == []


def test_the_restricted_check_names_what_breaks_it() -> None:
    _, pod = next(pod_templates(build("onprem")))
    broken = copy.deepcopy(pod)
    del broken["securityContext"]["seccompProfile"]
    broken["securityContext"]["runAsNonRoot"] = False
    broken["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    broken["initContainers"] = [{"name": "init", "image": "busybox:latest"}]
    problems = "\n".join(restricted_violations("X", broken))
    for expected in (
        "container redis: runAsNonRoot is not true",
        "container redis: seccompProfile.type is None",
        "container redis: capabilities.drop lacks ALL",
        "initContainer init: allowPrivilegeEscalation is not false",
        "initContainer init: image 'busybox:latest' is not pinned",
    ):
        assert expected in problems


def test_role_is_namespaced_exact_and_has_no_wildcard(overlay: tuple[str, list[Json]]) -> None:
    _, objects = overlay
    assert of_kind(objects, "ClusterRole") == {} and of_kind(objects, "ClusterRoleBinding") == {}
    role = one(objects, "Role", PIPELINE_SERVICE_ACCOUNT)
    assert role["metadata"]["namespace"] == NAMESPACE
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert not any("*" in value for value in rule.get(field, [])), f"wildcard in {field}: {rule}"
    granted = {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    secrets = ("feast-redis", "mlflow-credentials")
    create_get_delete = ("create", "get", "delete")
    expected = (  # exactly the calls the steps make (the verbs each module names), nothing more
        {("serving.kserve.io", "inferenceservices", v, ()) for v in (*create_get_delete, "update")}
        | {("kubeflow.org", "experiments", v, ()) for v in create_get_delete}
        | {("kubeflow.org", "trials", "list", ())}
        | {("trainer.kubeflow.org", "trainjobs", v, ()) for v in create_get_delete}
        | {("", "pods", v, ()) for v in ("get", "list")}
        | {("", "pods/log", "get", ())}
        | {("", "secrets", "get", secrets)}
    )
    assert granted == expected
    binding = one(objects, "RoleBinding", PIPELINE_SERVICE_ACCOUNT)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": PIPELINE_SERVICE_ACCOUNT, "namespace": NAMESPACE}]
    one(objects, "ServiceAccount", PIPELINE_SERVICE_ACCOUNT)


def test_the_profiles_names_exist_in_the_manifests(overlay: tuple[str, list[Json]]) -> None:
    name, objects = overlay
    profile = load_profiles()[name]
    feast, mlflow = profile.feast, profile.mlflow
    assert feast is not None and mlflow is not None
    pvc = one(objects, "PersistentVolumeClaim", feast.pvc)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every feature-store step's pod mounts it
    config = one(objects, "ConfigMap", feast.config_map or "")["data"]
    store_yaml = (REPO / "feature_repo" / "feature_store.cluster.yaml").read_text()
    in_store_yaml = set(re.findall(r"\$\{(\w+)\}", store_yaml))
    assert in_store_yaml - set(feast.secret_keys) <= set(config), "the store's ${VARS} without a value"
    assert set(config) <= set(feast.config_keys), "ConfigMap keys the steps never receive"
    assert config["FEAST_REGISTRY_PATH"].startswith(feast.mount_path.rstrip("/") + "/")
    url = urlsplit(mlflow.tracking_uri)
    service, namespace = (url.hostname or "").split(".")[:2]
    assert namespace == NAMESPACE
    ports = [p["port"] for p in one(objects, "Service", service)["spec"]["ports"]]
    assert url.port in ports
    refs = _secret_refs(objects)
    assert (feast.secret, "REDIS_PASSWORD") in refs  # Redis and the steps share Secret feast-redis


def test_the_profiles_serving_account_exists_with_the_storage_secret(overlay: tuple[str, list[Json]]) -> None:
    """The InferenceService's ServiceAccount (profile serving.service_account) is in the manifests, with the Secret
    KServe's storage initializer takes the model storage's credentials from attached (KServe's S3 docs), and
    docs/cluster.md says how to create that Secret."""
    name, objects = overlay
    serving = load_profiles()[name].serving
    assert serving is not None and serving.service_account
    account = one(objects, "ServiceAccount", serving.service_account)
    assert account["secrets"] == [{"name": "kserve-storage"}] and account["automountServiceAccountToken"] is False
    docs = (REPO / "docs" / "cluster.md").read_text()
    assert "kserve-storage" in docs and "serving.kserve.io/s3-endpoint" in docs


def test_secrets_are_referenced_never_committed_and_documented(overlay: tuple[str, list[Json]]) -> None:
    name, objects = overlay
    assert of_kind(objects, "Secret") == {}
    docs = (REPO / "docs" / "cluster.md").read_text()
    profile = load_profiles()[name]
    assert profile.feast is not None and profile.mlflow is not None
    wanted = _secret_refs(objects) | {(profile.feast.secret, k) for k in profile.feast.secret_keys}
    for secret, key in sorted(wanted):
        assert secret in docs and key in docs, f"docs/cluster.md does not tell how to create {secret} ({key})"


def test_overlay_specifics() -> None:
    onprem, eks = build("onprem"), build("eks")
    assert one(onprem, "PersistentVolumeClaim", "feast-store")["spec"]["storageClassName"] == "nfs-client"
    assert "mlflow-postgres" in of_kind(onprem, "StatefulSet")
    assert one(onprem, "ConfigMap", "mlflow-config")["data"]["MLFLOW_ARTIFACTS_DESTINATION"] == "/mlflow/artifacts"
    volumes = one(onprem, "Deployment", "mlflow")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "mlflow-artifacts"}} in volumes
    one(onprem, "PersistentVolumeClaim", "mlflow-artifacts")

    assert of_kind(eks, "StatefulSet") == {}  # RDS
    assert one(eks, "StorageClass", "efs-sc")["provisioner"] == "efs.csi.aws.com"
    assert one(eks, "PersistentVolumeClaim", "feast-store")["spec"]["storageClassName"] == "efs-sc"
    assert one(eks, "ConfigMap", "mlflow-config")["data"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    for account in (PIPELINE_SERVICE_ACCOUNT, "mlflow"):
        arn = one(eks, "ServiceAccount", account)["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/REPLACE-ME-[\w-]+", arn)
        assert "annotations" not in one(onprem, "ServiceAccount", account)["metadata"]


def test_no_workload_of_the_manifests_needs_a_gpu(overlay: tuple[str, list[Json]]) -> None:
    """The GPU steps are the pipeline's own (placed by the profiles); Redis, MLflow and PostgreSQL are CPU-only,
    so the manifests carry no GPU node selector or toleration (docs/cluster.md says so)."""
    _, objects = overlay
    for where, pod in pod_templates(objects):
        for container in pod["containers"]:
            resources = container.get("resources") or {}
            assert not any("gpu" in k for part in resources.values() for k in part), where
        assert "tolerations" not in pod and "nodeSelector" not in pod, where
