"""The one tuning spec (`components.tune.spec.SearchSpec`) in SageMaker's words, and a tuning job's trials back.

SageMaker automatic model tuning has four strategies — `STRATEGIES` — and early stopping ``Off`` or ``Auto``
(DESIGN.md §9).  The spec's ``random`` is Random, ``bayesianoptimization`` Bayesian, ``hyperband``
Hyperband (its own early stopping: ``Off``), ``grid`` Grid (categorical ranges only, and no trial count:
the grid is the budget); ``medianstop`` is ``TrainingJobEarlyStoppingType: Auto``.  ``tpe``,
``multivariate-tpe``, ``cmaes`` and ``sobol`` have no SageMaker strategy: `check` refuses them, and any
algorithm setting SageMaker has no field for.

Ranges: ``double`` → ContinuousParameterRanges (``logUniform`` → ScalingType Logarithmic), ``int`` →
IntegerParameterRanges, ``categorical``/``discrete`` → CategoricalParameterRanges (values as strings).  A range
with a step has no SageMaker twin: it becomes the categorical range of its grid values (the same points).
Under Grid every parameter is categorical (its grid values).

Pure: no boto3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from components.tune import results as R
from components.tune import spec as S

#: Spec algorithm → SageMaker strategy.
STRATEGIES: dict[str, str] = {
    "random": "Random",
    "bayesianoptimization": "Bayesian",
    "hyperband": "Hyperband",
    "grid": "Grid",
}
#: Spec algorithm settings SageMaker has a field for, per algorithm (``random_state`` → RandomSeed;
#: hyperband's ``r_l``, Katib's maximum resource of one configuration → HyperbandStrategyConfig.MaxResource).
SETTINGS: dict[str, tuple[str, ...]] = {
    "random": ("random_state",),
    "bayesianoptimization": ("random_state",),
    "hyperband": ("random_state", "r_l"),
    "grid": ("random_state",),
}
#: SageMaker's limits on a search that botocore's models do not all carry (API reference of
#: HyperParameterTuningJobConfig / ParameterRanges).
MAX_PARAMETERS = 30
MAX_CATEGORICAL_VALUES = 30
#: TrainingJobStatus → the engine-neutral trial state (a job stopped by early stopping: PRUNED).
STATES = {"Completed": "COMPLETE", "Failed": "FAIL", "InProgress": "RUNNING", "Stopping": "RUNNING"}


def lacks(algorithm: str) -> str:
    """The message for an algorithm SageMaker has no strategy for (one line)."""
    offered = ", ".join(f"{name} ({strategy})" for name, strategy in STRATEGIES.items())
    return f"SageMaker automatic model tuning has no {algorithm!r}; it has {offered}"


def check(spec: S.SearchSpec) -> None:
    """What the SageMaker target needs beyond the spec's own checks.

    Raises:
        SpecError: An algorithm or algorithm setting SageMaker lacks, too many parameters or values, a
            continuous range under Grid without a step.
    """
    if spec.algorithm not in STRATEGIES:
        raise S.field_error("algorithm.algorithmName", lacks(spec.algorithm))
    allowed = SETTINGS[spec.algorithm]
    for name in spec.algorithm_settings:
        if name not in allowed:
            raise S.field_error(
                f"algorithm.algorithmSettings.{name}",
                f"SageMaker's {STRATEGIES[spec.algorithm]} strategy has no such setting; it takes {', '.join(allowed)}",
            )
    if len(spec.parameters) > MAX_PARAMETERS:
        raise S.field_error(
            "parameters", f"{len(spec.parameters)} parameters; SageMaker searches at most {MAX_PARAMETERS}"
        )
    for i, (parameter, values) in enumerate(zip(spec.parameters, _categorical_values(spec), strict=True)):
        if values is not None and len(values) > MAX_CATEGORICAL_VALUES:
            raise S.field_error(
                f"{parameter.where(i)}.feasibleSpace",
                f"{len(values)} values; a SageMaker categorical range takes at most {MAX_CATEGORICAL_VALUES}",
            )


def _categorical_values(spec: S.SearchSpec) -> list[list[str] | None]:
    """Per parameter: its values as a categorical range, or None for a continuous/integer range."""
    out: list[list[str] | None] = []
    for p in spec.parameters:
        if p.choices or p.step is not None or spec.algorithm == "grid":
            out.append([_text(v) for v in (p.grid() or [])])
        else:
            out.append(None)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parameter_ranges(spec: S.SearchSpec) -> dict[str, list[dict[str, Any]]]:
    """HyperParameterTuningJobConfig.ParameterRanges (`check` first)."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for p, values in zip(spec.parameters, _categorical_values(spec), strict=True):
        if values is not None:
            ranges["CategoricalParameterRanges"].append({"Name": p.name, "Values": values})
            continue
        assert p.low is not None and p.high is not None  # (validated)
        scaling = "Logarithmic" if p.log else "Linear"
        if p.type == "int":
            ranges["IntegerParameterRanges"].append(
                {"Name": p.name, "MinValue": str(int(p.low)), "MaxValue": str(int(p.high)), "ScalingType": scaling}
            )
        else:
            ranges["ContinuousParameterRanges"].append(
                {
                    "Name": p.name,
                    "MinValue": repr(float(p.low)),
                    "MaxValue": repr(float(p.high)),
                    "ScalingType": scaling,
                }
            )
    return {k: v for k, v in ranges.items() if v}


