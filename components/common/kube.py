"""The Kubernetes client of a step: the pod's service account (in-cluster), else a kubeconfig, and the
namespace the step works in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where Kubernetes mounts the pod's service account: its token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: The condition types that end a batch Job (Kubernetes batch/v1 JobComplete, JobFailed) and a Kubeflow Trainer
#: TrainJob (kubeflow/trainer v2.3.0 trainjob_types.go TrainJobComplete, TrainJobFailed).
COMPLETE, FAILED = "Complete", "Failed"


def true_condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    """The entry of ``obj``'s ``status.conditions`` of type ``type_`` whose status is "True", else None."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return dict(condition)
    return None


def gjson_true_condition(type_: str) -> str:
    """`true_condition` of ``type_`` in the GJSON syntax Katib reads a trial resource's status with (a trial
    template's ``successCondition`` / ``failureCondition``)."""
    return f'status.conditions.#(type=="{type_}")#|#(status=="True")#'


def in_cluster_client(*, kubeconfig_fallback: bool = False) -> Any:
    """A ``kubernetes.client.ApiClient`` with the pod's service account; with ``kubeconfig_fallback``, outside
    a pod, the kubeconfig's current context (a step run from a workstation against a cluster).

    Raises:
        ValueError: Not inside a Kubernetes pod (no service account token, no KUBERNETES_SERVICE_HOST) and no
            usable kubeconfig where one is allowed.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
        return client.ApiClient()
    except ConfigException as error:
        if not kubeconfig_fallback:
            raise ValueError(
                f"This step needs the Kubernetes API of the cluster it runs in, but is not in a pod ({error}); run "
                "it on the cluster (the profile's multi-node training or Katib tuning), or use a profile without them"
            ) from None
    try:
        return config.new_client_from_config()
    except (ConfigException, OSError) as error:
        raise ValueError(
            f"No Kubernetes credentials: not in a pod and no usable kubeconfig ({error}); run the step in the "
            "cluster or set KUBECONFIG"
        ) from None


def pod_namespace(
    explicit: str = "",
    namespace_file: Path = SERVICE_ACCOUNT_DIR / "namespace",
    *,
    kubeconfig: str | None = None,
    kubeconfig_fallback: bool = False,
    setting: str = "the namespace in the profile",
) -> str:
    """``explicit``, else the namespace of the pod's service account, else (with ``kubeconfig_fallback``) the
    kubeconfig's current context's namespace.

    Raises:
        ValueError: None of them is there; the message says to set ``setting``.
    """
    if explicit.strip():
        return explicit.strip()
    path = namespace_file
    try:
        namespace = path.read_text().strip()
    except OSError:
        namespace = ""
    if not namespace and kubeconfig_fallback:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        try:
            _, current = config.list_kube_config_contexts(config_file=kubeconfig)
            namespace = (current.get("context") or {}).get("namespace") or ""
        except (ConfigException, OSError):
            namespace = ""
    if not namespace:
        context = " and the kubeconfig's current context names none" if kubeconfig_fallback else ""
        raise ValueError(f"No namespace: {path} is missing (not in a pod?){context}; set {setting}")
    return namespace


@dataclass(frozen=True)
class CustomResource:
    """Where a custom resource lives on the API server (tests point one at a resource that is not installed)."""

    group: str
    version: str
    plural: str

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    def args(self, namespace: str) -> tuple[str, str, str, str]:
        """The positional arguments of ``CustomObjectsApi``'s namespaced calls."""
        return self.group, self.version, namespace, self.plural


def check_installed(api_client: Any, resource: CustomResource, not_installed: Exception) -> None:
    """Raise ``not_installed`` when the resource's CRD is missing; a 403 (an account that may not read CRDs)
    passes, and the create that follows tells."""
    from kubernetes.client import ApiextensionsV1Api
    from kubernetes.client.exceptions import ApiException

    try:
        ApiextensionsV1Api(api_client).read_custom_resource_definition(resource.crd_name)
    except ApiException as error:
        if error.status == 404:
            raise not_installed from None
        if error.status != 403:
            raise


def create_custom_object(
    api_client: Any, resource: CustomResource, namespace: str, body: Mapping[str, Any], not_installed: Exception
) -> Any:
    """Create ``body`` in ``namespace`` after `check_installed`; a 404 on the create is ``not_installed`` too."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    check_installed(api_client, resource, not_installed)
    body = dict(body) | {"metadata": {**body["metadata"], "namespace": namespace}}
    try:
        return CustomObjectsApi(api_client).create_namespaced_custom_object(*resource.args(namespace), body)
    except ApiException as error:
        if error.status == 404:
            raise not_installed from None
        raise


def delete_custom_object(custom: Any, args: tuple[str, str, str, str], name: str) -> None:
    """Delete custom object ``name`` (``custom``: a ``CustomObjectsApi``; ``args``: `CustomResource.args`), its
    dependents in the background; one that is already gone is not an error."""
    from kubernetes.client.exceptions import ApiException

    try:
        custom.delete_namespaced_custom_object(*args, name, propagation_policy="Background")
    except ApiException as error:
        if error.status != 404:
            raise


def dropped_fields(sent: Any, kept: Any, path: str = "") -> list[str]:
    """The paths of fields in ``sent`` that ``kept`` lacks (what a model or an API server pruned as unknown)."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        out: list[str] = []
        for key, value in sent.items():
            child = f"{path}.{key}" if path else str(key)
            out += [child] if key not in kept else dropped_fields(value, kept[key], child)
        return out
    if isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        return [
            p for i, (a, b) in enumerate(zip(sent, kept, strict=True)) for p in dropped_fields(a, b, f"{path}[{i}]")
        ]
    return []
