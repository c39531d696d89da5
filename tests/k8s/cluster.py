"""The cluster the tests in tests/k8s talk to: a local kube-apiserver, or a real cluster.

A real cluster (the opt-in e2e tier) is chosen by K8S_TEST_KUBECONFIG (and optionally
K8S_TEST_CONTEXT); there the unprivileged user is reached by impersonation from the admin's
credentials, since no token of such a user exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubernetes import config
from kubernetes.client import ApiClient

from .apiserver import ADMIN_CONTEXT, UNPRIVILEGED_CONTEXT, UNPRIVILEGED_USER, LocalApiServer


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    context: str | None
    local: bool
    unprivileged_user: str = UNPRIVILEGED_USER
    unprivileged_context: str | None = None
    pids: tuple[int, ...] = ()

    @classmethod
    def from_local(cls, server: LocalApiServer) -> Cluster:
        return cls(
            kubeconfig=server.kubeconfig,
            context=ADMIN_CONTEXT,
            local=True,
            unprivileged_context=UNPRIVILEGED_CONTEXT,
            pids=server.pids,
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, context: str | None = None) -> Cluster:
        if not kubeconfig.is_file():
            raise FileNotFoundError(f"K8S_TEST_KUBECONFIG={kubeconfig}: no such file")
        return cls(kubeconfig=kubeconfig, context=context, local=False)

    def api_client(self) -> ApiClient:
        """A new client with cluster-admin rights (close it when done)."""
        return config.new_client_from_config(config_file=str(self.kubeconfig), context=self.context)

    def unprivileged_api_client(self) -> ApiClient:
        """A new client as `unprivileged_user`, who has no rights beyond discovery until bound."""
        if self.unprivileged_context is not None:
            return config.new_client_from_config(config_file=str(self.kubeconfig), context=self.unprivileged_context)
        client = self.api_client()
        client.set_default_header("Impersonate-User", self.unprivileged_user)
        return client
