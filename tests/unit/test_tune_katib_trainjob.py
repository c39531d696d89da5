"""The katib engine as the tune step runs it: the engine comes from the profile's placement; the trial template is
a TrainJob on a multi-node profile and a Job with the feature store and MLflow on one node; Katib's Trials become
the engine-neutral study result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.common import trainjob as T
from components.common.cluster import ENV, Cluster
from components.tune import core
from components.tune import spec as S
from components.tune.engines import katib_engine as E
from components.tune.engines import katib_experiment as K
from components.tune.engines import katib_trial

SPEC = S.SearchSpec(
    parameters=(
        S.Parameter("learning_rate", "double", 1e-5, 5e-5, log=True),
        S.Parameter("per_device_train_batch_size", "discrete", choices=(16, 32)),
    ),
    algorithm="tpe",
    max_trial_count=4,
    parallel_trial_count=2,
    trial_options={"max_steps": 40},
)
GPU = {
    "accelerator_type": "nvidia.com/gpu",
    "accelerator_count": 8,
    "node_selector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


def placement(nodes: int = 2, **overrides: Any) -> Cluster:
    settings: dict[str, Any] = {
        "image": "registry.example/bert-kfp/train:1.2.0-abc1234",
        "gpu": {**GPU, "nodes": nodes},
        "feast": {
            "pvc": "feast-store",
            "mount_path": "/mnt/feast",
            "config_map": "feast-config",
            "config_keys": ["FEAST_REGISTRY_PATH"],
        },
        "mlflow": {"tracking_uri": "http://mlflow:5000"},
        "trainjob": {"shared_pvc": "bert-shared"} if nodes > 1 else None,
        "tuning": {"engine": "katib"},
    }
    return Cluster.model_validate(settings | overrides)


def render(nodes: int) -> dict[str, Any]:
    p = placement(nodes)
    args = {"feature_store": "/mnt/feast/store", "mlflow_child_run": katib_trial.TRIAL_NAME_REF}
    return K.render_experiment(
        SPEC,
        name="bert-tune",
        namespace="team",
        image=p.image,
        training_args=args,
        gpu=p.gpu,
        cluster=p,
    )


def test_multi_node_trials_are_trainjobs_katib_can_follow() -> None:
    template = render(2)["spec"]["trialTemplate"]
    assert template["primaryContainerName"] == "node"
    assert template["primaryPodLabels"] == {
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "batch.kubernetes.io/job-completion-index": "0",
    }
    assert template["successCondition"] == 'status.conditions.#(type=="Complete")#|#(status=="True")#'
    assert template["failureCondition"] == 'status.conditions.#(type=="Failed")#|#(status=="True")#'
    job = template["trialSpec"]
    T.validate_trainjob(job)
    assert (job["kind"], "metadata" in job) == ("TrainJob", False)  # Katib names and places each trial
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
    command = trainer["command"]
    assert command[:5] == ["python", "-m", "torch.distributed.run", "-m", "components.train"]
    flags = dict(zip(command[5::2], command[6::2], strict=True))
    assert flags["--learning-rate"] == "${trialParameters.learning_rate}"
    assert flags["--per-device-train-batch-size"] == "${trialParameters.per_device_train_batch_size}"
    assert flags["--output-dir"] == "/mnt/shared/katib/${trialParameters.trialName}"  # shared by the trial's nodes
    assert flags["--mlflow-child-run"] == "${trialParameters.trialName}"
    names = {p["name"]: p["reference"] for p in template["trialParameters"]}
    assert names == {
        "learning_rate": "learning_rate",
        "per_device_train_batch_size": "per_device_train_batch_size",
        "trialName": "${trialSpec.Name}",
    }


def test_one_node_trials_are_jobs_with_the_feature_store_and_mlflow() -> None:
    template = render(1)["spec"]["trialTemplate"]
    assert template["primaryContainerName"] == "training" and "primaryPodLabels" not in template
    pod = template["trialSpec"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {"feast-store": "/mnt/feast"}
    assert pod["volumes"] == [{"name": "feast-store", "persistentVolumeClaim": {"claimName": "feast-store"}}]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    assert env["FEAST_REGISTRY_PATH"]["valueFrom"]["configMapKeyRef"]["name"] == "feast-config"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def _trial(name: str, lr: str, batch: str, condition: str, accuracy: str | None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "startTime": "2026-11-30T10:00:00Z",
        "completionTime": "2026-11-30T10:05:30Z",
        "conditions": [
            {"type": "Created", "status": "True"},
            {"type": "Running", "status": "False"},
            {"type": condition, "status": "True", "message": "exit code 1" if condition == "Failed" else ""},
        ],
    }
    if accuracy is not None:
        status["observation"] = {"metrics": [{"name": "validation-accuracy", "max": accuracy, "latest": "0.1"}]}
    return {
        "metadata": {"name": name},
        "spec": {
            "parameterAssignments": [
                {"name": "learning_rate", "value": lr},
                {"name": "per_device_train_batch_size", "value": batch},
            ]
        },
        "status": status,
    }


def test_katib_trials_become_the_study_result() -> None:
    experiment = render(2)
    trials = (
        _trial("bert-tune-a", "1e-05", "16", "Succeeded", "0.62"),
        _trial("bert-tune-b", "3e-05", "32", "Succeeded", "0.71"),
        _trial("bert-tune-c", "5e-05", "16", "EarlyStopped", "0.40"),
        _trial("bert-tune-d", "2e-05", "32", "Failed", None),
    )
    best = K.KatibResult(
        "bert-tune",
        "bert-tune-b",
        {"learning_rate": 3e-05, "per_device_train_batch_size": 32},
        0.71,
        trials=trials,
        reason="ExperimentMaxTrialsReached",
    )
    result = E.study_result(best, experiment, "team", 321.0)
    assert [(t.key, t.state, t.value) for t in result.trials] == [
        ("bert-tune-a", "COMPLETE", 0.62),
        ("bert-tune-b", "COMPLETE", 0.71),
        ("bert-tune-c", "PRUNED", 0.40),
        ("bert-tune-d", "FAIL", None),
    ]
    assert result.trials[0].params == {"learning_rate": 1e-05, "per_device_train_batch_size": 16}
    assert type(result.trials[0].params["per_device_train_batch_size"]) is int
    assert result.trials[0].seconds == 330.0 and result.trials[3].error == "exit code 1"
    assert (result.engine, result.best_trial, result.best_value) == ("katib", 1, 0.71)
    assert (result.algorithm, result.metric, result.direction) == ("tpe", "validation-accuracy", "maximize")
    assert result.stop_reason == "ExperimentMaxTrialsReached"
    assert result.counts() == {"complete": 2, "pruned": 1, "fail": 1, "retried": 0}
    outcome = core.outcome_of(SPEC, result)
    assert outcome.best_params == {"learning_rate": 3e-05, "per_device_train_batch_size": 32}
    assert outcome.report["engine"] == "katib" and len(outcome.report["trials"]) == 4


def test_the_profile_chooses_katib_and_outside_a_cluster_that_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the katib engine in the pod's placement the step goes to the cluster's API (not to Optuna), after
    checking the spec; outside a pod that is one clear error before any trial."""
    features = tmp_path / "features.parquet"
    features.write_bytes(b"")
    monkeypatch.setenv(ENV, placement(1).to_env())
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = core.TuneConfig(tuning_trials=2, mlflow=False)
    with pytest.raises(ValueError, match=r"needs the Kubernetes API of the cluster it runs in"):
        core.tune(config, {"features": str(features)}, tmp_path / "out")
    assert not (tmp_path / "out" / "study.db").exists()  # no Optuna study was started
    bad = core.TuneConfig(tuning_trials=2, mlflow=False, tuning_spec="algorithm: {algorithmName: hyperopt}")
    with pytest.raises(ValueError, match=r"hyperopt"):  # the spec is checked first, whatever the engine
        core.tune(bad, {"features": str(features)}, tmp_path / "out")
