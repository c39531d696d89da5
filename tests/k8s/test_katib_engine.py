"""The katib engine against the real API server: the rendered Experiment survives the server unpruned, and
`run_katib` creates it, waits while the test plays Katib's controller, reads the optimal trial and cleans up."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from components.tune import spec as S
from components.tune.engines import katib_experiment as K

from .controllers import (
    EXPERIMENT,
    OptimalTrial,
    fail_experiment,
    get,
    once_created,
    pruned_paths,
    succeed_experiment,
)

Json = dict[str, Any]
pytestmark = pytest.mark.usefixtures("k8s_crds")

SPEC = S.SearchSpec(
    parameters=(
        S.Parameter("learning_rate", "double", 1e-5, 5e-5, log=True),
        S.Parameter("per_device_train_batch_size", "discrete", choices=(16, 32)),
    ),
    algorithm="tpe",
    max_trial_count=4,
    parallel_trial_count=2,
    early_stopping=S.EarlyStopping(min_trials_required=2, start_step=2),
    trial_options={"max_steps": 40},
)
GPU = {
    "accelerator_type": "nvidia.com/gpu",
    "node_selector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "shm_size": "2Gi",
}


def _experiment(name: str, namespace: str) -> Json:
    return K.render_experiment(
        SPEC,
        name=name,
        namespace=namespace,
        image="registry.example/bert-train:1.2.0",
        training_args={},
        gpu=GPU,
    )


def _exists(api: ApiClient, namespace: str, name: str) -> bool:
    try:
        get(api, EXPERIMENT, namespace, name)
    except ApiException as error:
        assert error.status == 404
        return False
    return True


def test_rendered_experiment_is_kept_whole_by_the_server(k8s_api: ApiClient, k8s_namespace: str) -> None:
    sent = _experiment("render", k8s_namespace)
    res = EXPERIMENT
    created = CustomObjectsApi(k8s_api).create_namespaced_custom_object(
        res.group, res.version, k8s_namespace, res.plural, sent
    )
    stored = get(k8s_api, res, k8s_namespace, "render")
    assert pruned_paths(sent, stored) == []
    assert stored["spec"] == sent["spec"] == created["spec"]
    K.validate_experiment(stored)  # what the server keeps is still a valid Experiment for Katib's models


def test_succeeded_experiment_gives_the_optimal_trial_and_is_cleaned_up(k8s_api: ApiClient, k8s_namespace: str) -> None:
    ns, name = k8s_namespace, "tune-ok"
    best = OptimalTrial(
        "tune-ok-7x2k", {"learning_rate": 3e-05, "per_device_train_batch_size": 32}, {"validation-accuracy": 0.731}
    )
    thread = once_created(
        k8s_api, EXPERIMENT, ns, name, lambda: succeed_experiment(k8s_api, ns, name, optimal_trial=best)
    )
    result = K.run_katib(k8s_api, _experiment(name, ns), namespace=ns, timeout_s=30, poll_s=0.1, cleanup=True)
    thread.join(5)
    assert result.experiment == name and result.best_trial == "tune-ok-7x2k"
    assert result.params == {"learning_rate": 3e-05, "per_device_train_batch_size": 32}
    assert type(result.params["per_device_train_batch_size"]) is int
    assert result.value == pytest.approx(0.731)
    assert not _exists(k8s_api, ns, name)


def test_without_cleanup_the_experiment_stays(k8s_api: ApiClient, k8s_namespace: str) -> None:
    ns, name = k8s_namespace, "tune-kept"
    best = OptimalTrial(
        "tune-kept-1", {"learning_rate": 1e-05, "per_device_train_batch_size": 16}, {"validation-accuracy": 0.7}
    )
    thread = once_created(
        k8s_api, EXPERIMENT, ns, name, lambda: succeed_experiment(k8s_api, ns, name, optimal_trial=best)
    )
    result = K.run_katib(k8s_api, _experiment(name, ns), namespace=ns, timeout_s=30, poll_s=0.1, cleanup=False)
    thread.join(5)
    assert result.params["per_device_train_batch_size"] == 16
    assert _exists(k8s_api, ns, name)


def test_failed_experiment_is_a_clear_error(k8s_api: ApiClient, k8s_namespace: str) -> None:
    ns, name = k8s_namespace, "tune-failed"
    thread = once_created(
        k8s_api, EXPERIMENT, ns, name, lambda: fail_experiment(k8s_api, ns, name, message="maxFailedTrialCount reached")
    )
    with pytest.raises(K.KatibError, match=rf"Experiment {ns}/{name} failed: ExperimentFailed maxFailedTrialCount"):
        K.run_katib(k8s_api, _experiment(name, ns), namespace=ns, timeout_s=30, poll_s=0.1, cleanup=True)
    thread.join(5)
    assert not _exists(k8s_api, ns, name)


def test_timeout_is_a_clear_error_and_cleans_up(k8s_api: ApiClient, k8s_namespace: str) -> None:
    ns, name = k8s_namespace, "tune-slow"
    with pytest.raises(K.KatibError, match=rf"Experiment {ns}/{name} did not finish within 0.5 s"):
        K.run_katib(k8s_api, _experiment(name, ns), namespace=ns, timeout_s=0.5, poll_s=0.1, cleanup=True)
    assert not _exists(k8s_api, ns, name)


GRID = (
    S.Parameter("learning_rate", "double", 1e-5, 4e-5, step=1e-5),
    S.Parameter("per_device_train_batch_size", "discrete", choices=(16, 32)),
)
NUMERIC = (
    S.Parameter("learning_rate", "double", 1e-5, 5e-5),
    S.Parameter("per_device_train_batch_size", "int", 16, 32, step=16),
)


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"algorithm": "grid", "parameters": GRID, "max_trial_count": 8}, {"maxTrialCount": 9}),
        ({"algorithm": "cmaes", "parameters": NUMERIC}, {"parameters": [NUMERIC[0]]}),
    ],
)
def test_what_the_engine_renders_passes_katibs_suggestion_checks(
    k8s_api: ApiClient, k8s_namespace: str, changes: Json, refused: Json
) -> None:
    """Grid and CMA-ES specs the engine accepts run on (played) Katib; the same Experiment one step past Katib's
    rule is failed by Katib with only "Suggestion has failed" (why katib.check refuses it before creating)."""
    ns, spec = k8s_namespace, dataclasses.replace(SPEC, early_stopping=None, **changes)
    best = OptimalTrial(
        "t-1", {"learning_rate": 2e-05, "per_device_train_batch_size": 16}, {"validation-accuracy": 0.7}
    )
    for name, edit in (("accepted", {}), ("refused", refused)):
        experiment = K.render_experiment(spec, name=name, namespace=ns, image="i:1", training_args={}, gpu=None)
        if "parameters" in edit:
            experiment["spec"]["parameters"] = [
                p for p in experiment["spec"]["parameters"] if p["name"] == "learning_rate"
            ]
        experiment["spec"] |= {k: v for k, v in edit.items() if k != "parameters"}
        play = lambda n=name: succeed_experiment(k8s_api, ns, n, optimal_trial=best)  # noqa: E731
        thread = once_created(k8s_api, EXPERIMENT, ns, name, play)
        if not edit:
            assert K.run_katib(k8s_api, experiment, namespace=ns, timeout_s=30, poll_s=0.1, cleanup=True).best_trial
        else:
            with pytest.raises(K.KatibError, match="Suggestion has failed"):
                K.run_katib(k8s_api, experiment, namespace=ns, timeout_s=30, poll_s=0.1, cleanup=True)
        thread.join(5)
    with pytest.raises(S.SpecError, match="Katib"):  # refused before anything is created
        K.render_experiment(
            dataclasses.replace(
                spec, **{"max_trial_count": 9} if spec.algorithm == "grid" else {"parameters": NUMERIC[:1]}
            ),
            name="never",
            namespace=ns,
            image="i:1",
            training_args={},
            gpu=None,
        )


def test_missing_crd_is_a_clear_error(k8s_api: ApiClient, k8s_namespace: str) -> None:
    """An Experiment resource that is not installed on this server stands for a cluster without Katib (the
    real CRD stays, for the other tests)."""
    absent = dataclasses.replace(K.EXPERIMENTS, group="katib-absent.example.org")
    with pytest.raises(
        ValueError, match=r"Katib is not installed: the CRD experiments.katib-absent.example.org is missing"
    ):
        K.run_katib(
            k8s_api,
            _experiment("no-katib", k8s_namespace),
            namespace=k8s_namespace,
            timeout_s=5,
            poll_s=0.1,
            cleanup=True,
            resource=absent,
        )
