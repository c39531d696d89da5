"""The Kubernetes client of a step's pod: in-cluster configuration and the pod's own namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Where Kubernetes mounts the pod's service account: its token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster_client() -> Any:
    """A ``kubernetes.client.ApiClient`` with the pod's service account.

    Raises:
        ValueError: Not inside a Kubernetes pod (no service account token, no KUBERNETES_SERVICE_HOST).
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
    except ConfigException as error:
        raise ValueError(
            f"This step needs the Kubernetes API of the cluster it runs in, but is not in a pod ({error}); run it "
            "on the cluster (the profile's multi-node training or Katib tuning), or use a profile without them"
        ) from None
    return client.ApiClient()


def pod_namespace(explicit: str = "", directory: Path = SERVICE_ACCOUNT_DIR) -> str:
    """``explicit``, else the namespace of the pod's service account.

    Raises:
        ValueError: Neither is there.
    """
    if explicit.strip():
        return explicit.strip()
    path = directory / "namespace"
    try:
        return path.read_text().strip()
    except OSError:
        raise ValueError(f"No namespace: {path} is missing (not in a pod?); set the namespace in the profile") from None
