"""Profiles' cluster facts for multi-node training and tuning: ``gpu.nodes``, ``trainjob``, ``tuning``; what the
compiled tune and train tasks get from them (the placement variable, GPU or not, the shared PVC)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.common.cluster import ENV, Cluster
from pipelines.compile import compile_pipeline
from pipelines.profiles import DEFAULT_FILE, cluster, load_profiles

MULTI = """
multi:
  gpu:
    accelerator_type: nvidia.com/gpu
    accelerator_count: 4
    nodes: 2
    node_selector: {nvidia.com/gpu.present: "true"}
    tolerations:
      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
    shm_size: 8Gi
  trainjob:
    shared_pvc: bert-shared
    timeout_seconds: 7200
  tuning:
    engine: katib
    namespace: tuning
    cleanup: false
  feast:
    pvc: feast-store
    config_map: feast-config
  mlflow:
    tracking_uri: http://mlflow.team.svc.cluster.local:5000
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    return path


def _executors(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0]["deploymentSpec"]["executors"], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _placement(container: dict[str, Any]) -> Cluster:
    (value,) = [e["value"] for e in container.get("env", []) if e["name"] == ENV]
    placement = Cluster.from_env({ENV: value})
    assert placement is not None
    return placement


def test_shipped_profiles_train_on_one_node_and_tune_with_optuna() -> None:
    for profile in load_profiles(DEFAULT_FILE).values():
        assert profile.nodes == 1 and profile.trainjob is None
        assert profile.tuning.engine == "optuna"


def test_multi_node_profile_is_read_whole(tmp_path: Path) -> None:
    profile = load_profiles(_file(tmp_path, MULTI))["multi"]
    assert profile.nodes == 2
    assert profile.trainjob is not None and profile.trainjob.shared_pvc == "bert-shared"
    assert (profile.trainjob.mount_path, profile.trainjob.runtime) == ("/mnt/shared", "torch-distributed")
    assert (profile.tuning.engine, profile.tuning.namespace, profile.tuning.cleanup) == ("katib", "tuning", False)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace("  trainjob:\n    shared_pvc: bert-shared\n    timeout_seconds: 7200\n", ""),
            r"asks for gpu.nodes 2 but has no 'trainjob' entry",
        ),
        (lambda t: t.replace("nodes: 2", "nodes: 0"), r"bad 'gpu.nodes' entry: must be a positive integer, got 0"),
        (lambda t: t.replace("engine: katib", "engine: hyperopt"), r"bad 'tuning.engine' entry: 'hyperopt'; valid"),
        (lambda t: t.replace("shared_pvc: bert-shared", "pvc: bert-shared"), r"bad 'trainjob' entry: .*'pvc'"),
        (
            lambda t: t.replace("accelerator_type: nvidia.com/gpu", "accelerator_type: ''"),
            r"bad 'gpu.accelerator_type' entry: the GPU resource name is needed",
        ),
        (lambda t: t.replace("timeout_seconds: 7200", "timeout_seconds: 2h"), r"'trainjob.timeout_seconds' entry"),
    ],
)
def test_bad_cluster_entries_name_profile_and_key(tmp_path: Path, edit: Any, message: str) -> None:
    with pytest.raises(ValueError, match=rf"Profile 'multi' in .*{message}"):
        load_profiles(_file(tmp_path, edit(MULTI)))


def test_multi_node_train_task_launches_a_trainjob_without_a_gpu_of_its_own(tmp_path: Path) -> None:
    path = compile_pipeline(tmp_path / "p.yaml", profile="multi", profiles_file=_file(tmp_path, MULTI))
    executors, platform = _executors(path)
    train = executors["exec-train-classifier"]["container"]
    assert "accelerator" not in train.get("resources", {})
    assert not {"nodeSelector", "tolerations", "emptyDirMounts"} & set(platform["exec-train-classifier"])
    mounts = {m["constant"]: m["mountPath"] for m in platform["exec-train-classifier"]["pvcMount"]}
    assert mounts == {"feast-store": "/mnt/feast", "bert-shared": "/mnt/shared"}
    placement = _placement(train)
    assert placement.image == train["image"]  # the TrainJob runs the image the task was compiled with
    # the pod reads back the very model the profile was read into: the same entries, the same defaults
    profile = load_profiles(_file(tmp_path, MULTI))["multi"]
    assert placement == cluster(profile, train["image"])
    assert (placement.gpu, placement.trainjob, placement.tuning) == (profile.gpu, profile.trainjob, profile.tuning)
    assert placement.trainjob is not None and placement.nodes == 2
    assert (placement.trainjob.shared_pvc, placement.trainjob.timeout_seconds) == ("bert-shared", 7200)
    assert placement.gpu is not None and placement.gpu.accelerator_count == 4
    assert placement.gpu.tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    assert placement.feast is not None and placement.feast.config_map == "feast-config"
    assert placement.mlflow is not None and placement.mlflow.tracking_uri.startswith("http://mlflow.team")
    # the tune task runs Katib: it only launches too, and reads the engine's settings from the same variable
    tune = executors["exec-tune-hyperparameters"]["container"]
    assert "accelerator" not in tune.get("resources", {})
    assert "bert-shared" not in {m["constant"] for m in platform["exec-tune-hyperparameters"]["pvcMount"]}
    tuning = _placement(tune)
    assert (tuning.tuning.engine, tuning.tuning.namespace, tuning.tuning.cleanup) == ("katib", "tuning", False)


def test_one_node_profile_keeps_the_gpu_on_the_task_and_says_so_in_its_placement(tmp_path: Path) -> None:
    path = compile_pipeline(tmp_path / "p.yaml", profile="onprem")
    executors, platform = _executors(path)
    for name in ("exec-train-classifier", "exec-tune-hyperparameters"):
        container = executors[name]["container"]
        assert container["resources"]["accelerator"]["resourceCount"] == "1"
        assert "nodeSelector" in platform[name]
        placement = _placement(container)
        assert (placement.nodes, placement.tuning.engine) == (1, "optuna")
    assert ENV not in json.dumps(executors["exec-evaluate-classifier"])
