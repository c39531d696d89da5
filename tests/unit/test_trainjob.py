"""The multi-node TrainJob, rendered without a server: Trainer v2.3 fields, placement, environment, validation;
the cluster placement a pod reads from its environment; the pieces of the run that need no server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components.common import trainjob as T
from components.common.cluster import ENV, Cluster, parse
from components.train import cli
from components.train import trainjob as J

GPU = {
    "accelerator_type": "nvidia.com/gpu",
    "accelerator_count": 4,
    "node_selector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "cpu_request": "16",
    "memory_request": "64Gi",
    "memory_limit": "96Gi",
    "shm_size": "8Gi",
}
FEAST = {
    "pvc": "feast-store",
    "mount_path": "/mnt/feast",
    "config_map": "feast-config",
    "config_keys": ["FEAST_REGISTRY_PATH", "FEAST_OFFLINE_PATH"],
    "secret": "feast-redis",
    "secret_keys": ["FEAST_REDIS_CONNECTION_STRING"],
}
MLFLOW = {
    "tracking_uri": "http://mlflow.team.svc.cluster.local:5000",
    "secret": "mlflow-credentials",
    "secret_keys": ["MLFLOW_TRACKING_TOKEN"],
    "secret_optional": True,
}


def placement(**overrides: Any) -> Cluster:
    settings: dict[str, Any] = {
        "image": "registry.example/bert-kfp/train:1.2.0-abc1234",
        "gpu": {**GPU, "nodes": 2},
        "feast": FEAST,
        "mlflow": MLFLOW,
        "trainjob": {"shared_pvc": "bert-shared", "mount_path": "/mnt/shared", "timeout_seconds": 7200},
    }
    return parse(Cluster, settings | overrides)


def _render(**overrides: Any) -> dict[str, Any]:
    argv = ["--feature_store", "/mnt/feast/store", "--model_dir", "/mnt/shared/run/model"]
    return T.render_trainjob(placement(**overrides), argv, name="bert-train-1", namespace="team")


def test_trainer_runs_the_training_cli_under_torchrun_on_every_node() -> None:
    job = _render()
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["metadata"] == {"name": "bert-train-1", "namespace": "team"}
    spec = job["spec"]
    assert spec["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    assert spec["activeDeadlineSeconds"] == 7200
    trainer = spec["trainer"]
    assert trainer["image"] == "registry.example/bert-kfp/train:1.2.0-abc1234"
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)  # one process per GPU
    # no rendezvous flags: torchrun reads PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR/PORT set by the runtime
    assert trainer["command"] == [
        *("python", "-m", "torch.distributed.run", "-m", "components.train"),
        *("--feature_store", "/mnt/feast/store", "--model_dir", "/mnt/shared/run/model"),
    ]
    assert trainer["resourcesPerNode"] == {
        "limits": {"nvidia.com/gpu": "4", "memory": "96Gi"},
        "requests": {"cpu": "16", "memory": "64Gi"},
    }


def test_environment_comes_from_the_feature_store_and_mlflow_entries() -> None:
    env = {e["name"]: e for e in _render()["spec"]["trainer"]["env"]}
    assert env["MLFLOW_TRACKING_URI"] == {"name": "MLFLOW_TRACKING_URI", "value": MLFLOW["tracking_uri"]}
    assert env["FEAST_REGISTRY_PATH"]["valueFrom"]["configMapKeyRef"] == {
        "name": "feast-config",
        "key": "FEAST_REGISTRY_PATH",
        "optional": True,
    }
    assert env["FEAST_REDIS_CONNECTION_STRING"]["valueFrom"]["secretKeyRef"] == {
        "name": "feast-redis",
        "key": "FEAST_REDIS_CONNECTION_STRING",
    }
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_placement_volumes_and_mounts_are_a_runtime_patch_of_the_node_job() -> None:
    (patch,) = _render()["spec"]["runtimePatches"]
    assert patch["manager"] == T.PATCH_MANAGER
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    pod = replicated["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == GPU["tolerations"]
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims == {"feast-store": "feast-store", "shared": "bert-shared", "dshm": None}
    (container,) = pod["containers"]
    assert container["name"] == "node"
    # the "restricted" Pod Security Standard of the project's namespace
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {
        "feast-store": "/mnt/feast",
        "shared": "/mnt/shared",
        "dshm": "/dev/shm",
    }


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda j: j["spec"]["trainer"].__setitem__("numNodes", "two"), r"numNodes: Input should be a valid integer"),
        (lambda j: j["spec"]["trainer"].__setitem__("numNode", 2), r"unknown field spec.trainer.numNode\b"),
        (lambda j: j["spec"].pop("runtimeRef"), r"runtimeRef"),
        (lambda j: j["spec"]["runtimePatches"][0].pop("manager"), r"manager"),
    ],
)
def test_the_trainer_models_refuse_wrong_fields(break_it: Any, message: str) -> None:
    job = _render()
    T.validate_trainjob(job)
    break_it(job)
    with pytest.raises(ValueError, match=message):
        T.validate_trainjob(job)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"trainjob": None}, r"asks for gpu.nodes 2 but has no 'trainjob' entry: add trainjob.shared_pvc"),
        ({"gpu": {**GPU, "nodes": 0}}, r"gpu.nodes: must be a positive integer, got 0"),
        ({"gpu": {**GPU, "accelerator_count": True}}, r"gpu.accelerator_count: Input should be a valid integer"),
        ({"image": "registry.example/train:latest"}, r"image: a pinned training image is needed"),
        ({"tuning": {"engine": "hyperopt"}}, r"tuning.engine: 'hyperopt'; valid: optuna, katib"),
        ({"gpu": {**GPU, "accelerator_type": ""}}, r"gpu.accelerator_type: the GPU resource name is needed"),
        ({"gpu": {**GPU, "gpus": 2}}, r"gpu: unknown keys \['gpus'\]; valid: accelerator_type, "),
    ],
)
def test_bad_placement_is_a_clear_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        placement(**overrides)


def test_placement_travels_through_the_environment() -> None:
    sent = placement()
    assert Cluster.from_env({ENV: sent.to_env()}) == sent
    assert Cluster.from_env({}) is None
    with pytest.raises(ValueError, match=r"BERT_KFP_CLUSTER is not JSON"):
        Cluster.from_env({ENV: "{nodes: 2"})
    with pytest.raises(ValueError, match=r"BERT_KFP_CLUSTER: unknown keys \['node_count'\]"):
        Cluster.from_env({ENV: json.dumps({"image": "r/t:1", "node_count": 2})})
    with pytest.raises(ValueError, match=r"BERT_KFP_CLUSTER: gpu.nodes: must be a positive integer, got 0"):
        Cluster.from_env({ENV: json.dumps({"image": "r/t:1", "gpu": {**GPU, "nodes": 0}})})


def test_node0_pod_selector_names_the_jobset_the_node_job_and_index_0() -> None:
    assert J.node0_selector("bert-train-1") == (
        "jobset.sigs.k8s.io/jobset-name=bert-train-1,jobset.sigs.k8s.io/replicatedjob-name=node,"
        "batch.kubernetes.io/job-completion-index=0"
    )


def test_log_chunks_become_lines() -> None:
    lines, rest = J.split_lines(b"", b"step 1 loss 0.9\nstep 2 lo")
    assert (lines, rest) == (["step 1 loss 0.9"], b"step 2 lo")
    lines, rest = J.split_lines(rest, b"ss 0.8\r\n\xff\n")
    assert (lines, rest) == (["step 2 loss 0.8", "\ufffd"], b"")


def test_job_names_are_short_and_unique_and_the_run_key_is_stable() -> None:
    a, b = J.job_name("run-8a7c"), J.job_name("run-8a7c")
    assert a != b and a[:19] == b[:19] and len(a + "-node-0-0") <= 63
    assert J.run_key("7f3e/2024 run", "x") == "7f3e-2024-run"
    assert J.run_key("", "bert-train-1") == "bert-train-1"


def test_collect_copies_the_model_and_report_or_says_what_is_missing(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "run"
    with pytest.raises(J.TrainJobError, match=r"left no .*run/model and no .*training_report.json"):
        J.collect(shared, str(tmp_path / "out" / "model"), str(tmp_path / "out" / "report.json"))
    (shared / "model").mkdir(parents=True)
    (shared / "model" / "config.json").write_text("{}")
    (shared / "training_report.json").write_text('{"metrics": {"eval_accuracy": 0.7}}')
    J.collect(shared, str(tmp_path / "out" / "model"), str(tmp_path / "out" / "report.json"))
    assert (tmp_path / "out" / "model" / "config.json").read_text() == "{}"
    assert cli.metric_items(str(tmp_path / "out" / "report.json")) == [("eval_accuracy", 0.7)]


def test_multi_node_outside_a_cluster_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-node placement in the environment sends the step to the cluster's API; without one it says so
    before anything is trained."""
    monkeypatch.setenv(ENV, placement().to_env())
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    values = {
        "features": str(tmp_path / "f.parquet"),
        "output_dir": str(tmp_path / "o"),
        "model_dir": "m",
        "report": "r",
    }
    with pytest.raises(ValueError, match=r"needs the Kubernetes API of the cluster it runs in, but is not in a pod"):
        cli.run_component(values, keep_checkpoints=False)
