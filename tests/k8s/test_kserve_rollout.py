"""The kserve deploy backend against the real API server with KServe's InferenceService CRD, in both modes.

The test plays KServe's controller in a thread: for each new generation of the InferenceService,
`controllers.KServeController` writes the status upstream KServe writes (Knative: the Knative Service's generation as
observedGeneration, revisions and traffic; Standard: the stable Deployment's generation as observedGeneration,
`canaryStatuses` with name/ready/trafficPercent, `CanaryPredictorReady`, and a failing canary's pods).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiextensionsV1Api, CustomObjectsApi, RbacAuthorizationV1Api
from kubernetes.client.exceptions import ApiException

from components.common.kube import CustomResource
from components.deploy import inference_service as I
from components.deploy import kserve as K
from components.deploy import kserve_decision as D
from components.deploy.config import DeployConfig

from . import crds
from .cluster import Cluster
from .controllers import INFERENCE_SERVICE, get, kserve

Json = dict[str, Any]
pytestmark = pytest.mark.usefixtures("k8s_crds")
NAME = "reviews"
IMAGE = "registry.example/bert-kfp/serve:0.1.0"
MODES = ["Knative", "Standard"]


@pytest.fixture(autouse=True)
def _local_only(k8s_cluster: Cluster) -> None:
    if not k8s_cluster.local:
        pytest.skip("plays KServe's controller: local API server only (a real cluster: tests/e2e)")


def _config(namespace: str, mode: str, timeout: int = 20, **options: Any) -> DeployConfig:
    return DeployConfig(
        deploy_backend="kserve",
        inference_service=NAME,
        kserve_namespace=namespace,
        kserve_mode=mode,
        rollout_timeout_seconds=timeout,
        **options,
    )


def _rollout(api: ApiClient, config: DeployConfig, version: str, **kwargs: Any) -> K.Rollout:
    return K.rollout(
        api,
        config,
        storage_uri=f"s3://models/bert/{version}",
        model_version=version,
        image=IMAGE,
        poll_seconds=0.05,
        **kwargs,
    )


# --- KServe's controller, played ------------------------------------------------------------------------------


def _act(api: ApiClient, namespace: str, mode: str, behaviour: str) -> None:
    kserve(api, namespace, NAME, mode).reconcile(behaviour)


class Controller:
    """Reacts to each new generation with the behaviour scripted for it (default: become ready)."""

    def __init__(self, api: ApiClient, namespace: str, mode: str, script: dict[int, str] | None = None) -> None:
        self.api, self.namespace, self.mode, self.script = api, namespace, mode, script or {}
        self.handled = 0
        self.specs: dict[int, Json] = {}  # the spec KServe's controller saw at each generation
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                isvc = get(self.api, INFERENCE_SERVICE, self.namespace, NAME)
                generation = int(isvc["metadata"]["generation"])
                if generation > self.handled:
                    self.handled, self.specs[generation] = generation, isvc["spec"]
                    _act(self.api, self.namespace, self.mode, self.script.get(generation, "ready"))
            except ApiException as error:
                if error.status not in (404, 409):
                    self.errors.append(error)
            except Exception as error:  # reported by __exit__
                self.errors.append(error)
            time.sleep(0.02)

    def __enter__(self) -> Controller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self.errors, self.errors


def _deployed(api: ApiClient, namespace: str, mode: str, version: str = "1") -> Json:
    with Controller(api, namespace, mode):
        result = _rollout(api, _config(namespace, mode), version)
    assert result.action == "created", result
    return get(api, INFERENCE_SERVICE, namespace, NAME)


# --- scenarios ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_create_then_the_same_version_is_a_no_op(k8s_api: ApiClient, k8s_namespace: str, mode: str) -> None:
    ns, probed = k8s_namespace, []
    with Controller(k8s_api, ns, mode):
        result = _rollout(k8s_api, _config(ns, mode), "1", probe=probed.append)
    assert (result.action, result.mode, result.name, result.namespace) == ("created", mode, NAME, ns)
    assert result.endpoint.startswith("http://")  # the external URL; the step probes the cluster-local one
    assert probed == [get(k8s_api, INFERENCE_SERVICE, ns, NAME)["status"]["address"]["url"]]
    assert probed[0].endswith(".svc.cluster.local")
    stored = get(k8s_api, INFERENCE_SERVICE, ns, NAME)
    # Finding 8: created under the name every KServe from 0.6 reads (no KServe defaulter here renames it); KServe
    # reports the new name in status.deploymentMode, which later writes copy (KServe refuses an update whose
    # annotation differs from it).
    assert stored["metadata"]["annotations"][I.MODE_ANNOTATION] == D.LEGACY_MODE_NAMES[mode]
    assert stored["status"]["deploymentMode"] == mode
    assert stored["spec"]["predictor"]["annotations"] == {I.VERSION_ANNOTATION: "1"} | I.SCRAPE_ANNOTATIONS
    assert stored["spec"]["predictor"]["containers"][0]["env"][0]["value"] == "s3://models/bert/1"

    again = _rollout(k8s_api, _config(ns, mode), "1", probe=probed.append)
    assert (again.action, again.mode) == ("no_op", mode) and "already live" in again.message
    assert get(k8s_api, INFERENCE_SERVICE, ns, NAME)["metadata"]["generation"] == stored["metadata"]["generation"]
    assert len(probed) == 1


@pytest.mark.parametrize("mode", MODES)
def test_good_canary_is_promoted(k8s_api: ApiClient, k8s_namespace: str, mode: str) -> None:
    ns, probed = k8s_namespace, []
    _deployed(k8s_api, ns, mode)
    with Controller(k8s_api, ns, mode) as controller:
        result = _rollout(k8s_api, _config(ns, "", canary_traffic_percent=25), "2", probe=probed.append)
    assert (result.action, result.mode) == ("promoted", mode), result
    *_, canary_spec, promoted_spec = (controller.specs[g] for g in sorted(controller.specs))  # the two writes
    if mode == "Standard":  # a second predictor at 25 %; the stable one untouched; never canaryTrafficPercent
        (entry,) = canary_spec["canary"]
        assert entry["trafficPercent"] == 25 and entry["predictor"]["name"] == "v2"
        assert entry["predictor"]["containers"][0]["env"][0]["value"] == "s3://models/bert/2"
        assert canary_spec["predictor"]["containers"][0]["env"][0]["value"] == "s3://models/bert/1"
        assert "canaryTrafficPercent" not in str(controller.specs)
    else:
        assert canary_spec["predictor"]["canaryTrafficPercent"] == 25 and "canary" not in canary_spec
        assert canary_spec["predictor"]["containers"][0]["env"][0]["value"] == "s3://models/bert/2"
    assert promoted_spec == get(k8s_api, INFERENCE_SERVICE, ns, NAME)["spec"]
    assert get(k8s_api, INFERENCE_SERVICE, ns, NAME)["metadata"]["annotations"][I.MODE_ANNOTATION] == mode
    assert "25 %" in result.message and "promotion written" not in result.message
    stored = get(k8s_api, INFERENCE_SERVICE, ns, NAME)
    predictor = stored["spec"]["predictor"]
    assert predictor["containers"][0]["env"][0]["value"] == "s3://models/bert/2"
    assert "canary" not in stored["spec"] and "canaryTrafficPercent" not in predictor
    if mode == "Standard":
        assert probed == [f"http://{NAME}-v2-predictor.{ns}.svc"]
        assert predictor["name"] == "v2"
        assert predictor["annotations"] == {I.VERSION_ANNOTATION: "2"} | I.SCRAPE_ANNOTATIONS
    else:
        assert probed == [f"http://latest-{NAME}-predictor.{ns}.svc.cluster.local"]  # the tag, in the cluster
        versions = {I.VERSION_ANNOTATION: "2", I.PREVIOUS_VERSION_ANNOTATION: "1"}
        assert predictor["annotations"] == versions | I.SCRAPE_ANNOTATIONS
    assert D.read_state(stored) == D.State(mode, "2", "")
    assert _rollout(k8s_api, _config(ns, ""), "2").action == "no_op"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("failure", ["controller", "probe", "timeout"])
def test_bad_canary_is_rolled_back(k8s_api: ApiClient, k8s_namespace: str, mode: str, failure: str) -> None:
    ns = k8s_namespace
    _deployed(k8s_api, ns, mode)
    behaviour = {"controller": "fail", "probe": "ready", "timeout": "ignore"}[failure]
    generation = int(get(k8s_api, INFERENCE_SERVICE, ns, NAME)["metadata"]["generation"]) + 1

    def probe(url: str) -> None:
        raise ConnectionError(f"{url}: predictions differ from evaluate's")

    with Controller(k8s_api, ns, mode, {generation: behaviour}):
        result = _rollout(k8s_api, _config(ns, "", timeout=2), "2", probe=probe)
    assert (result.action, result.mode) == ("rolled_back", mode), result
    expected = {
        "controller": "model failed to load" if mode == "Knative" else "storage-initializer: CrashLoopBackOff",
        "probe": "predictions differ from evaluate's",
        "timeout": "not ready within 2 s",
    }[failure]
    assert expected in result.message
    stored = get(k8s_api, INFERENCE_SERVICE, ns, NAME)
    assert D.read_state(stored) == D.State(mode, "1", "")
    if mode == "Standard":
        assert "canary" not in stored["spec"]
        assert stored["spec"]["predictor"]["containers"][0]["env"][0]["value"] == "s3://models/bert/1"
    else:
        assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 0
    with Controller(k8s_api, ns, mode):  # the live version again: nothing to do; another: a new canary
        assert _rollout(k8s_api, _config(ns, ""), "1").action == "no_op"
        assert _rollout(k8s_api, _config(ns, ""), "3").action == "promoted"
    assert D.read_state(get(k8s_api, INFERENCE_SERVICE, ns, NAME)) == D.State(mode, "3", "")


@pytest.mark.parametrize("mode", MODES)
def test_canary_is_judged_from_what_kserve_reports_not_from_the_generation(
    k8s_api: ApiClient, k8s_namespace: str, mode: str
) -> None:
    """Regression (issue 18, finding 1): KServe copies status.observedGeneration from the stable Deployment
    (Standard) or the Knative Service (Knative), never from the InferenceService.  Adding spec.canary leaves the
    stable Deployment alone (no minReplicas), so in Standard mode observedGeneration stays behind
    metadata.generation for good; a rollout that waited for it timed out and rolled every good canary back."""
    ns = k8s_namespace
    _deployed(k8s_api, ns, mode)
    seen: list[tuple[int, int]] = []

    def probe(url: str) -> None:
        isvc = get(k8s_api, INFERENCE_SERVICE, ns, NAME)
        seen.append((int(isvc["status"]["observedGeneration"]), int(isvc["metadata"]["generation"])))

    started = time.monotonic()
    with Controller(k8s_api, ns, mode):
        result = _rollout(k8s_api, _config(ns, "", timeout=20, canary_traffic_percent=30), "2", probe=probe)
    elapsed = time.monotonic() - started
    assert (result.action, result.mode) == ("promoted", mode), result
    assert "promotion written" not in result.message and elapsed < 10, (result.message, elapsed)
    ((observed, generation),) = seen  # while the canary was up
    if mode == "Standard":
        assert observed < generation  # the stable Deployment's generation: 1, the InferenceService's: 2
    promoted = get(k8s_api, INFERENCE_SERVICE, ns, NAME)
    assert "canaryStatuses" not in promoted["status"]
    assert D.read_state(promoted) == D.State(mode, "2", "")


def test_standard_canary_that_crash_loops_is_rolled_back_in_seconds(k8s_api: ApiClient, k8s_namespace: str) -> None:
    """Finding 6: KServe's canaryStatuses say only ready or not; the canary's pods (listed with the Role's pods
    get/list) show the storage initializer crash-looping, so the rollout does not wait for the timeout."""
    ns = k8s_namespace
    _deployed(k8s_api, ns, "Standard")
    generation = int(get(k8s_api, INFERENCE_SERVICE, ns, NAME)["metadata"]["generation"]) + 1
    started = time.monotonic()
    with Controller(k8s_api, ns, "Standard", {generation: "fail"}):
        result = _rollout(k8s_api, _config(ns, "", timeout=60), "2")
    assert result.action == "rolled_back" and time.monotonic() - started < 15, result
    assert "canary v2: pod reviews-v2-predictor-" in result.message
    assert "CrashLoopBackOff" in result.message and "no config.json in /mnt/models" in result.message


def test_standard_canary_without_gateway_api_says_it_took_no_external_traffic(
    k8s_api: ApiClient, k8s_namespace: str
) -> None:
    """Finding 5: KServe splits a Standard-mode canary's traffic only in its HTTPRoute reconciler (Gateway API);
    the result says when the cluster serves no Gateway API, and not once it does."""
    ns = k8s_namespace
    _deployed(k8s_api, ns, "Standard")
    with Controller(k8s_api, ns, "Standard"):
        result = _rollout(k8s_api, _config(ns, "", canary_traffic_percent=20), "2")
    assert result.action == "promoted" and "serves no Gateway API (gateway.networking.k8s.io)" in result.message
    assert "got none of the external traffic instead of 20 %" in result.message
    crd = {
        "metadata": {
            "name": "httproutes.gateway.networking.k8s.io",
            # a *.k8s.io group needs it (Gateway API's own CRDs carry this one)
            "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/891"},
        },
        "spec": {
            "group": "gateway.networking.k8s.io",
            "names": {
                "plural": "httproutes",
                "singular": "httproute",
                "kind": "HTTPRoute",
                "listKind": "HTTPRouteList",
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }
    try:  # a stand-in for Gateway API's CRDs (only its group is looked at)
        ApiextensionsV1Api(k8s_api).create_custom_resource_definition(crd)
    except ApiException as error:
        assert error.status == 409, error.body
    crds.wait_established(k8s_api, ["httproutes.gateway.networking.k8s.io"])
    with Controller(k8s_api, ns, "Standard"):
        result = _rollout(k8s_api, _config(ns, "", canary_traffic_percent=20), "3")
    assert result.action == "promoted" and "Gateway API" not in result.message


def test_first_deployment_that_never_gets_ready_is_deleted(k8s_api: ApiClient, k8s_namespace: str) -> None:
    result = _rollout(k8s_api, _config(k8s_namespace, "Standard", timeout=1), "1")
    assert (result.action, result.mode) == ("rolled_back", "Standard") and "not ready within 1 s" in result.message
    with pytest.raises(ApiException) as gone:
        get(k8s_api, INFERENCE_SERVICE, k8s_namespace, NAME)
    assert gone.value.status == 404


def test_unfinished_canary_of_another_version_is_rolled_back_first(k8s_api: ApiClient, k8s_namespace: str) -> None:
    ns = k8s_namespace
    isvc = _deployed(k8s_api, ns, "Standard")
    plan = D.decide(isvc, "2")
    predictor = I.render_predictor(DeployConfig(), storage_uri="s3://models/bert/2", model_version="2", image=IMAGE)
    stale = D.with_canary(isvc, plan, predictor, percent=10, canary_name="v2")
    CustomObjectsApi(k8s_api).replace_namespaced_custom_object(I.GROUP, I.VERSION, ns, I.PLURAL, NAME, stale)
    result = _rollout(k8s_api, _config(ns, ""), "1")
    assert result.action == "no_op" and "unfinished canary of version 2 is rolled back" in result.message
    assert "canary" not in get(k8s_api, INFERENCE_SERVICE, ns, NAME)["spec"]


# --- clusters without KServe, or with an old one, or without the rights ------------------------------------


def test_missing_crd_is_a_clear_error(k8s_api: ApiClient, k8s_namespace: str) -> None:
    absent = dataclasses.replace(K.INFERENCE_SERVICES, group="serving.kserve-absent.example.org")
    with pytest.raises(K.KServeError, match=r"KServe is not installed: the CRD inferenceservices\.serving\.kserve-ab"):
        _rollout(k8s_api, _config(k8s_namespace, "Knative"), "1", resource=absent)


OLD = dataclasses.replace(K.INFERENCE_SERVICES, group="serving.kserve-old.example.org")


@pytest.fixture(scope="module")
def old_kserve_crd(k8s_api: ApiClient, k8s_crds: tuple[str, ...]) -> Iterator[CustomResource]:
    """The InferenceService CRD without `spec.canary` and `canaryTrafficPercent`, under a group of its own."""
    (crd,) = [
        c for c in crds.load_crds(crds.crd_dir()) if c["metadata"]["name"] == "inferenceservices.serving.kserve.io"
    ]
    crd = copy.deepcopy(crd)
    crd["metadata"] = {"name": OLD.crd_name}
    crd["spec"]["group"] = OLD.group
    for version in crd["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        del spec["canary"]
        del spec["predictor"]["properties"]["canaryTrafficPercent"]
    names = crds.apply_crds(k8s_api, [crd])
    crds.wait_established(k8s_api, names)
    yield OLD


@pytest.mark.parametrize(("mode", "field"), [("Standard", "spec.canary"), ("Knative", "canaryTrafficPercent")])
def test_crd_without_the_modes_canary_field_fails_before_changing_anything(
    k8s_api: ApiClient, k8s_namespace: str, old_kserve_crd: CustomResource, mode: str, field: str
) -> None:
    ns, res = k8s_namespace, old_kserve_crd
    body = I.render_inference_service(
        _config(ns, mode), namespace=ns, storage_uri="s3://models/bert/1", model_version="1", image=IMAGE
    )
    body["apiVersion"] = f"{res.group}/{res.version}"
    custom = CustomObjectsApi(k8s_api)
    custom.create_namespaced_custom_object(res.group, res.version, ns, res.plural, body)
    before = custom.get_namespaced_custom_object(res.group, res.version, ns, res.plural, NAME)
    with pytest.raises(K.KServeError, match=rf"does not know \S*{field}.*nothing was changed.*Upgrade KServe"):
        _rollout(k8s_api, _config(ns, ""), "2", resource=res)
    after = custom.get_namespaced_custom_object(res.group, res.version, ns, res.plural, NAME)
    assert after["spec"] == before["spec"] and after["metadata"]["generation"] == before["metadata"]["generation"]


def _wait_allowed(api: ApiClient, namespace: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            get(api, INFERENCE_SERVICE, namespace, NAME)
        except ApiException as error:
            if error.status == 404:
                return
            if error.status != 403 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_missing_permission_names_verb_resource_and_namespace(
    k8s_cluster: Cluster, k8s_api: ApiClient, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    user = k8s_cluster.unprivileged_api_client()
    try:
        fix = r"verbs \[get, create, update, delete\].*Role in manifests/"
        with pytest.raises(K.KServeError, match=rf"cannot get inferenceservices.serving.kserve.io in namespace {ns}"):
            _rollout(user, _config(ns, "Knative"), "1")
        rbac = RbacAuthorizationV1Api(k8s_api)
        rule = {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"], "verbs": ["get"]}
        rbac.create_namespaced_role(ns, {"metadata": {"name": "isvc-get"}, "rules": [rule]})
        subject = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": k8s_cluster.unprivileged_user}
        role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "isvc-get"}
        rbac.create_namespaced_role_binding(
            ns, {"metadata": {"name": "isvc-get"}, "roleRef": role_ref, "subjects": [subject]}
        )
        _wait_allowed(user, ns)
        with pytest.raises(K.KServeError, match=rf"cannot create inferenceservices.serving.kserve.io in .*{fix}"):
            _rollout(user, _config(ns, "Knative"), "1")
    finally:
        user.close()
