"""The katib engine with TrainJob trials against the real API server (Katib and Kubeflow Trainer CRDs): the
Experiment is kept whole, the TrainJob Katib would create from its trial template (placeholders filled in) is
accepted by the Trainer CRD unpruned, and the tune step's engine runs it end to end while the test plays Katib
(Trials with their observations, then the Experiment's success) — the Trials become the study's trials."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from components.common import trainjob as T
from components.common.cluster import Cluster
from components.tune import spec as S
from components.tune.engines import katib_engine as E
from components.tune.engines import katib_experiment as K

from .controllers import (
    EXPERIMENT,
    OptimalTrial,
    Resource,
    get,
    once_created,
    patch_status,
    pruned_paths,
    succeed_experiment,
)

Json = dict[str, Any]
pytestmark = pytest.mark.usefixtures("k8s_crds")
TRIAL = Resource("kubeflow.org", "v1beta1", "trials", "Trial")
TRAINJOB = Resource(T.GROUP, T.VERSION, T.PLURAL, T.KIND)
SPEC = S.SearchSpec(
    parameters=(S.Parameter("learning_rate", "double", 1e-5, 5e-5, log=True),),
    algorithm="random",
    max_trial_count=2,
    parallel_trial_count=1,
    trial_options={"max_steps": 40},
)
PLACEMENT = Cluster.model_validate(
    {
        "image": "registry.example/bert-kfp/train:1.2.0-abc1234",
        "gpu": {"accelerator_type": "nvidia.com/gpu", "accelerator_count": 4, "shm_size": "8Gi", "nodes": 2},
        "feast": {"pvc": "feast-store", "mount_path": "/mnt/feast", "config_map": "feast-config", "config_keys": ["A"]},
        "trainjob": {"shared_pvc": "bert-shared"},
        "tuning": {"engine": "katib", "timeout_seconds": 30},
    }
)


def _experiment(name: str, namespace: str) -> Json:
    args = {"feature_store": "/mnt/feast/store", "mlflow": False}
    return K.render_experiment(
        SPEC,
        name=name,
        namespace=namespace,
        image=PLACEMENT.image,
        training_args=args,
        gpu=PLACEMENT.gpu,
        cluster=PLACEMENT,
    )


def test_trainjob_trial_experiment_is_kept_and_its_trials_are_valid_trainjobs(
    k8s_api: ApiClient, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    sent = _experiment("tune-tj", ns)
    custom = CustomObjectsApi(k8s_api)
    custom.create_namespaced_custom_object(EXPERIMENT.group, EXPERIMENT.version, ns, EXPERIMENT.plural, sent)
    stored = get(k8s_api, EXPERIMENT, ns, "tune-tj")
    assert pruned_paths(sent, stored) == [] and stored["spec"] == sent["spec"]
    K.validate_experiment(stored)
    # What Katib creates for a trial: the template with ${trialParameters.*} filled in, named after the trial
    template = json.dumps(stored["spec"]["trialTemplate"]["trialSpec"])
    filled = template.replace("${trialParameters.learning_rate}", "2.5e-05").replace(
        "${trialParameters.trialName}", "tune-tj-abc12"
    )
    trial_job = json.loads(filled) | {"metadata": {"name": "tune-tj-abc12", "namespace": ns}}
    T.validate_trainjob(trial_job)
    custom.create_namespaced_custom_object(T.GROUP, T.VERSION, ns, T.PLURAL, trial_job)
    kept = get(k8s_api, TRAINJOB, ns, "tune-tj-abc12")
    assert pruned_paths(trial_job, kept) == []
    command = kept["spec"]["trainer"]["command"]
    assert command[command.index("--learning-rate") + 1] == "2.5e-05"
    assert command[command.index("--output-dir") + 1] == "/mnt/shared/katib/tune-tj-abc12"


def _trial(api: ApiClient, namespace: str, experiment: str, name: str, lr: str, accuracy: str) -> None:
    body = {
        "apiVersion": TRIAL.api_version,
        "kind": TRIAL.kind,
        "metadata": {"name": name, "labels": {K.TRIAL_EXPERIMENT_LABEL: experiment}},
        "spec": {"parameterAssignments": [{"name": "learning_rate", "value": lr}]},
    }
    CustomObjectsApi(api).create_namespaced_custom_object(TRIAL.group, TRIAL.version, namespace, TRIAL.plural, body)
    patch_status(
        api,
        TRIAL,
        namespace,
        name,
        {
            "startTime": "2026-11-30T10:00:00Z",
            "completionTime": "2026-11-30T10:02:00Z",
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "TrialSucceeded"}],
            "observation": {
                "metrics": [{"name": "validation-accuracy", "min": "0.3", "max": accuracy, "latest": accuracy}]
            },
        },
    )


def test_the_engine_runs_the_experiment_and_reads_its_trials(k8s_api: ApiClient, k8s_namespace: str) -> None:
    ns, name = k8s_namespace, "tune-run"

    def play_katib() -> None:
        _trial(k8s_api, ns, name, f"{name}-a", "1.2e-05", "0.64")
        _trial(k8s_api, ns, name, f"{name}-b", "3.1e-05", "0.7")
        _trial(k8s_api, ns, "another", "another-a", "4e-05", "0.9")  # another Experiment's trial
        best = OptimalTrial(f"{name}-b", {"learning_rate": "3.1e-05"}, {"validation-accuracy": 0.7})
        succeed_experiment(k8s_api, ns, name, optimal_trial=best)

    thread = once_created(k8s_api, EXPERIMENT, ns, name, play_katib)
    result = E.run(
        SPEC,
        {"feature_store": "/mnt/feast/store"},
        PLACEMENT,
        tracking_uri="",
        pipeline_run_id="run-1",
        api_client=k8s_api,
        namespace=ns,
        name=name,
        poll_s=0.1,
    )
    thread.join(5)
    assert result.engine == "katib" and result.study_name == name
    assert result.best_params == {"learning_rate": 3.1e-05} and result.best_value == pytest.approx(0.7)
    assert [(t.key, t.state, t.value) for t in result.trials] == [
        (f"{name}-a", "COMPLETE", 0.64),
        (f"{name}-b", "COMPLETE", 0.7),
    ]
    assert result.best_trial == 1 and result.stop_reason == "ExperimentMaxTrialsReached"
    with pytest.raises(ApiException) as gone:  # cleanup (the profile's default)
        get(k8s_api, EXPERIMENT, ns, name)
    assert gone.value.status == 404


def test_a_katib_that_does_not_watch_trainjobs_is_named_with_the_fix(k8s_api: ApiClient, k8s_namespace: str) -> None:
    """Finding 9: Katib's trial controller watches only the kinds in katib-config's trialResources
    (kubeflow/katib v0.19.0 pkg/controller.v1beta1/trial/trial_controller.go); TrainJob is listed by the
    standalone and cert-manager installs only.  Without it the trial's TrainJob runs and ends, and the Trial never
    does: the engine says so, with the fix, instead of waiting for the timeout."""
    ns, name = k8s_namespace, "tune-unwatched"
    experiment = _experiment(name, ns)
    trial = f"{name}-abc12"

    def play_katib_without_trainjobs() -> None:  # creates the trial and its TrainJob, never sees it end
        body = {
            "apiVersion": TRIAL.api_version,
            "kind": TRIAL.kind,
            "metadata": {"name": trial, "labels": {K.TRIAL_EXPERIMENT_LABEL: name}},
            "spec": {"parameterAssignments": [{"name": "learning_rate", "value": "2e-05"}]},
        }
        custom = CustomObjectsApi(k8s_api)
        custom.create_namespaced_custom_object(TRIAL.group, TRIAL.version, ns, TRIAL.plural, body)
        patch_status(k8s_api, TRIAL, ns, trial, {"conditions": [{"type": "Running", "status": "True"}]})
        job = json.loads(json.dumps(experiment["spec"]["trialTemplate"]["trialSpec"]))
        job["metadata"] = {"name": trial}
        custom.create_namespaced_custom_object(T.GROUP, T.VERSION, ns, T.PLURAL, job)
        complete = {"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "done"}
        patch_status(k8s_api, TRAINJOB, ns, trial, {"conditions": [complete | {"lastTransitionTime": _NOW}]})

    thread = once_created(k8s_api, EXPERIMENT, ns, name, play_katib_without_trainjobs)
    started = time.monotonic()
    with pytest.raises(K.KatibError) as error:
        K.run_katib(k8s_api, experiment, namespace=ns, timeout_s=60, poll_s=0.1, cleanup=True, trainjob_unseen_s=1)
    thread.join(5)
    assert time.monotonic() - started < 20
    message = str(error.value)
    assert f"the TrainJob of trial {trial} ended (Complete) but Katib still runs the trial" in message
    assert "add TrainJob.v1alpha1.trainer.kubeflow.org to init.controller.trialResources" in message


_NOW = "2026-11-30T10:02:00Z"
