"""The Kubernetes client of a step: the pod's service account (in-cluster), else a kubeconfig, and the
namespace the step works in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Where Kubernetes mounts the pod's service account: its token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


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
