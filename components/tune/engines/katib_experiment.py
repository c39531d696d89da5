"""The ``katib`` engine: a search spec as a ``kubeflow.org/v1beta1`` Experiment, run on a cluster with Katib.

`render_experiment` writes the Experiment: the spec's objective, algorithm, early stopping and parameters
(`components.tune.engines.katib`), the budget, and a trial template (`katib_trial`) whose trial is a batch/v1
Job — or, on a multi-node profile, a Kubeflow Trainer TrainJob — running the training CLI
(``python -m components.train``) on the training image with the fixed training options and one
``--<option> ${trialParameters.<name>}`` per searched parameter; Katib's StdOut metrics collector reads the
CLI's metric lines (`components.common.trial_metrics.KATIB_FILTER`).  The result is checked against Katib's
own models (``kubeflow-katib-api``): a field they do not know or a value of the wrong type is a `ValueError`
naming the field.

`run_katib` creates the Experiment with the ``kubernetes`` client, waits for ``Succeeded`` or ``Failed`` and
reads ``status.currentOptimalTrial`` into a `KatibResult` (parameters typed by the Experiment's parameter
types); it deletes the Experiment afterwards when asked, also after a failure or a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from components.common import kube
from components.common import trainjob as T
from components.common.cluster import Cluster, GpuPlacement, parse
from components.tune import spec as S
from components.tune.engines import katib, katib_trial

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1beta1", "experiments", "Experiment"
#: The trial Job's container, and its end in Katib's GJSON syntax (`katib_trial` builds the trial template).

#: The label Katib puts on an Experiment's Trials.
TRIAL_EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"

Json = dict[str, Any]


class KatibError(RuntimeError):
    """A Katib Experiment that failed or did not finish in time."""


#: Where Experiments live on the API server (tests point a copy at a resource that is not installed).
EXPERIMENTS = kube.CustomResource(GROUP, VERSION, PLURAL)


@dataclass(frozen=True)
class KatibResult:
    """The optimal trial of a finished Experiment."""

    experiment: str
    best_trial: str
    params: dict[str, Any]
    value: float
    metrics: dict[str, float] = field(default_factory=dict)
    #: The Experiment's Trial objects (``kubeflow.org/v1beta1``), as read when it ended.
    trials: tuple[Json, ...] = ()
    #: The reason of its ``Succeeded`` condition (``ExperimentMaxTrialsReached``, ``ExperimentGoalReached``…).
    reason: str = ""


def _number_text(value: float) -> str:
    return f"{value:g}"


def parameter_spec(parameter: S.Parameter) -> Json:
    """One Experiment parameter: Katib's type and a feasible space of strings."""
    if parameter.choices:
        space: Json = {"list": [str(c) for c in parameter.choices]}
    else:
        assert parameter.low is not None and parameter.high is not None  # (validated)
        space = {"min": _number_text(parameter.low), "max": _number_text(parameter.high)}
        if parameter.type == "int":
            space = {k: str(int(float(v))) for k, v in space.items()}
        if parameter.step is not None:
            space["step"] = str(int(parameter.step)) if parameter.type == "int" else _number_text(parameter.step)
        if parameter.log:
            space["distribution"] = "logUniform"
    return {"name": parameter.name, "parameterType": parameter.type, "feasibleSpace": space}


def render_experiment(
    spec: S.SearchSpec,
    *,
    name: str,
    namespace: str,
    image: str,
    training_args: Mapping[str, Any],
    gpu: GpuPlacement | Mapping[str, Any] | None,
    cluster: Cluster | None = None,
) -> Json:
    """The Experiment that runs ``spec`` with Katib, validated with ``kubeflow-katib-api``.

    Args:
        spec: The search (validated here).
        name: The Experiment's name (also the prefix of its trials' names).
        namespace: Where it runs.
        image: The training image; its trials run ``python -m components.train``.
        training_args: Training options every trial gets as they are (the spec's ``trialOptions`` too).
        gpu: A GPU placement (a profile's ``gpu`` entry: ``accelerator_type``, ``accelerator_count``,
            ``node_selector``, ``tolerations``, …, as a mapping or the model), or None for none.
        cluster: The profile's cluster entries (the pod's `components.common.cluster.ENV`): the trials get its
            feature store and MLflow environment and volumes; with more than one node each trial is a Kubeflow
            Trainer TrainJob (`katib_trial`). None: a Job with ``gpu`` only.

    Raises:
        ValueError: A bad spec, option or GPU placement, or a field Katib's models refuse (named).
    """
    spec.validate()
    if not image or image.endswith(":latest"):
        raise ValueError(f"image: a pinned training image is needed, got {image!r}")
    if gpu is not None and not isinstance(gpu, GpuPlacement):
        gpu = parse(Cluster, {"gpu": gpu}).gpu
    template = katib_trial.trial_template(spec, image=image, training_args=training_args, gpu=gpu, cluster=cluster)
    body: Json = {
        "objective": katib.objective_spec(spec),
        "algorithm": katib.algorithm_spec(spec),
        "parameters": [parameter_spec(p) for p in spec.parameters],
        "maxTrialCount": spec.max_trial_count,
        "parallelTrialCount": spec.parallel_trial_count,
        "maxFailedTrialCount": spec.max_failed_trial_count,
        "metricsCollectorSpec": katib.metrics_collector_spec(),
        "trialTemplate": template,
    }
    early = katib.early_stopping_spec(spec)
    if early is not None:
        body["earlyStopping"] = early
    experiment = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }
    validate_experiment(experiment)
    return experiment


