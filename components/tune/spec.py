"""The search spec: what to tune, towards what, how — in the shape of a Katib ``Experiment``, engine-neutral.

This module holds the spec itself: `SearchSpec` with its `Parameter` (a search dimension and its feasible
space), `Objective` and `EarlyStopping`, the values each field may take (`ALGORITHMS`, `ALGORITHM_SETTINGS`,
`PARAMETER_TYPES`, …) and the checks.  `SearchSpec.validate` checks everything that needs no training CLI;
`components.tune.core.check_training_options` checks the names and values against the training options'
declaration (`components.common.training_options`).  Every error is a `SpecError` (a `ValueError`) whose message
starts with the field it is about (`field_error`).  `SearchSpec.to_dict` writes the spec in Katib's field
names; `components.tune.spec_loading` reads it (YAML, the format is described there) and holds the default
spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from components.common import trial_metrics

ALGORITHMS = ("random", "grid", "tpe", "multivariate-tpe", "bayesianoptimization", "hyperband", "cmaes", "sobol")
#: The algorithm settings each algorithm accepts (``random_state`` everywhere: the sampler's seed).
ALGORITHM_SETTINGS: dict[str, tuple[str, ...]] = {
    "random": ("random_state",),
    "grid": ("random_state",),
    "tpe": ("random_state", "n_startup_trials", "n_ei_candidates"),
    "multivariate-tpe": ("random_state", "n_startup_trials", "n_ei_candidates"),
    "bayesianoptimization": ("random_state", "n_startup_trials"),
    "hyperband": ("random_state", "eta", "r_l"),
    "cmaes": ("random_state", "sigma"),
    "sobol": ("random_state",),
}
EARLY_STOPPING = ("medianstop",)
#: medianstop's settings and their Katib defaults.
MEDIANSTOP_DEFAULTS = {"min_trials_required": 3, "start_step": 4}
PARAMETER_TYPES = ("double", "int", "discrete", "categorical")
DISTRIBUTIONS = ("uniform", "logUniform")
DIRECTIONS = ("maximize", "minimize")
#: Training options the tuner sets itself on every trial: neither a parameter nor a trial option.
RESERVED_OPTIONS = frozenset(
    {
        "feature_store",
        "feast_config",
        "features",
        "output_dir",
        "model_dir",
        "report",
        "mlflow",
        "no_mlflow",
        "mlflow_tracking_uri",
        "mlflow_experiment",
        "mlflow_child_run",
        "mlflow_log_model",
        "pipeline_run_id",
        "data_hash",
    }
)


class SpecError(ValueError):
    """A search spec that no engine can run; the message names the field."""


def field_error(where: str, message: str) -> SpecError:
    """The `SpecError` about the field ``where`` (``parameters[0] (learning_rate).feasibleSpace``)."""
    return SpecError(f"tuning spec: {where}: {message}")


def to_number(value: Any, where: str, integer: bool = False) -> float:
    """``value`` (a number, or a string as Katib writes numbers) as a finite float, or an int if ``integer``."""
    if isinstance(value, bool) or value is None:
        raise field_error(where, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise field_error(where, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise field_error(where, f"expected a finite number, got {value!r}")
    if integer and number != int(number):
        raise field_error(where, f"expected an integer, got {value!r}")
    return int(number) if integer else number


@dataclass(frozen=True)
class Parameter:
    """One search dimension: a training option and its feasible space.

    ``double``/``int``: ``low``…``high`` (inclusive), an optional ``step``, ``log`` for a log-uniform
    distribution.  ``discrete``: a list of numbers.  ``categorical``: a list of strings.
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def where(self, index: int) -> str:
        return f"parameters[{index}] ({self.name})"

    def validate(self, index: int) -> None:
        """Raise `SpecError` for an empty or inverted range, a bad step, list or distribution."""
        where = self.where(index)
        if self.type not in PARAMETER_TYPES:
            raise field_error(
                f"{where}.parameterType", f"must be one of {', '.join(PARAMETER_TYPES)}; got {self.type!r}"
            )
        space = f"{where}.feasibleSpace"
        if self.type in ("discrete", "categorical"):
            if not self.choices:
                raise field_error(f"{space}.list", f"a {self.type} parameter needs a non-empty list")
            if len(set(map(str, self.choices))) != len(self.choices):
                raise field_error(f"{space}.list", f"values repeat: {list(self.choices)}")
            return
        if self.low is None or self.high is None:
            raise field_error(space, f"a {self.type} parameter needs min and max")
        if self.low > self.high:
            raise field_error(space, f"inverted range: min {self.low:g} is above max {self.high:g}")
        if self.low == self.high:
            raise field_error(
                space, f"empty range: min and max are both {self.low:g} (a fixed value goes in trialOptions)"
            )
        if self.step is not None and not 0 < self.step <= self.high - self.low:
            raise field_error(f"{space}.step", f"must be above 0 and at most max - min ({self.high - self.low:g})")
        if self.log and self.low <= 0:
            raise field_error(f"{space}.min", f"a logUniform range must start above 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise field_error(f"{space}.step", "a logUniform range cannot have a step")

    def grid(self) -> list[Any] | None:
        """The values a grid search takes (None: a double range without step, which has no grid)."""
        if self.choices:
            return list(self.choices)
        assert self.low is not None and self.high is not None  # (validated)
        if self.type == "int":
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def extremes(self) -> list[Any]:
        """Values whose acceptance by the training CLI means every value of the space is accepted."""
        return list(self.choices) if self.choices else [self.low, self.high]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the feasible space (for warm starts from other studies)."""
        if self.choices:
            return str(value) in {str(c) for c in self.choices}
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high and (self.type != "int" or value == int(value))

    def to_dict(self) -> dict[str, Any]:
        if self.choices:
            space: dict[str, Any] = {"list": [str(c) for c in self.choices]}
        else:
            space = {"min": f"{self.low:g}", "max": f"{self.high:g}"}
            if self.step is not None:
                space["step"] = f"{self.step:g}"
            if self.log:
                space["distribution"] = "logUniform"
        return {"name": self.name, "parameterType": self.type, "feasibleSpace": space}


@dataclass(frozen=True)
class Objective:
    """The validation metric to optimise (a name of `trial_metrics.METRIC_NAMES`), its direction and goal."""

    metric: str = "validation-accuracy"
    direction: str = "maximize"
    goal: float | None = None
    additional_metrics: tuple[str, ...] = ()

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def training_metric(self) -> str:
        """The training's own name of the metric: ``validation-accuracy`` → ``accuracy``."""
        return self.metric.removeprefix(trial_metrics.PREFIX)

    def validate(self) -> None:
        if self.direction not in DIRECTIONS:
            raise field_error("objective.type", f"must be maximize or minimize; got {self.direction!r}")
        for where, name in [("objectiveMetricName", self.metric)] + [
            (f"additionalMetricNames[{i}]", m) for i, m in enumerate(self.additional_metrics)
        ]:
            if name not in trial_metrics.METRIC_NAMES:
                raise field_error(
                    f"objective.{where}",
                    f"the training does not emit {name!r}; it emits {', '.join(trial_metrics.METRIC_NAMES)}",
                )

    def reached(self, value: float) -> bool:
        """Whether ``value`` meets the goal (never without one)."""
        if self.goal is None:
            return False
        return value >= self.goal if self.maximize else value <= self.goal


@dataclass(frozen=True)
class EarlyStopping:
    """Katib's ``medianstop``: stop a trial whose best value so far is worse than the median of the completed
    trials' values at the same evaluation, once ``min_trials_required`` trials completed and the trial has
    reported ``start_step`` evaluations."""

    algorithm: str = "medianstop"
    min_trials_required: int = MEDIANSTOP_DEFAULTS["min_trials_required"]
    start_step: int = MEDIANSTOP_DEFAULTS["start_step"]

    def validate(self) -> None:
        if self.algorithm not in EARLY_STOPPING:
            raise field_error("earlyStopping.algorithmName", f"must be medianstop; got {self.algorithm!r}")
        for name in ("min_trials_required", "start_step"):
            if getattr(self, name) < 1:
                raise field_error(
                    f"earlyStopping.algorithmSettings.{name}", f"must be at least 1, got {getattr(self, name)}"
                )

    def settings(self) -> dict[str, int]:
        return {"min_trials_required": self.min_trials_required, "start_step": self.start_step}


@dataclass(frozen=True)
class SearchSpec:
    """A whole search: parameters, objective, algorithm, budget, parallelism, failure limit, early stopping.

    ``trial_options`` are training options every trial gets as they are (a per-trial budget such as
    ``num_train_epochs`` or ``max_steps``, how often to evaluate).
    """

    parameters: tuple[Parameter, ...]
    objective: Objective = field(default_factory=Objective)
    algorithm: str = "random"
    algorithm_settings: dict[str, str] = field(default_factory=dict)
    max_trial_count: int = 12
    parallel_trial_count: int = 1
    max_failed_trial_count: int = 3
    early_stopping: EarlyStopping | None = None
    trial_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Check everything that needs no training CLI.

        Raises:
            SpecError: Naming the field: an empty or inverted range, an unknown algorithm or setting, a grid
                larger than the trial budget, an objective metric the training does not emit, …
        """
        if not self.parameters:
            raise field_error("parameters", "at least one parameter is needed")
        seen: set[str] = set()
        for i, parameter in enumerate(self.parameters):
            if not parameter.name or parameter.name in seen:
                raise field_error(f"parameters[{i}].name", f"missing or repeated name {parameter.name!r}")
            seen.add(parameter.name)
            parameter.validate(i)
        self.objective.validate()
        if self.algorithm not in ALGORITHMS:
            raise field_error(
                "algorithm.algorithmName", f"unknown algorithm {self.algorithm!r}; valid: {', '.join(ALGORITHMS)}"
            )
        allowed = ALGORITHM_SETTINGS[self.algorithm]
        for name, value in self.algorithm_settings.items():
            if name not in allowed:
                raise field_error(
                    f"algorithm.algorithmSettings.{name}",
                    f"not a setting of {self.algorithm}; valid: {', '.join(allowed)}",
                )
            to_number(value, f"algorithm.algorithmSettings.{name}", integer=name not in ("sigma", "eta"))
        for name, low in (("maxTrialCount", 1), ("parallelTrialCount", 1), ("maxFailedTrialCount", 0)):
            value = getattr(self, _attr(name))
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise field_error(name, f"must be an integer of at least {low}, got {value!r}")
        if self.early_stopping is not None:
            self.early_stopping.validate()
            if self.algorithm == "hyperband":
                raise field_error("earlyStopping", "hyperband stops trials itself; leave earlyStopping out")
        if self.algorithm == "grid":
            self._check_grid()
        for name in self.trial_options:
            if name in seen:
                raise field_error(f"trialOptions.{name}", "is also a parameter; keep one of them")

    def _check_grid(self) -> None:
        """Every parameter has grid values.  The budget is the engine's to check: both run a grid larger than
        maxTrialCount as a subset of its points; Katib refuses a maxTrialCount larger than the grid
        (`engines.katib.check`), Optuna's GridSampler stops once every point ran."""
        for i, parameter in enumerate(self.parameters):
            if parameter.grid() is None:
                raise field_error(
                    f"{parameter.where(i)}.feasibleSpace.step", "a double parameter needs a step for grid"
                )

    def grid_size(self) -> int:
        """How many points the grid has (``grid`` only; validated)."""
        return math.prod(len(values) for values in self.grid_space().values())

    def grid_space(self) -> dict[str, list[Any]]:
        """Every parameter's grid values (``grid`` only; validated)."""
        return {p.name: p.grid() or [] for p in self.parameters}

    def with_budget(self, max_trial_count: int) -> SearchSpec:
        """The same search with another trial budget (``--tuning-trials``)."""
        return replace(self, max_trial_count=max_trial_count)

    def seed(self, default: int) -> int:
        """The sampler's seed: ``random_state`` when set, else ``default``."""
        return int(float(self.algorithm_settings.get("random_state", default)))

    def to_dict(self) -> dict[str, Any]:
        """The spec in Katib's field names (what `spec_loading.parse_spec` reads back)."""
        objective: dict[str, Any] = {"type": self.objective.direction, "objectiveMetricName": self.objective.metric}
        if self.objective.goal is not None:
            objective["goal"] = self.objective.goal
        if self.objective.additional_metrics:
            objective["additionalMetricNames"] = list(self.objective.additional_metrics)
        out: dict[str, Any] = {
            "objective": objective,
            "algorithm": {
                "algorithmName": self.algorithm,
                "algorithmSettings": [{"name": k, "value": v} for k, v in self.algorithm_settings.items()],
            },
            "maxTrialCount": self.max_trial_count,
            "parallelTrialCount": self.parallel_trial_count,
            "maxFailedTrialCount": self.max_failed_trial_count,
            "parameters": [p.to_dict() for p in self.parameters],
            "trialOptions": dict(self.trial_options),
        }
        if self.early_stopping is not None:
            out["earlyStopping"] = {
                "algorithmName": self.early_stopping.algorithm,
                "algorithmSettings": [{"name": k, "value": str(v)} for k, v in self.early_stopping.settings().items()],
            }
        return out


def _attr(katib_name: str) -> str:
    return {
        "maxTrialCount": "max_trial_count",
        "parallelTrialCount": "parallel_trial_count",
        "maxFailedTrialCount": "max_failed_trial_count",
    }[katib_name]
