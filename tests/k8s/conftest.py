"""Fixtures for the cluster-facing tests: a real kube-apiserver, the CRDs, and a namespace.

By default a local etcd + kube-apiserver (built by `make k8s-apiserver`) is started once per
session on free loopback ports. With K8S_TEST_KUBECONFIG set, that cluster is used instead (the
opt-in e2e tier); its CRDs are then only applied when K8S_TEST_APPLY_CRDS=1. See docs/k8s-tests.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from kubernetes.client import ApiClient, CoreV1Api, V1DeleteOptions, V1Namespace, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from . import crds
from .apiserver import BUILD_HINT, find_binaries, running_apiserver
from .cluster import Cluster

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.k8s)


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[Cluster]:
    """The API server under test; its etcd and kube-apiserver are gone once the session ends."""
    kubeconfig = os.environ.get("K8S_TEST_KUBECONFIG")
    if kubeconfig:
        yield Cluster.from_kubeconfig(Path(kubeconfig), os.environ.get("K8S_TEST_CONTEXT") or None)
        return
    binaries = find_binaries()
    if binaries is None:
        pytest.skip(f"no local kube-apiserver: {BUILD_HINT}")
    with _sigterm_as_interrupt(), running_apiserver(binaries) as server:
        yield Cluster.from_local(server)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM (a CI timeout, say) unwinds like Ctrl-C, so the server is stopped and its
    directory removed. (On SIGKILL the processes still get SIGTERM: see apiserver.py.)"""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def k8s_api(k8s_cluster: Cluster) -> Iterator[ApiClient]:
    """A cluster-admin client."""
    client = k8s_cluster.api_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def k8s_crds(k8s_cluster: Cluster, k8s_api: ApiClient) -> tuple[str, ...]:
    """The KServe, Katib and Training Operator CRDs, Established on the server."""
    apply = k8s_cluster.local or os.environ.get("K8S_TEST_APPLY_CRDS") == "1"
    if not apply:
        missing = crds.missing_on_cluster(k8s_api, crds.REQUIRED_CRDS)
        if missing:
            pytest.fail(
                f"cluster {k8s_cluster.kubeconfig} lacks CRDs {missing}: install KServe, Katib and "
                "the Training Operator, or set K8S_TEST_APPLY_CRDS=1"
            )
        crds.wait_established(k8s_api, crds.REQUIRED_CRDS)
        return crds.REQUIRED_CRDS
    directory = crds.crd_dir()
    reason = crds.missing_crds_reason(directory)
    if reason is not None:
        if k8s_cluster.local:
            pytest.skip(reason)
        pytest.fail(reason)
    names = crds.apply_crds(k8s_api, crds.load_crds(directory))
    crds.wait_established(k8s_api, names)
    return tuple(names)


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"t-{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def k8s_namespace(k8s_api: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (on the local server, with no namespace
    controller running, it stays Terminating until the server goes)."""
    core = CoreV1Api(k8s_api)
    name = _namespace_name(request.node.name)
    core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name, labels={"bert-kfp/test": "true"})))
    yield name
    try:
        core.delete_namespace(name, body=V1DeleteOptions(propagation_policy="Background"))
    except ApiException as exc:
        if exc.status != 404:
            raise