def validate_experiment(experiment: Mapping[str, Any]) -> None:
    """Check ``experiment`` with Katib's models: types, and no field they do not know.

    Raises:
        ValueError: Naming the first refused field (``spec.parameters.0.feasibleSpace.min: …``).
    """
    import pydantic
    from kubeflow_katib_api.models import V1beta1Experiment

    try:
        model = V1beta1Experiment.model_validate(dict(experiment))
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"Katib Experiment: {where}: {first['msg']} (got {first.get('input')!r})") from None
    assert model is not None
    unknown = kube.dropped_fields(dict(experiment), model.to_dict())
    if unknown:
        raise ValueError(f"Katib Experiment: unknown field {unknown[0]} (Katib's models do not have it)")
    metadata = experiment.get("metadata") or {}
    if not metadata.get("name"):
        raise ValueError("Katib Experiment: metadata.name is needed")


# --- running it -----------------------------------------------------------------------------------------------


def typed_value(parameter: Json, text: str) -> Any:
    """A parameter assignment (Katib writes strings) as the parameter's type."""
    kind = parameter.get("parameterType")
    if kind == "int":
        return int(float(text))
    if kind == "double":
        return float(text)
    if kind == "discrete":
        number = float(text)
        return int(number) if all(float(c) == int(float(c)) for c in parameter["feasibleSpace"]["list"]) else number
    return text


def optimal_trial(experiment: Json) -> KatibResult:
    """The Experiment's ``status.currentOptimalTrial`` as a result.

    Raises:
        KatibError: No optimal trial, or it lacks the objective metric.
    """
    name = experiment["metadata"]["name"]
    spec = experiment["spec"]
    best = (experiment.get("status") or {}).get("currentOptimalTrial") or {}
    if not best.get("bestTrialName"):
        raise KatibError(f"Katib Experiment {name} succeeded without an optimal trial (no trial reported metrics)")
    by_name = {p["name"]: p for p in spec["parameters"]}
    params = {
        a["name"]: typed_value(by_name.get(a["name"], {}), a["value"]) for a in best.get("parameterAssignments") or []
    }
    maximize = spec["objective"]["type"] == "maximize"
    metrics: dict[str, float] = {}
    for metric in (best.get("observation") or {}).get("metrics") or []:
        text = metric.get("max" if maximize else "min") or metric.get("latest")
        if metric.get("name") and text is not None:
            metrics[metric["name"]] = float(text)
    objective = spec["objective"]["objectiveMetricName"]
    if objective not in metrics:
        raise KatibError(f"Katib Experiment {name}: the optimal trial {best['bestTrialName']} has no {objective}")
    return KatibResult(name, best["bestTrialName"], params, metrics[objective], metrics)


