"""Opt-in: the kserve deploy backend on a real cluster with KServe, whose controller really rolls pods out.

Needs (each missing one skips with its reason):

- ``K8S_TEST_KUBECONFIG`` (and optionally ``K8S_TEST_CONTEXT``): a cluster with KServe installed;
- ``KSERVE_E2E_STORAGE_URI``: a model directory written by train that the cluster's storage initializer can read
  (its credentials as KServe expects them: a service account or secret in the namespace);
- ``KSERVE_E2E_NAMESPACE`` (default: the context's namespace), ``KSERVE_E2E_MODES`` (default ``Standard``; a
  comma-separated list of Knative and Standard), ``KSERVE_E2E_RUNTIME`` (``huggingface``, the default, needs
  KServe's ``kserve-huggingfaceserver`` ClusterServingRuntime; ``project`` needs ``KSERVE_E2E_IMAGE``, the serve
  image), ``KSERVE_E2E_TIMEOUT`` (seconds per rollout, default 600), ``KSERVE_E2E_PROBE=1`` to send a V1 request
  to the URL the step probes: the cluster-local address (only where this machine resolves it, e.g. in a pod).

Scenario: create version 1 (created), deploy it again (no_op), deploy version 2 (canary, promoted), deploy a
version whose storage URI does not exist (never ready: rolled back, version 2 still live), delete.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components.deploy import kserve as K
from components.deploy import kserve_decision as D
from components.deploy.config import DeployConfig

pytestmark = pytest.mark.e2e


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


@pytest.fixture(scope="module")
def cluster_api() -> Iterator[Any]:
    kubeconfig = _env("K8S_TEST_KUBECONFIG")
    if not kubeconfig:
        pytest.skip(
            "opt-in: set K8S_TEST_KUBECONFIG to a cluster with KServe (see tests/e2e/test_kserve_canary_e2e.py)"
        )
    if not Path(kubeconfig).is_file():
        pytest.fail(f"K8S_TEST_KUBECONFIG={kubeconfig}: no such file")
    from kubernetes import config

    api = config.new_client_from_config(config_file=kubeconfig, context=_env("K8S_TEST_CONTEXT") or None)
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    try:
        CustomObjectsApi(api).get_api_resources("serving.kserve.io", "v1beta1")
    except ApiException as error:
        api.close()
        pytest.skip(f"KServe is not installed on that cluster (serving.kserve.io/v1beta1: {error.status})")
    yield api
    api.close()


@pytest.fixture(scope="module")
def storage_uri() -> str:
    uri = _env("KSERVE_E2E_STORAGE_URI")
    if not uri:
        pytest.skip("set KSERVE_E2E_STORAGE_URI to a model directory (written by train) the cluster can read")
    return uri


def _probe(name: str) -> Callable[[str], None] | None:
    if _env("KSERVE_E2E_PROBE") != "1":
        return None

    def probe(url: str) -> None:
        body = json.dumps({"instances": ["The dress fits well and the fabric is soft."]}).encode()
        request = urllib.request.Request(
            f"{url}/v1/models/{name}:predict", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        if len(answer.get("predictions") or []) != 1:
            raise ValueError(f"unexpected answer {answer}")

    return probe


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_canary_lifecycle_on_a_real_cluster(cluster_api: Any, storage_uri: str, mode: str) -> None:
    modes = [m.strip() for m in _env("KSERVE_E2E_MODES", "Standard").split(",")]
    if mode not in modes:
        pytest.skip(f"{mode} mode not in KSERVE_E2E_MODES={','.join(modes)}")
    runtime = _env("KSERVE_E2E_RUNTIME", "huggingface")
    image = _env("KSERVE_E2E_IMAGE")
    if runtime == "project" and not image:
        pytest.skip("KSERVE_E2E_RUNTIME=project needs KSERVE_E2E_IMAGE (the serve image, pinned)")
    kubeconfig = _env("K8S_TEST_KUBECONFIG")
    namespace = K.resolve_namespace(_env("KSERVE_E2E_NAMESPACE"), kubeconfig=kubeconfig)
    name = f"bert-kfp-e2e-{mode.lower()}"
    timeout = int(_env("KSERVE_E2E_TIMEOUT", "600"))

    def config(**options: Any) -> DeployConfig:
        base = {
            "deploy_backend": "kserve",
            "inference_service": name,
            "kserve_namespace": namespace,
            "kserve_mode": mode,
            "serving_runtime": runtime,
            "rollout_timeout_seconds": timeout,
        }
        return DeployConfig(**(base | options))

    def deploy(version: str, uri: str = storage_uri, **options: Any) -> K.Rollout:
        return K.rollout(
            cluster_api,
            config(**options),
            storage_uri=uri,
            model_version=version,
            image=image,
            probe=_probe(name),
            poll_seconds=5,
        )

    cluster = K.InferenceServiceClient(cluster_api, namespace, K.INFERENCE_SERVICES)
    cluster.delete(name)
    try:
        first = deploy("1")
        assert (first.action, first.mode) == ("created", mode), first
        assert first.endpoint
        assert deploy("1").action == "no_op"

        second = deploy("2")
        assert (second.action, second.mode) == ("promoted", mode), second
        live = cluster.get(name)
        assert live is not None and D.read_state(live) == D.State(mode, "2", "")
        assert "canary" not in live["spec"] and "canaryTrafficPercent" not in live["spec"]["predictor"]

        broken = deploy("3", uri=storage_uri.rstrip("/") + "-does-not-exist", rollout_timeout_seconds=min(timeout, 180))
        assert broken.action == "rolled_back", broken
        after = cluster.get(name)
        assert after is not None and D.read_state(after).live == "2"
    finally:
        cluster.delete(name)
