"""Load the KServe, Katib, Training Operator and Kubeflow Trainer CRDs from shared/, make them acceptable to an old
API server, apply them and wait until they are Established.

The CRD files are test data outside the repository (see ../shared/k8s/README.md); they are read
and transformed here, at fixture time, and never copied.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient, ApiextensionsV1Api, VersionApi
from kubernetes.client.exceptions import ApiException

Json = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
# The CRDs the cluster-facing code talks to; a real cluster must have these installed.
REQUIRED_CRDS = (
    "inferenceservices.serving.kserve.io",
    "experiments.kubeflow.org",
    "pytorchjobs.kubeflow.org",
    "trainjobs.trainer.kubeflow.org",
)
# x-kubernetes-validations (CEL) and the like need a newer server than this.
FIRST_MINOR_WITHOUT_COMPAT = 25


def crd_dir() -> Path:
    """Where the CRD files are: $K8S_TEST_CRD_DIR, else shared/k8s/crds beside the repository."""
    override = os.environ.get("K8S_TEST_CRD_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "k8s" / "crds"


def missing_crds_reason(directory: Path) -> str | None:
    """Why the CRDs cannot be loaded from directory, or None when they can."""
    if not directory.is_dir():
        return f"CRD directory {directory} is absent (set K8S_TEST_CRD_DIR or provide ../shared/k8s/crds)"
    if not any(directory.glob("*.yaml")):
        return f"no *.yaml CRD file in {directory}"
    return None


def load_crds(directory: Path) -> list[Json]:
    """Every CustomResourceDefinition document of the *.yaml files in directory, sorted by file."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the InferenceService CRD is 2 MB
    crds = []
    for path in sorted(directory.glob("*.yaml")):
        with path.open() as stream:
            docs = [doc for doc in yaml.load_all(stream, Loader=loader) if doc]
        crds += [doc for doc in docs if doc.get("kind") == "CustomResourceDefinition"]
    return crds


def _fix_schema(node: Any) -> None:
    """Bottom-up, so a `default: ""` dropped below is seen by the list-map-keys rule above."""
    if isinstance(node, list):
        for child in node:
            _fix_schema(child)
        return
    if not isinstance(node, dict):
        return
    for child in node.values():
        _fix_schema(child)
    node.pop("x-kubernetes-validations", None)
    if node.get("default") == "":
        del node["default"]
    items = node.get("items")
    if node.get("x-kubernetes-list-map-keys") and isinstance(items, dict):
        properties = items.get("properties", {})
        required = items.setdefault("required", [])
        for key in node["x-kubernetes-list-map-keys"]:
            if key not in required and "default" not in properties.get(key, {}):
                required.append(key)


def for_old_apiserver(crd: Json) -> Json:
    """A copy of crd that an API server older than 1.25 (here 1.20) accepts.

    - drop every `default: ""` (rejected as "must be of type string");
    - list-map keys without a default become `required` in the item schema;
    - remove `x-kubernetes-validations` (CEL rules, unknown before 1.25).
    """
    fixed = copy.deepcopy(crd)
    for version in fixed["spec"].get("versions", []):
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if schema is not None:
            _fix_schema(schema)
    return fixed


def server_minor(api: ApiClient) -> int:
    """The server's minor version (an EKS-style '27+' counts as 27)."""
    info = VersionApi(api).get_code()
    return int("".join(ch for ch in info.minor if ch.isdigit()) or "0")


def _read_raw(crds: ApiextensionsV1Api, name: str) -> Json:
    # Raw JSON: the client's models choke on (and are slow with) these big schemas.
    response = crds.read_custom_resource_definition(name, _preload_content=False)
    result: Json = json.loads(response.data)
    return result


def apply_crds(api: ApiClient, documents: Iterable[Json]) -> list[str]:
    """Create or replace each CRD (transformed for servers older than 1.25); return their names."""
    compat = server_minor(api) < FIRST_MINOR_WITHOUT_COMPAT
    crds = ApiextensionsV1Api(api)
    names = []
    for document in documents:
        body = for_old_apiserver(document) if compat else copy.deepcopy(document)
        name = body["metadata"]["name"]
        try:
            crds.create_custom_resource_definition(body, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise RuntimeError(f"the API server rejected CRD {name}: {exc.body}") from exc
            body["metadata"]["resourceVersion"] = _read_raw(crds, name)["metadata"]["resourceVersion"]
            crds.replace_custom_resource_definition(name, body, _preload_content=False)
        names.append(name)
    return names


def _conditions(crd: Json) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}


def wait_established(api: ApiClient, names: Iterable[str], timeout: float = 60.0) -> None:
    """Wait until every named CRD is Established (its REST endpoint is served)."""
    crds = ApiextensionsV1Api(api)
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        for name in sorted(pending):
            if _conditions(_read_raw(crds, name)).get("Established") == "True":
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not Established after {timeout:.0f} s: {sorted(pending)}")
        if pending:
            time.sleep(0.2)


def missing_on_cluster(api: ApiClient, names: Iterable[str]) -> list[str]:
    """Those of names that the cluster has no CRD for."""
    crds = ApiextensionsV1Api(api)
    missing = []
    for name in names:
        try:
            _read_raw(crds, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            missing.append(name)
    return missing
