"""The KServe backend's decisions: the decision table (modes rewritten, unsupported modes refused), the spec edits
per mode, the status reading, and where the namespace comes from. Rendering: test_kserve_render.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.deploy import inference_service as I
from components.deploy import kserve_decision as D
from components.deploy.config import DeployConfig
from components.deploy.kserve import KServeError, Rollout, resolve_namespace

Json = dict[str, Any]
IMAGE = "registry.example/bert-kfp/serve:0.1.0"
V = I.VERSION_ANNOTATION
P = I.PREVIOUS_VERSION_ANNOTATION


# --- the decision table -------------------------------------------------------------------------------------


def _knative(version: str, *, percent: int | None = None, previous: str = "", status_mode: str = "Knative") -> Json:
    annotations = {V: version} | ({P: previous} if previous else {})
    predictor: Json = {"annotations": annotations, "containers": [{"name": "kserve-container", "image": IMAGE}]}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    return {
        "metadata": {"name": "review-sentiment"},
        "spec": {"predictor": predictor},
        "status": {"deploymentMode": status_mode},
    }


def _standard(version: str, canary: str = "", *, annotation: str = "Standard", status_mode: str = "") -> Json:
    isvc: Json = {
        "metadata": {"name": "review-sentiment", "annotations": {I.MODE_ANNOTATION: annotation}},
        "spec": {
            "predictor": {
                "minReplicas": 2,
                "annotations": {V: version},
                "model": {"modelFormat": {"name": "huggingface"}, "storageUri": "s3://m"},
            }
        },
        "status": {"deploymentMode": status_mode} if status_mode else {},
    }
    if canary:
        entry = {
            "name": f"v{canary}",
            "annotations": {V: canary},
            "model": {"modelFormat": {"name": "huggingface"}, "storageUri": "s3://c"},
        }
        isvc["spec"]["canary"] = [{"trafficPercent": 10, "predictor": entry}]
    return isvc


@pytest.mark.parametrize(
    ("isvc", "version", "action", "mode", "live", "stale"),
    [
        (None, "1", "create", "", "", False),
        (_knative("1"), "1", "no_op", "Knative", "1", False),
        (_knative("1"), "2", "canary", "Knative", "1", False),
        (_knative("1", percent=100), "2", "canary", "Knative", "1", False),
        (_knative("2", percent=0, previous="1"), "1", "no_op", "Knative", "1", False),  # 2 was rolled back
        (_knative("2", percent=0, previous="1"), "2", "canary", "Knative", "1", False),
        (_knative("2", percent=10, previous="1"), "3", "canary", "Knative", "1", True),  # unfinished canary
        (_knative("2", percent=10, previous="1"), "2", "canary", "Knative", "1", False),
        (_knative("2", percent=10, previous="1"), "1", "no_op", "Knative", "1", True),
        (_knative("1", status_mode="Serverless"), "2", "canary", "Knative", "1", False),
        (_standard("1"), "1", "no_op", "Standard", "1", False),
        (_standard("1"), "2", "canary", "Standard", "1", False),
        (_standard("1", "2"), "2", "canary", "Standard", "1", False),
        (_standard("1", "2"), "3", "canary", "Standard", "1", True),
        (_standard("1", annotation="RawDeployment"), "2", "canary", "Standard", "1", False),
        (_standard("1", annotation="Knative", status_mode="RawDeployment"), "2", "canary", "Standard", "1", False),
        (
            {"metadata": {"name": "x"}, "spec": {"predictor": {}}, "status": {"deploymentMode": "Standard"}},
            "1",
            "canary",
            "Standard",
            "",
            False,
        ),  # an InferenceService that is not ours: canary
    ],
)
def test_decision_table(isvc: Json | None, version: str, action: str, mode: str, live: str, stale: bool) -> None:
    plan = D.decide(isvc, version)
    assert (plan.action, plan.mode, plan.live, plan.stale_canary) == (action, mode, live, stale)


@pytest.mark.parametrize(
    ("isvc", "configured", "match"),
    [
        (_standard("1", annotation="ModelMesh"), "", "'ModelMesh' is not supported"),
        ({"metadata": {"name": "x"}, "spec": {"predictor": {}}}, "", "set --kserve-mode"),
        ({"metadata": {"name": "x"}, "spec": {"predictor": {}}, "status": {"deploymentMode": "Other"}}, "", "Other"),
    ],
)
def test_unsupported_or_unknown_mode_is_an_error(isvc: Json, configured: str, match: str) -> None:
    with pytest.raises(D.UnsupportedModeError, match=match):
        D.decide(isvc, "2", configured)


def test_mode_falls_back_to_the_configured_one() -> None:
    assert D.decide({"metadata": {"name": "x"}, "spec": {"predictor": {}}}, "2", "Standard").mode == "Standard"


# --- spec edits per mode ------------------------------------------------------------------------------------


def _new_predictor(version: str = "2") -> Json:
    return I.render_predictor(DeployConfig(), storage_uri=f"s3://models/{version}", model_version=version, image=IMAGE)


def test_knative_canary_promote_and_roll_back() -> None:
    stable = _knative("1")
    stable["spec"]["predictor"] |= {"minReplicas": 1, "name": "main"}
    plan = D.decide(stable, "2")
    canary = D.with_canary(stable, plan, _new_predictor(), percent=10, canary_name="v2")
    predictor = canary["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["annotations"] == {V: "2", P: "1"} | I.SCRAPE_ANNOTATIONS
    assert predictor["containers"][0]["env"][0]["value"] == "s3://models/2"
    assert (predictor["minReplicas"], predictor["name"]) == (1, "main")  # the stable settings are kept
    assert "canary" not in canary["spec"] and stable["spec"]["predictor"]["annotations"] == {V: "1"}
    assert canary["metadata"]["annotations"] == {I.TAG_ROUTING_ANNOTATION: "true"}  # the canary's own URL
    assert D.read_state(canary) == D.State("Knative", "1", "2")

    promoted = D.promoted(canary, "Knative")
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert D.read_state(promoted) == D.State("Knative", "2", "")

    back = D.rolled_back(canary, "Knative")
    assert back["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert D.read_state(back) == D.State("Knative", "1", "")
    I.to_sdk_model(canary), I.to_sdk_model(promoted), I.to_sdk_model(back)


def test_standard_canary_promote_and_roll_back_never_use_canary_traffic_percent() -> None:
    stable = _standard("1", annotation="RawDeployment")
    plan = D.decide(stable, "2")
    canary = D.with_canary(stable, plan, _new_predictor(), percent=20, canary_name="v2")
    assert canary["spec"]["predictor"] == stable["spec"]["predictor"]  # the stable predictor is untouched
    (entry,) = canary["spec"]["canary"]
    assert entry["trafficPercent"] == 20 and entry["predictor"]["name"] == "v2"
    assert entry["predictor"]["annotations"] == {V: "2"} | I.SCRAPE_ANNOTATIONS
    assert "minReplicas" not in entry["predictor"]
    assert canary["metadata"]["annotations"][I.MODE_ANNOTATION] == "Standard"  # KServe wants it for spec.canary
    assert D.read_state(canary) == D.State("Standard", "1", "2")

    promoted = D.promoted(canary, "Standard")
    assert "canary" not in promoted["spec"]
    assert promoted["spec"]["predictor"] == entry["predictor"] | {"minReplicas": 2}
    assert D.read_state(promoted) == D.State("Standard", "2", "")

    back = D.rolled_back(canary, "Standard")
    assert "canary" not in back["spec"] and back["spec"]["predictor"] == stable["spec"]["predictor"]
    for obj in (canary, promoted, back):
        assert "canaryTrafficPercent" not in yaml.safe_dump(obj)
        I.to_sdk_model(obj)


# --- status reading -------------------------------------------------------------------------------------------


def _status(isvc: Json, **status: Any) -> Json:
    out = copy.deepcopy(isvc)
    out["metadata"] |= {"namespace": "ml", "generation": 2}
    out["status"] = {"observedGeneration": 2} | status
    return out


READY = {"type": "Ready", "status": "True"}
NOT_READY = {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "model failed to load"}
LATEST = {"revisionName": "r2", "percent": 10, "latestRevision": True, "url": "http://latest-rs.ml.example.com"}


@pytest.mark.parametrize(
    ("status", "state", "url_or_detail"),
    [
        ({"observedGeneration": 1}, "waiting", "not observed yet"),  # the Knative Service's, as before the write
        (
            {
                "conditions": [READY],
                "components": {"predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r1"}},
            },
            "waiting",
            "r2",
        ),
        (
            {
                "conditions": [READY],
                "components": {
                    "predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r2", "traffic": [LATEST]}
                },
            },
            "ready",
            "http://latest-review-sentiment-predictor.ml.svc.cluster.local",  # the tag's cluster-local address
        ),
        (
            {
                "conditions": [READY],
                "components": {
                    "predictor": {
                        "latestCreatedRevision": "r2",
                        "latestReadyRevision": "r2",
                        "traffic": [LATEST | {"percent": 0}],  # a roll back observed, not the canary yet
                    }
                },
            },
            "waiting",
            "0 %, not 10 %",
        ),
        (
            {
                "conditions": [NOT_READY],
                "components": {"predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r1"}},
            },
            "failed",
            "model failed to load",
        ),
        ({"conditions": [READY], "modelStatus": {"transitionStatus": "BlockedByFailedLoad"}}, "failed", "Blocked"),
    ],
)
def test_knative_canary_progress(status: Json, state: str, url_or_detail: str) -> None:
    before = {"status": {"observedGeneration": 1}}
    progress = D.canary_progress(_status(_knative("2", percent=10), **status), "Knative", before, "v2")
    assert progress.state == state
    assert url_or_detail in (progress.url if state == "ready" else progress.detail)


CANARY_READY = {"type": "CanaryPredictorReady", "status": "True", "reason": "AllCanariesReady"}
CANARY_NOT_READY = {"type": "CanaryPredictorReady", "status": "False", "reason": "CanariesNotReady"}


@pytest.mark.parametrize(
    ("status", "state", "url_or_detail"),
    [
        (
            {
                "conditions": [READY, CANARY_NOT_READY],
                "canaryStatuses": [{"name": "v2", "ready": False, "trafficPercent": 10}],
            },
            "waiting",
            "CanariesNotReady",
        ),
        (
            {
                "conditions": [READY, CANARY_READY],
                "canaryStatuses": [{"name": "v2", "ready": True, "trafficPercent": 10}],
            },
            "ready",
            "http://review-sentiment-v2-predictor.ml.svc",
        ),
        (
            {
                "conditions": [READY, CANARY_READY],
                "canaryStatuses": [{"name": "v9", "ready": True, "trafficPercent": 10}],
            },
            "waiting",
            "canary v2 not in status.canaryStatuses yet",
        ),
        (
            {
                "canaryStatuses": [
                    {
                        "name": "v2",
                        "ready": False,
                        "trafficPercent": 10,
                        "modelStatus": {
                            "transitionStatus": "BlockedByFailedLoad",
                            "lastFailureInfo": {"reason": "ModelLoadFailed"},
                        },
                    }
                ]
            },
            "failed",
            "canary v2: BlockedByFailedLoad: ModelLoadFailed",
        ),
    ],
)
def test_standard_canary_progress(status: Json, state: str, url_or_detail: str) -> None:
    progress = D.canary_progress(_status(_standard("1", "2"), **status), "Standard", {}, "v2")
    assert progress.state == state
    assert url_or_detail in (progress.url if state == "ready" else progress.detail)


def test_standard_canary_failing_pods_fail_it_at_once() -> None:
    crash = {
        "metadata": {"name": "rs-v2-predictor-abc"},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "storage-initializer",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "no config.json"}},
                }
            ]
        },
    }
    starting = {"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {"waiting": {"reason": "x"}}}]}}
    isvc = _status(_standard("1", "2"), canaryStatuses=[{"name": "v2", "ready": False, "trafficPercent": 10}])
    assert D.canary_progress(isvc, "Standard", {}, "v2", [starting]).state == "waiting"
    failed = D.canary_progress(isvc, "Standard", {}, "v2", [starting, crash])
    assert failed.state == "failed"
    assert failed.detail == (
        "canary v2: pod rs-v2-predictor-abc, container storage-initializer: CrashLoopBackOff; last exit code 1: "
        "no config.json"
    )
    assert D.pod_failure([{"metadata": {"name": "p"}, "status": {"phase": "Failed", "reason": "Evicted"}}])


def test_ready_progress_and_endpoint() -> None:
    isvc = _status(_knative("1"), conditions=[READY], url="http://rs.ml.example.com")
    assert D.ready_progress(isvc) == D.Progress("ready", url="http://rs.ml.example.com")
    isvc["status"]["address"] = {"url": "http://rs.ml.svc.cluster.local"}
    assert D.ready_progress(isvc) == D.Progress("ready", url="http://rs.ml.svc.cluster.local")  # probed in-cluster
    # a Knative promotion: seen once the Knative Service's generation moved and the latest revision has 100 %
    latest = {"predictor": {"traffic": [LATEST | {"percent": 100}]}}
    assert D.ready_progress(isvc, "Knative", {"status": {"observedGeneration": 2}}).state == "waiting"
    assert D.ready_progress(isvc, "Knative", {"status": {"observedGeneration": 1}}).state == "waiting"
    isvc["status"]["components"] = latest
    assert D.ready_progress(isvc, "Knative", {"status": {"observedGeneration": 1}}).state == "ready"
    # a Standard promotion: seen once the canary is no longer reported (observedGeneration is the Deployment's)
    standard = _status(_standard("2"), conditions=[READY, CANARY_READY])
    assert D.ready_progress(standard, "Standard", standard).state == "waiting"
    del standard["status"]["conditions"][1]
    assert D.ready_progress(standard, "Standard", standard).state == "ready"
    assert D.endpoint({"status": {"address": {"url": "http://rs.ml.svc.cluster.local"}}}).endswith("cluster.local")


# --- the namespace and the result ---------------------------------------------------------------------------


def test_namespace_comes_from_option_then_pod_then_kubeconfig(tmp_path: Path) -> None:
    pod = tmp_path / "namespace"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "from-context"}}],
                "current-context": "x",
            }
        )
    )
    assert resolve_namespace(" ml ", service_account_namespace=pod, kubeconfig=str(kubeconfig)) == "ml"
    assert resolve_namespace("", service_account_namespace=pod, kubeconfig=str(kubeconfig)) == "from-context"
    pod.write_text("from-pod\n")
    assert resolve_namespace("", service_account_namespace=pod, kubeconfig=str(kubeconfig)) == "from-pod"
    with pytest.raises(KServeError, match="set kserve_namespace"):
        resolve_namespace("", service_account_namespace=tmp_path / "absent", kubeconfig=str(tmp_path / "none"))


def test_rollout_result_as_dict() -> None:
    result = Rollout("promoted", "Standard", "http://rs.ml.example.com", "rs", "ml", "ok")
    assert result.to_dict() == {
        "action": "promoted",
        "mode": "Standard",
        "endpoint": "http://rs.ml.example.com",
        "name": "rs",
        "namespace": "ml",
        "message": "ok",
    }


def test_mode_names_the_installed_kserve_understands() -> None:
    """Finding 8: Knative/Standard exist from KServe 0.16; older ones ignore them and deploy in their default mode."""
    config = DeployConfig(kserve_mode="Standard")
    body = I.render_inference_service(config, namespace="ml", storage_uri="s3://m/1", model_version="1", image=IMAGE)
    sent = D.with_legacy_mode_name(body)
    assert sent["metadata"]["annotations"][I.MODE_ANNOTATION] == "RawDeployment"  # read by every KServe from 0.6
    assert body["metadata"]["annotations"][I.MODE_ANNOTATION] == "Standard"  # a copy
    normalized = copy.deepcopy(sent)
    normalized["metadata"]["annotations"][I.MODE_ANNOTATION] = "Standard"  # KServe 0.17+'s defaulter, dry run
    assert D.with_mode_name_of(sent, normalized)["metadata"]["annotations"][I.MODE_ANNOTATION] == "Standard"
    assert D.with_mode_name_of(sent, sent)["metadata"]["annotations"][I.MODE_ANNOTATION] == "RawDeployment"
    # an update follows status.deploymentMode (KServe 0.16+ refuses any other annotation); older: left alone
    assert (
        D.with_status_mode_name(sent | {"status": {"deploymentMode": "Standard"}})["metadata"]["annotations"][
            I.MODE_ANNOTATION
        ]
        == "Standard"
    )
    assert D.with_status_mode_name(sent) == sent
    assert D.with_legacy_mode_name(_knative("1")) == _knative("1")  # no annotation: the cluster's default
