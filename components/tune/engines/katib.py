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

#: Per algorithm: the suggestion service a standard Katib install runs for it (its ``katib-config``) and the
#: spec's algorithm settings that service accepts, by the name it reads them under.  Katib refuses an
#: Experiment with any other setting (each service validates its settings by name), so `check` refuses it here
#: first.  ``hyperband`` is absent: Katib's Hyperband takes its resource as a search parameter
#: (``resource_name`` and ``r_l``), which the engine-neutral spec does not express.
KATIB_SETTINGS: dict[str, tuple[str, dict[str, str]]] = {
    "random": ("hyperopt", {"random_state": "random_state"}),
    "grid": ("optuna", {"random_state": "random_state"}),
    "tpe": ("hyperopt", {"random_state": "random_state", "n_ei_candidates": "n_EI_candidates"}),
    "multivariate-tpe": (
        "optuna",
        {"random_state": "random_state", "n_startup_trials": "n_startup_trials", "n_ei_candidates": "n_ei_candidates"},
    ),
    "bayesianoptimization": ("skopt", {"random_state": "random_state", "n_startup_trials": "n_initial_points"}),
    "cmaes": ("goptuna", {"random_state": "random_state", "sigma": "sigma"}),
    "sobol": ("goptuna", {"random_state": "random_state"}),
}


def check(spec: S.SearchSpec) -> None:
    """What the ``katib`` engine needs beyond the spec's own checks: an algorithm and settings Katib's
    suggestion service for it accepts (`KATIB_SETTINGS`).

    Raises:
        SpecError: ``hyperband``, a setting Katib's service for the algorithm does not know, or a search space
            it refuses or would change (`_check_search_space`).
    """
    if spec.algorithm not in KATIB_SETTINGS:
        raise S.field_error(
            "algorithm.algorithmName",
            f"{spec.algorithm} on Katib needs its resource as a search parameter (Katib's resource_name and r_l "
            "settings), which this spec does not express: run it with the optuna engine (the profile's "
            "tuning.engine) or choose another algorithm",
        )
    service, names = KATIB_SETTINGS[spec.algorithm]
    for name in spec.algorithm_settings:
        if name not in names:
            raise S.field_error(
                f"algorithm.algorithmSettings.{name}",
                f"Katib's {spec.algorithm} ({service} suggestion service) has no such setting; it takes "
                f"{', '.join(names)} — remove it, or run the optuna engine (the profile's tuning.engine)",
            )
    _check_search_space(spec)


#: Where each rule of `_check_search_space` comes from (kubeflow/katib v0.19.0).
_OPTUNA_SERVICE = "pkg/suggestion/v1beta1/optuna/service.py"
_GOPTUNA_SERVICE = "pkg/suggestion/v1beta1/goptuna/service.go"


def _check_search_space(spec: S.SearchSpec) -> None:
    """The search-space rules of Katib's suggestion services, checked before anything is created (Katib
    checks them only once the suggestion's Deployment runs, and then fails the Experiment with just
    "Suggestion has failed").

    - grid (optuna service, ``_validate_grid_setting``): maxTrialCount at most the grid's size;
    - cmaes (goptuna service, ``ValidateAlgorithmSettings``): at least two int or double parameters;
    - cmaes and sobol (goptuna ``converter.go``): a ``logUniform`` distribution is sampled uniformly, so it is
      refused rather than silently changed.
    """
    if spec.algorithm == "grid" and spec.max_trial_count > spec.grid_size():
        raise S.field_error(
            "maxTrialCount",
            f"{spec.max_trial_count} is more than the grid's {spec.grid_size()} points; Katib's grid (its optuna "
            f"service, {_OPTUNA_SERVICE}) refuses that: lower maxTrialCount (--tuning-trials) to at most "
            f"{spec.grid_size()}, add grid values, or run the optuna engine (it stops once every point ran)",
        )
    numeric = [p.name for p in spec.parameters if p.type in ("int", "double")]
    if spec.algorithm == "cmaes" and len(numeric) < 2:
        raise S.field_error(
            "algorithm.algorithmName",
            f"cmaes on Katib needs at least two int or double parameters (its goptuna service, {_GOPTUNA_SERVICE}, "
            f"refuses fewer); the spec has {len(numeric)} ({', '.join(numeric) or 'none'}): add one, or choose "
            "another algorithm (tpe, random)",
        )
    logs = [p.name for p in spec.parameters if p.log]
    if spec.algorithm in ("cmaes", "sobol") and logs:
        raise S.field_error(
            "parameters",
            f"{spec.algorithm} on Katib samples {', '.join(logs)} uniformly: its goptuna service ignores "
            f"distribution logUniform (pkg/suggestion/v1beta1/goptuna/converter.go); choose tpe or random (they "
            "keep it), drop logUniform, or run the optuna engine",
        )


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
    """The Experiment's ``algorithm``, its settings under the names Katib's service reads (`check` first)."""
    check(spec)
    names = KATIB_SETTINGS[spec.algorithm][1]
    settings = [{"name": names[k], "value": str(v)} for k, v in spec.algorithm_settings.items()]
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