def tuning_job_config(spec: S.SearchSpec) -> dict[str, Any]:
    """HyperParameterTuningJobConfig: strategy, objective, resource limits, ranges, early stopping.

    Raises:
        SpecError: See `check`.
    """
    check(spec)
    strategy = STRATEGIES[spec.algorithm]
    limits: dict[str, Any] = {"MaxParallelTrainingJobs": spec.parallel_trial_count}
    if strategy != "Grid":  # Grid runs every point of the grid: SageMaker refuses a trial count
        limits["MaxNumberOfTrainingJobs"] = spec.max_trial_count
    config: dict[str, Any] = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {
            "Type": "Maximize" if spec.objective.maximize else "Minimize",
            "MetricName": spec.objective.metric,
        },
        "ResourceLimits": limits,
        "ParameterRanges": parameter_ranges(spec),
        "TrainingJobEarlyStoppingType": "Auto" if spec.early_stopping is not None else "Off",
    }
    if "random_state" in spec.algorithm_settings:
        config["RandomSeed"] = int(float(spec.algorithm_settings["random_state"]))
    if strategy == "Hyperband" and "r_l" in spec.algorithm_settings:
        config["StrategyConfig"] = {
            "HyperbandStrategyConfig": {"MaxResource": int(float(spec.algorithm_settings["r_l"]))}
        }
    if spec.objective.goal is not None:
        config["TuningJobCompletionCriteria"] = {"TargetObjectiveMetricValue": float(spec.objective.goal)}
    return config


# --- trials back -------------------------------------------------------------------------------------------


def typed_params(spec: S.SearchSpec, tuned: Mapping[str, str]) -> dict[str, Any]:
    """A training job's TunedHyperParameters (strings) as the spec's values: int, float, or the list's own."""
    out: dict[str, Any] = {}
    for p in spec.parameters:
        if p.name not in tuned:
            continue
        text = tuned[p.name].strip('"')  # SageMaker quotes categorical values in TunedHyperParameters
        if p.choices:
            out[p.name] = next((c for c in p.choices if _text(c) == text or str(c) == text), text)
        elif p.type == "int":
            out[p.name] = int(float(text))
        else:
            out[p.name] = float(text)
    return out


def _seconds(summary: Mapping[str, Any]) -> float | None:
    start, end = summary.get("TrainingStartTime"), summary.get("TrainingEndTime")
    if isinstance(start, datetime) and isinstance(end, datetime):
        return (end - start).total_seconds()
    return None


def trial_records(spec: S.SearchSpec, summaries: Sequence[Mapping[str, Any]]) -> list[R.TrialRecord]:
    """ListTrainingJobsForHyperParameterTuningJob's summaries as trial records, numbered by creation time."""
    ordered = sorted(summaries, key=lambda s: (s.get("CreationTime") or datetime.min, s["TrainingJobName"]))
    records = []
    for number, summary in enumerate(ordered):
        status = summary.get("TrainingJobStatus", "")
        state = "PRUNED" if status == "Stopped" else STATES.get(status, "FAIL")
        metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        value = float(metric["Value"]) if "Value" in metric else None
        records.append(
            R.TrialRecord(
                number=number,
                state=state,
                params=typed_params(spec, summary.get("TunedHyperParameters") or {}),
                value=value,
                seconds=_seconds(summary),
                key=summary["TrainingJobName"],
                error=summary.get("FailureReason", ""),
            )
        )
    return records


def study_result(
    spec: S.SearchSpec, description: Mapping[str, Any], summaries: Sequence[Mapping[str, Any]], seconds: float
) -> R.StudyResult:
    """The engine-neutral outcome (summary.json's ``tuning``) of a finished tuning job."""
    trials = trial_records(spec, summaries)
    best = description.get("BestTrainingJob") or {}
    best_trial = next((t.number for t in trials if t.key == best.get("TrainingJobName")), None)
    best_metric = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    return R.StudyResult(
        engine="sagemaker",
        study_name=description["HyperParameterTuningJobName"],
        storage=f"SageMaker tuning job {description.get('HyperParameterTuningJobArn', '')}",
        algorithm=spec.algorithm,
        metric=spec.objective.metric,
        direction=spec.objective.direction,
        trials=trials,
        best_params=typed_params(spec, best.get("TunedHyperParameters") or {}),
        best_value=float(best_metric["Value"]) if "Value" in best_metric else None,
        best_trial=best_trial,
        stop_reason=description.get("HyperParameterTuningJobStatus", ""),
        seconds=seconds,
    )