def list_trials(
    api_client: Any, namespace: str, name: str, resource: kube.CustomResource = EXPERIMENTS
) -> tuple[Json, ...]:
    """The Trials of Experiment ``name`` (label ``katib.kubeflow.org/experiment``), oldest first; () when the
    service account may not list them (the optimal trial is still known)."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    try:
        listed = CustomObjectsApi(api_client).list_namespaced_custom_object(
            resource.group, resource.version, namespace, "trials", label_selector=f"{TRIAL_EXPERIMENT_LABEL}={name}"
        )
    except ApiException as error:
        if error.status in (403, 404):
            return ()
        raise
    items = listed.get("items") or []
    return tuple(sorted(items, key=lambda t: (t["metadata"].get("creationTimestamp", ""), t["metadata"]["name"])))


def _not_installed(resource: kube.CustomResource) -> ValueError:
    return ValueError(
        f"Katib is not installed: the CRD {resource.crd_name} is missing on this cluster; install Katib "
        "(kubeflow/katib manifests) or use the optuna engine"
    )


#: Katib's trial conditions (kubeflow/katib v0.19.0 pkg/apis/controller/trials/v1beta1/trial_types.go) → the
#: study's trial state (`components.tune.results.STATES`).
TRIAL_STATES = {
    "Created": "WAITING",
    "Running": "RUNNING",
    "Succeeded": "COMPLETE",
    "EarlyStopped": "PRUNED",
    "Failed": "FAIL",
    "MetricsUnavailable": "FAIL",
    "Killed": "FAIL",
}
#: Trial conditions after which Katib's trial controller is done with a trial.
_TRIAL_DONE = tuple(condition for condition, state in TRIAL_STATES.items() if state not in ("WAITING", "RUNNING"))
#: How long a trial's TrainJob may have ended before its Trial does, before Katib is taken not to watch TrainJobs.
TRAINJOB_UNSEEN_S = 120.0


def _ended_trainjobs(api_client: Any, namespace: str, trials: tuple[Json, ...]) -> dict[str, str]:
    """{trial: the TrainJob's final condition} for trials Katib still runs whose TrainJob (named after the trial:
    Katib's trial_controller.go) has ended ("Complete"/"Failed", kubeflow/trainer v2.3.0 trainjob_types.go)."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    custom, ended = CustomObjectsApi(api_client), {}
    for trial in trials:
        name = trial["metadata"]["name"]
        if any(kube.true_condition(trial, done) for done in _TRIAL_DONE):
            continue
        try:
            job = custom.get_namespaced_custom_object(T.GROUP, T.VERSION, namespace, T.PLURAL, name)
        except ApiException as error:
            if error.status in (403, 404):
                continue
            raise
        final = kube.true_condition(job, kube.COMPLETE) or kube.true_condition(job, kube.FAILED)
        if final:
            ended[name] = str(final["type"])
    return ended


def run_katib(
    api_client: Any,
    experiment: Json,
    *,
    namespace: str,
    timeout_s: float,
    poll_s: float,
    cleanup: bool,
    resource: kube.CustomResource = EXPERIMENTS,
    trainjob_unseen_s: float = TRAINJOB_UNSEEN_S,
) -> KatibResult:
    """Create ``experiment``, wait until it succeeds or fails, and return its optimal trial.

    Args:
        api_client: A ``kubernetes.client.ApiClient``.
        experiment: What `render_experiment` returned.
        namespace: Where to create it.
        timeout_s: How long to wait for the end.
        poll_s: Seconds between two reads of its status.
        cleanup: Delete the Experiment (and so its trials) afterwards, whatever the outcome.
        resource: Where Experiments live (Katib's by default).
        trainjob_unseen_s: With TrainJob trials: how long a trial's TrainJob may have ended while Katib still
            runs the trial before that is taken as Katib not watching TrainJobs (its ``trialResources``).

    Raises:
        ValueError: Katib is not installed (the Experiment CRD is missing).
        KatibError: The Experiment failed, has no optimal trial, or did not finish within ``timeout_s``; or
            Katib does not watch TrainJobs (the fix named).
    """
    from kubernetes.client import CustomObjectsApi

    custom = CustomObjectsApi(api_client)
    name = experiment["metadata"]["name"]
    args = resource.args(namespace)
    kube.create_custom_object(api_client, resource, namespace, experiment, _not_installed(resource))
    trainjobs = ((experiment["spec"].get("trialTemplate") or {}).get("trialSpec") or {}).get("kind") == T.KIND
    unseen: dict[str, float] = {}  # trial -> when its ended TrainJob was first seen
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if trainjobs:
                ended = _ended_trainjobs(api_client, namespace, list_trials(api_client, namespace, name, resource))
                unseen = {trial: unseen.get(trial, time.monotonic()) for trial in ended}
                late = [t for t, since in unseen.items() if time.monotonic() - since >= trainjob_unseen_s]
                if late:
                    raise KatibError(
                        f"Katib Experiment {namespace}/{name}: the TrainJob of trial {late[0]} ended "
                        f"({ended[late[0]]}) but Katib still runs the trial after {trainjob_unseen_s:g} s: Katib's "
                        "controller does not watch TrainJobs. Fix: add TrainJob.v1alpha1.trainer.kubeflow.org to "
                        "init.controller.trialResources in Katib's katib-config ConfigMap and restart katib-controller "
                        "(Katib's standalone and cert-manager installs list it, the others do not), or tune on one node"
                    )
            current = custom.get_namespaced_custom_object(*args, name)
            succeeded = kube.true_condition(current, "Succeeded")
            if succeeded:
                trials = list_trials(api_client, namespace, name, resource)
                return replace(optimal_trial(current), trials=trials, reason=str(succeeded.get("reason", "")))
            failed = kube.true_condition(current, "Failed")
            if failed:
                raise KatibError(
                    f"Katib Experiment {namespace}/{name} failed: {failed.get('reason', '')} "
                    f"{failed.get('message', '')}".rstrip()
                )
            if time.monotonic() >= deadline:
                raise KatibError(
                    f"Katib Experiment {namespace}/{name} did not finish within {timeout_s:g} s "
                    f"({(current.get('status') or {}).get('trialsSucceeded', 0)} trials succeeded so far)"
                )
            time.sleep(poll_s)
    finally:
        if cleanup:
            kube.delete_custom_object(custom, args, name)
