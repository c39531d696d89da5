"""Every object of both overlays is accepted by the real API server (server-side dry-run create) and comes
back with every field it was sent: the 1.20 server prunes unknown fields silently, so a misspelt field only
shows as a missing one."""

from __future__ import annotations

import copy

import pytest
from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ApiException as DynamicApiException

from tests.manifests.kustomize import NAMESPACE, OVERLAYS, Json, build

from .controllers import pruned_paths


def _dry_run_create(dynamic: DynamicClient, obj: Json, namespace: str) -> Json:
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    body = copy.deepcopy(obj)
    kwargs = {}
    if resource.namespaced:
        body["metadata"]["namespace"] = namespace
        kwargs["namespace"] = namespace
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    try:
        created = resource.create(body=body, dry_run="All", **kwargs)
    except DynamicApiException as error:
        pytest.fail(f"the API server refused {where}: {error.status} {error.body}")
    result: Json = created.to_dict()
    return result


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_on_the_api_server(overlay: str, k8s_api: ApiClient, k8s_namespace: str) -> None:
    objects = build(overlay)
    dynamic = DynamicClient(k8s_api)
    for obj in objects:
        sent = copy.deepcopy(obj)
        stored = _dry_run_create(dynamic, obj, k8s_namespace)
        sent["metadata"].pop("namespace", None)
        assert pruned_paths(sent, stored) == [], f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Namespace":
            assert stored["metadata"]["name"] == NAMESPACE


def test_a_misspelt_field_is_caught(k8s_api: ApiClient, k8s_namespace: str) -> None:
    """The check above can fail: a field the schema lacks is pruned by the server and named here."""
    deployment = next(o for o in build("onprem") if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
    stored = _dry_run_create(DynamicClient(k8s_api), deployment, k8s_namespace)
    deployment["metadata"].pop("namespace")
    assert pruned_paths(deployment, stored) == ["spec.template.spec.securityContext.runAsNonroot"]
