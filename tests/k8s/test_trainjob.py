"""Multi-node training against the real API server with the Kubeflow Trainer v2.3 CRDs: the rendered TrainJob is
kept whole (and a wrong type refused), and `train_on_cluster` creates it, waits while the test plays the Trainer
controller (and rank 0, writing the model on the "shared PVC", a temporary directory here), collects the model
and cleans up; failure, timeout and a cluster without Kubeflow Trainer are clear errors.

The bare API server runs no kubelet, so pod logs cannot be streamed here: the node-0 pod selection is tested on
real pods (created, never scheduled), and the log follower is seen waiting on them without failing the run.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from components.common import trainjob as T
from components.common.cluster import Cluster
from components.train import trainjob as J

from .controllers import Resource, get, patch_status, pruned_paths

Json = dict[str, Any]
pytestmark = pytest.mark.usefixtures("k8s_crds")
TRAINJOB = Resource(T.GROUP, T.VERSION, T.PLURAL, T.KIND)
GPU = {
    "accelerator_type": "nvidia.com/gpu",
    "accelerator_count": 2,
    "node_selector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "cpu_request": "8",
    "memory_limit": "64Gi",
    "shm_size": "8Gi",
}


def _placement(shared: Path, **overrides: Any) -> Cluster:
    settings: dict[str, Any] = {
        "image": "registry.example/bert-kfp/train:1.2.0-abc1234",
        "gpu": {**GPU, "nodes": 2},
        "feast": {"pvc": "feast-store", "mount_path": "/mnt/feast", "config_map": "feast-config"},
        "mlflow": {"tracking_uri": "http://mlflow:5000", "secret": "mlflow-credentials", "secret_keys": ["A"]},
        "trainjob": {"shared_pvc": "bert-shared", "mount_path": str(shared), "timeout_seconds": 30},
    }
    return Cluster.model_validate(settings | overrides)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def finish_trainjob(api: ApiClient, namespace: str, name: str, *, complete: bool, message: str = "") -> Json:
    """What the Trainer controller writes at the end: the JobSet's Completed or Failed condition, renamed Complete or
    Failed, reason and message kept (kubeflow/trainer v2.3.0 pkg/runtime/framework/plugins/jobset/jobset.go; the
    reasons are JobSet's AllJobsCompleted and FailedJobs, sigs.k8s.io/jobset pkg/constants)."""
    condition = {
        "type": "Complete" if complete else "Failed",
        "status": "True",
        "reason": "AllJobsCompleted" if complete else "FailedJobs",
        "message": message or ("jobset completed" if complete else "jobset failed"),
        "lastTransitionTime": _now(),
    }
    return patch_status(api, TRAINJOB, namespace, name, {"conditions": [condition]})


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _play(api: ApiClient, namespace: str, action: Callable[[Json], object]) -> threading.Thread:
    """Once the step has created its TrainJob, act on it (as the controller and the training would)."""

    def play() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            items = CustomObjectsApi(api).list_namespaced_custom_object(T.GROUP, T.VERSION, namespace, T.PLURAL)[
                "items"
            ]
            if items:
                action(items[0])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


def _trainjobs(api: ApiClient, namespace: str) -> list[Json]:
    return CustomObjectsApi(api).list_namespaced_custom_object(T.GROUP, T.VERSION, namespace, T.PLURAL)["items"]


def _values(tmp_path: Path) -> dict[str, Any]:
    return {
        "feature_store": "/mnt/feast/store",
        "feast_config": "cluster",
        "num_train_epochs": 2,
        "pipeline_run_id": "run-42",
        "output_dir": str(tmp_path / "tmp-checkpoints"),
        "model_dir": str(tmp_path / "outputs" / "model"),
        "report": str(tmp_path / "outputs" / "training_report.json"),
    }


def test_rendered_trainjob_is_kept_whole_and_a_wrong_type_refused(k8s_api: ApiClient, k8s_namespace: str) -> None:
    sent = T.render_trainjob(_placement(Path("/mnt/shared")), ["--epochs", "2"], name="render", namespace=k8s_namespace)
    custom = CustomObjectsApi(k8s_api)
    custom.create_namespaced_custom_object(T.GROUP, T.VERSION, k8s_namespace, T.PLURAL, sent)
    stored = get(k8s_api, TRAINJOB, k8s_namespace, "render")
    assert pruned_paths(sent, stored) == []
    assert {k: stored["spec"][k] for k in sent["spec"]} == sent["spec"]
    assert (
        stored["spec"]["managedBy"] == "trainer.kubeflow.org/trainjob-controller"
    )  # the CRD's default: Trainer runs it
    T.validate_trainjob(stored)
    wrong = T.render_trainjob(_placement(Path("/mnt/shared")), [], name="wrong", namespace=k8s_namespace)
    wrong["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(T.GROUP, T.VERSION, k8s_namespace, T.PLURAL, wrong)
    assert refused.value.status == 422 and "numNodes" in refused.value.body


def test_complete_trainjob_gives_the_model_and_is_cleaned_up(
    k8s_api: ApiClient, k8s_namespace: str, tmp_path: Path
) -> None:
    ns, shared = k8s_namespace, tmp_path / "shared"
    seen: dict[str, Json] = {}

    def rank0_then_controller(job: Json) -> None:
        seen["job"] = job
        command = job["spec"]["trainer"]["command"]
        model = Path(_option(command, "--model-dir"))
        model.mkdir(parents=True)
        (model / "model.safetensors").write_bytes(b"weights")
        Path(_option(command, "--report")).write_text('{"metrics": {"eval_accuracy": 0.71}, "world_size": 4}')
        finish_trainjob(k8s_api, ns, job["metadata"]["name"], complete=True)

    thread = _play(k8s_api, ns, rank0_then_controller)
    values = _values(tmp_path)
    run_dir = J.train_on_cluster(
        values, _placement(shared), keep_checkpoints=False, api_client=k8s_api, namespace=ns, poll_s=0.1
    )
    thread.join(5)
    command = seen["job"]["spec"]["trainer"]["command"]
    assert command[:5] == ["python", "-m", "torch.distributed.run", "-m", "components.train"]
    assert _option(command, "--output-dir") == str(shared / "run-42" / "train")  # checkpoints on the shared PVC
    assert _option(command, "--feature-store") == "/mnt/feast/store"
    assert (Path(values["model_dir"]) / "model.safetensors").read_bytes() == b"weights"
    assert '"eval_accuracy": 0.71' in Path(values["report"]).read_text()
    assert run_dir == shared / "run-42" and not run_dir.exists()  # removed: no checkpoint root was asked for
    assert _trainjobs(k8s_api, ns) == []


def test_failed_trainjob_is_a_clear_error_and_is_cleaned_up(
    k8s_api: ApiClient, k8s_namespace: str, tmp_path: Path
) -> None:
    ns = k8s_namespace
    thread = _play(
        k8s_api,
        ns,
        lambda job: finish_trainjob(k8s_api, ns, job["metadata"]["name"], complete=False, message="node-1 OOMKilled"),
    )
    with pytest.raises(J.TrainJobError, match=rf"TrainJob {ns}/bert-train-x failed: FailedJobs node-1 OOMKilled"):
        J.train_on_cluster(
            _values(tmp_path),
            _placement(tmp_path),
            keep_checkpoints=False,
            api_client=k8s_api,
            namespace=ns,
            poll_s=0.1,
            name="bert-train-x",
        )
    thread.join(5)
    assert _trainjobs(k8s_api, ns) == []
    assert not Path(_values(tmp_path)["model_dir"]).exists()  # the step's output stays untouched


def test_timeout_is_a_clear_error_and_cleans_up(k8s_api: ApiClient, k8s_namespace: str, tmp_path: Path) -> None:
    job = T.render_trainjob(_placement(tmp_path), [], name="slow", namespace=k8s_namespace)
    with pytest.raises(J.TrainJobError, match=rf"TrainJob {k8s_namespace}/slow did not finish within 0.5 s"):
        J.run_trainjob(k8s_api, job, namespace=k8s_namespace, timeout_s=0.5, poll_s=0.1)
    assert _trainjobs(k8s_api, k8s_namespace) == []


def test_missing_crd_is_a_clear_error(k8s_api: ApiClient, k8s_namespace: str, tmp_path: Path) -> None:
    """A TrainJob resource that is not installed on this server stands for a cluster without Kubeflow Trainer."""
    absent = dataclasses.replace(J.TRAINJOBS, group="trainer-absent.example.org")
    job = T.render_trainjob(_placement(tmp_path), [], name="no-trainer", namespace=k8s_namespace)
    with pytest.raises(ValueError, match=r"Kubeflow Trainer is not installed: the CRD trainjobs.trainer-absent"):
        J.run_trainjob(k8s_api, job, namespace=k8s_namespace, timeout_s=5, poll_s=0.1, resource=absent)


def _pod(name: str, labels: dict[str, str]) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "node", "image": "registry.example/train:1"}],
        },
    }


