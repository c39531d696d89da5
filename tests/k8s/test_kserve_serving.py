"""The InferenceService as the deploy step renders it for a real cluster — the predictor pods' ServiceAccount,
the model server's resources, the Prometheus scrape annotations — passes a server-side dry run against KServe's
InferenceService CRD and comes back with every field (the 1.20 server prunes fields the schema lacks silently),
and the manifests' ServiceAccount for it applies with its storage credentials Secret attached."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from components.deploy import inference_service as I
from components.deploy.config import DeployConfig
from pipelines.profiles import load_profiles
from tests.manifests.kustomize import build

from .controllers import INFERENCE_SERVICE, pruned_paths

Json = dict[str, Any]
pytestmark = pytest.mark.usefixtures("k8s_crds")
IMAGE = "registry.example/bert-kfp/serve:0.1.0"


def _dry_run_create(api: ApiClient, namespace: str, isvc: Json) -> Json:
    r = INFERENCE_SERVICE
    try:
        stored: Json = CustomObjectsApi(api).create_namespaced_custom_object(
            r.group, r.version, namespace, r.plural, copy.deepcopy(isvc), dry_run="All"
        )
    except ApiException as error:
        pytest.fail(f"the API server refused the InferenceService: {error.status} {error.body}")
    return stored


@pytest.mark.parametrize("runtime", ["project", "huggingface"])
@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_the_profiles_predictor_settings_pass_a_server_side_dry_run(
    k8s_api: ApiClient, k8s_namespace: str, runtime: str, mode: str
) -> None:
    serving = load_profiles()["onprem"].serving
    assert serving is not None and serving.service_account and serving.resources
    config = DeployConfig(
        deploy_backend="kserve",
        kserve_mode=mode,
        serving_runtime=runtime,
        kserve_service_account=serving.service_account,
        kserve_resources=serving.resources_json(),
    )
    isvc = I.render_inference_service(
        config, namespace=k8s_namespace, storage_uri="s3://models/bert/1", model_version="1", image=IMAGE
    )
    stored = _dry_run_create(k8s_api, k8s_namespace, isvc)
    sent = copy.deepcopy(isvc)
    assert pruned_paths(sent, stored) == []  # every field is in KServe's schema
    predictor = stored["spec"]["predictor"]
    assert predictor["serviceAccountName"] == serving.service_account
    server = predictor["containers"][0] if runtime == "project" else predictor["model"]
    assert server["resources"] == serving.resources
    assert predictor["annotations"]["prometheus.io/port"] == "8080"


def test_a_field_the_crd_lacks_is_caught(k8s_api: ApiClient, k8s_namespace: str) -> None:
    """The check above can fail: a misspelt field is pruned by the server and named."""
    config = DeployConfig(deploy_backend="kserve", kserve_service_account="bert-kserve")
    isvc = I.render_inference_service(
        config, namespace=k8s_namespace, storage_uri="s3://models/bert/1", model_version="1", image=IMAGE
    )
    isvc["spec"]["predictor"]["serviceAcountName"] = isvc["spec"]["predictor"].pop("serviceAccountName")
    assert pruned_paths(isvc, _dry_run_create(k8s_api, k8s_namespace, isvc)) == ["spec.predictor.serviceAcountName"]


@pytest.mark.parametrize("overlay", ["onprem", "eks"])
def test_the_manifests_serviceaccount_applies_with_the_storage_secret(
    k8s_api: ApiClient, k8s_namespace: str, overlay: str
) -> None:
    serving = load_profiles()[overlay].serving
    assert serving is not None
    (account,) = [
        o for o in build(overlay) if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == serving.service_account
    ]
    body = copy.deepcopy(account)
    body["metadata"]["namespace"] = k8s_namespace
    created = CoreV1Api(k8s_api).create_namespaced_service_account(k8s_namespace, body)
    assert [s.name for s in created.secrets] == ["kserve-storage"]
    assert created.automount_service_account_token is False
    read = CoreV1Api(k8s_api).read_namespaced_service_account(serving.service_account, k8s_namespace)
    assert read.metadata.annotations == account["metadata"].get("annotations")
