"""The ``katib`` engine as the tune step runs it: the spec as an Experiment on the cluster, its result as a study.

`run` renders the Experiment (`katib_experiment.render_experiment`; trials: a Job, or a TrainJob on a
multi-node profile) in the namespace of the profile or of the pod, with the pod's in-cluster client; waits for
it (`katib_experiment.run_katib`, the profile's timeout and cleanup); and turns its Trials and optimal trial
into the engine-neutral `results.StudyResult` the optuna engine also gives — so the step's ``best_params``,
``best_value``, report and summary ``tuning`` do not depend on the engine.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from components.common import kube
from components.common.cluster import Cluster
from components.tune import results as R
from components.tune import spec as S
from components.tune.engines import katib_experiment as K

log = logging.getLogger("components.tune")
Json = dict[str, Any]


def experiment_name(pipeline_run_id: str) -> str:
    """A short Experiment name (its trials' and their pods' names start with it), unique per attempt."""
    digest = hashlib.sha256((pipeline_run_id or secrets.token_hex(8)).encode()).hexdigest()[:8]
    return f"bert-tune-{digest}-{secrets.token_hex(2)}"


def _state(trial: Json) -> str:
    conditions = [c for c in (trial.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for condition in reversed(conditions):  # the newest condition that holds
        if condition.get("type") in K.TRIAL_STATES:
            return K.TRIAL_STATES[condition["type"]]
    return "WAITING"


def _seconds(trial: Json) -> float | None:
    import datetime

    status = trial.get("status") or {}
    start, end = status.get("startTime"), status.get("completionTime")
    if not (start and end):
        return None
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def trial_record(number: int, trial: Json, experiment: Json) -> R.TrialRecord:
    """One Katib Trial as a study's trial: parameters typed as the Experiment's, state, objective value."""
    spec = experiment["spec"]
    by_name = {p["name"]: p for p in spec["parameters"]}
    params = {
        a["name"]: K.typed_value(by_name.get(a["name"], {}), a["value"])
        for a in (trial.get("spec") or {}).get("parameterAssignments") or []
        if a.get("name") in by_name
    }
    objective = spec["objective"]["objectiveMetricName"]
    which = "max" if spec["objective"]["type"] == "maximize" else "min"
    value = None
    for metric in ((trial.get("status") or {}).get("observation") or {}).get("metrics") or []:
        text = metric.get(which) or metric.get("latest")
        if metric.get("name") == objective and text not in (None, "unavailable"):
            value = float(text)
    state = _state(trial)
    message = ""
    if state == "FAIL":
        failed = [c for c in (trial.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
        message = str(failed[-1].get("message", "")) if failed else ""
    name = trial["metadata"]["name"]
    return R.TrialRecord(number, state, params, value, seconds=_seconds(trial), key=name, error=message)


def study_result(result: K.KatibResult, experiment: Json, namespace: str, seconds: float) -> R.StudyResult:
    """The engine-neutral outcome of a finished Experiment."""
    spec = experiment["spec"]
    trials = [trial_record(i, t, experiment) for i, t in enumerate(result.trials)]
    best = next((t.number for t in trials if t.key == result.best_trial), None)
    return R.StudyResult(
        engine="katib",
        study_name=result.experiment,
        storage=f"Katib Experiment {namespace}/{result.experiment}",
        algorithm=spec["algorithm"]["algorithmName"],
        metric=spec["objective"]["objectiveMetricName"],
        direction=spec["objective"]["type"],
        trials=trials,
        best_params=dict(result.params),
        best_value=result.value,
        best_trial=best,
        stop_reason=result.reason or "Succeeded",
        seconds=seconds,
    )


def run(
    spec: S.SearchSpec,
    data: Mapping[str, Any],
    cluster: Cluster,
    *,
    tracking_uri: str,
    pipeline_run_id: str,
    api_client: Any = None,
    namespace: str = "",
    name: str = "",
    poll_s: float = 10.0,
) -> R.StudyResult:
    """Run ``spec`` as a Katib Experiment and return its outcome.

    Args:
        spec: The checked search (`core.load`).
        data: The training options every trial gets (where the splits are, the model, the seed).
        cluster: The profile's cluster entries: image, GPUs, nodes, feature store, MLflow, Katib settings.
        tracking_uri: MLflow tracking URI the trials log to (each trial a child run named after it); "": none.
        pipeline_run_id: The pipeline run whose MLflow run the trials' child runs belong to.
        api_client: Default: the pod's in-cluster client.
        namespace: Default: the profile's tuning namespace, else the pod's own.
        name: The Experiment's name (default: `experiment_name`).
        poll_s: Seconds between two reads of the Experiment's status.

    Raises:
        ValueError: Not in a pod, Katib not installed, a spec or profile Katib's models refuse.
        KatibError: The Experiment failed, timed out, or has no optimal trial.
    """
    from components.tune.engines import katib_trial

    api_client = api_client if api_client is not None else kube.in_cluster_client()
    namespace = kube.pod_namespace(namespace or cluster.tuning.namespace or "")
    name = name or experiment_name(pipeline_run_id)
    training_args: dict[str, Any] = {**data, "metric_for_best_model": spec.objective.training_metric}
    if tracking_uri:
        training_args |= {
            "mlflow_tracking_uri": tracking_uri,
            "mlflow_child_run": katib_trial.TRIAL_NAME_REF,
            "mlflow_log_model": False,  # a trial's metrics only, as in the local engine
        }
        if pipeline_run_id:
            training_args["pipeline_run_id"] = pipeline_run_id
    else:
        training_args["mlflow"] = False
    experiment = K.render_experiment(
        spec,
        name=name,
        namespace=namespace,
        image=cluster.image,
        training_args=training_args,
        gpu=cluster.gpu,
        cluster=cluster,
    )
    log.info(
        "Tuning with Katib: Experiment %s/%s, %s, %d trial(s) of %d node(s)",
        namespace,
        name,
        spec.algorithm,
        spec.max_trial_count,
        cluster.nodes,
    )
    started = time.monotonic()
    result = K.run_katib(
        api_client,
        experiment,
        namespace=namespace,
        timeout_s=cluster.tuning.timeout_seconds,
        poll_s=poll_s,
        cleanup=cluster.tuning.cleanup,
    )
    return study_result(result, experiment, namespace, time.monotonic() - started)