def test_node0_pod_is_found_by_its_jobset_labels_and_the_follower_waits_for_it(
    k8s_api: ApiClient, k8s_namespace: str
) -> None:
    core = CoreV1Api(k8s_api)
    ns = k8s_namespace
    core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})  # no controller makes it here
    assert J.node0_pod(k8s_api, ns, "job-a") is None

    def labels(jobset: str, index: str, replicated: str = "node") -> dict[str, str]:
        return {T.JOBSET_NAME_LABEL: jobset, T.REPLICATED_JOB_LABEL: replicated, T.JOB_INDEX_LABEL: index}

    for name, pod_labels in [
        ("job-a-node-0-0-first", labels("job-a", "0")),
        ("job-a-node-0-1-x", labels("job-a", "1")),
        ("job-b-node-0-0-x", labels("job-b", "0")),
        ("job-a-init-0-0-x", labels("job-a", "0", "dataset-initializer")),
    ]:
        core.create_namespaced_pod(ns, _pod(name, pod_labels))
    assert J.node0_pod(k8s_api, ns, "job-a") == "job-a-node-0-0-first"
    time.sleep(1.1)  # creation timestamps have whole seconds
    core.create_namespaced_pod(ns, _pod("job-a-node-0-0-retry", labels("job-a", "0")))
    assert J.node0_pod(k8s_api, ns, "job-a") == "job-a-node-0-0-retry"  # a retried node 0: the newest pod

    lines: list[str] = []
    follower = J.LogFollower(k8s_api, ns, "job-a", lines.append, retry_s=0.1).start()
    deadline = time.monotonic() + 10
    while follower.attempts < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert follower.alive  # the pod has not run: no log yet, the follower keeps asking
    follower.stop()
    assert not follower.alive
    assert follower.pod == "job-a-node-0-0-retry"
    assert lines == [] and follower.last_error == ""  # (1.20 answers an unscheduled pod's log with 204, empty)
