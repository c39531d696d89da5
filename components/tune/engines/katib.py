"""Katib's view of a search spec: algorithm, early stopping, objective and metrics collector, by Katib's names.

The spec's algorithm names *are* Katib's (``random``, ``grid``, ``tpe``, ``multivariate-tpe``,
``bayesianoptimization``, ``hyperband``, ``cmaes``, ``sobol``; early stopping ``medianstop`` with
``min_trials_required`` and ``start_step``), so these are the pieces of a ``kubeflow.org/v1beta1``
``Experiment`` spec as plain dicts.  `katib_experiment` renders the whole Experiment (trial template: a
batch Job running the training CLI), validates it with ``kubeflow-katib-api``, creates it and waits for
its optimal trial.
"""

from __future__ import annotations

from typing import Any

from components.common import trial_metrics
from components.tune import spec as S

#: Katib ``algorithmName`` of each spec algorithm (the same names).
ALGORITHM_NAMES: dict[str, str] = {name: name for name in S.ALGORITHMS}
EARLY_STOPPING_NAMES: dict[str, str] = {name: name for name in S.EARLY_STOPPING}


def algorithm_name(algorithm: str) -> str:
    """Katib's ``algorithmName`` for a spec algorithm.

    Raises:
        ValueError: Not an algorithm of the spec.
    """
    try:
        return ALGORITHM_NAMES[algorithm]
    except KeyError:
        raise ValueError(f"Unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHM_NAMES)}") from None


def algorithm_spec(spec: S.SearchSpec) -> dict[str, Any]:
    """The Experiment's ``algorithm``."""
    settings = [{"name": k, "value": str(v)} for k, v in spec.algorithm_settings.items()]
    return {"algorithmName": algorithm_name(spec.algorithm), "algorithmSettings": settings}


def early_stopping_spec(spec: S.SearchSpec) -> dict[str, Any] | None:
    """The Experiment's ``earlyStopping`` (None without one)."""
    if spec.early_stopping is None:
        return None
    settings = [{"name": k, "value": str(v)} for k, v in spec.early_stopping.settings().items()]
    return {"algorithmName": EARLY_STOPPING_NAMES[spec.early_stopping.algorithm], "algorithmSettings": settings}


def objective_spec(spec: S.SearchSpec) -> dict[str, Any]:
    """The Experiment's ``objective`` (the other emitted metrics as additional ones)."""
    objective = spec.objective
    others = [m for m in trial_metrics.METRIC_NAMES if m != objective.metric]
    out: dict[str, Any] = {
        "type": objective.direction,
        "objectiveMetricName": objective.metric,
        "additionalMetricNames": list(objective.additional_metrics) or others,
    }
    if objective.goal is not None:
        out["goal"] = objective.goal
    return out


def metrics_collector_spec() -> dict[str, Any]:
    """The Experiment's ``metricsCollectorSpec``: Katib's StdOut collector with the training's metric lines'
    filter (exactly two groups: name and value)."""
    return {"collector": {"kind": "StdOut"}, "source": {"filter": {"metricsFormat": [trial_metrics.KATIB_FILTER]}}}
