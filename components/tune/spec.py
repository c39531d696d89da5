"""The search spec: what to tune, towards what, how — in the shape of a Katib ``Experiment``, engine-neutral.

A spec is YAML with the field names of Katib's ``kubeflow.org/v1beta1`` ``Experiment`` ``spec`` (a whole
Experiment is accepted too: its ``spec`` is read, its engine-specific keys are ignored)::

    objective:
      type: maximize                          # or minimize
      objectiveMetricName: validation-accuracy   # components.common.trial_metrics.METRIC_NAMES
      goal: 0.95                              # optional: stop once a trial reaches it
    algorithm:
      algorithmName: tpe                      # random grid tpe multivariate-tpe bayesianoptimization
                                              # hyperband cmaes sobol
      algorithmSettings: [{name: random_state, value: "7"}]
    earlyStopping:                            # optional
      algorithmName: medianstop
      algorithmSettings: [{name: min_trials_required, value: "3"}, {name: start_step, value: "2"}]
    maxTrialCount: 12
    parallelTrialCount: 1
    maxFailedTrialCount: 3
    parameters:
      - name: learning_rate                   # a training option's name (python -m components.train --help)
        parameterType: double                 # double int discrete categorical
        feasibleSpace: {min: "5e-5", max: "2e-4", distribution: logUniform}
      - name: per_device_train_batch_size
        parameterType: discrete
        feasibleSpace: {list: ["16", "32"]}
    trialOptions:                             # not Katib's: fixed training options of every trial
      num_train_epochs: 1                     # (on Katib they go into the trial template's command)

Numbers may be written as numbers or, as Katib writes them, as strings.  `SearchSpec.validate` checks
everything that needs no training CLI; `check_training_options` checks the names and values against the
training CLI's own options (see `components.tune.training_cli`).  Every error is a `SpecError` (a
`ValueError`) whose message starts with the field it is about.

The default spec (`default_spec`) mirrors the course's search (random search over the learning rate and
the batch size, maximise validation accuracy), scaled to the bundled MiniLM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
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
        "pipeline_run_id",
        "data_hash",
    }
)
_SPEC_KEYS = (
    "objective",
    "algorithm",
    "earlyStopping",
    "maxTrialCount",
    "parallelTrialCount",
    "maxFailedTrialCount",
    "parameters",
    "trialOptions",
)
#: Keys of a Katib Experiment spec that belong to the Katib engine: ignored here.
_ENGINE_KEYS = ("trialTemplate", "metricsCollectorSpec", "resumePolicy")


class SpecError(ValueError):
    """A search spec that no engine can run; the message names the field."""


def _fail(where: str, message: str) -> SpecError:
    return SpecError(f"tuning spec: {where}: {message}")


def _number(value: Any, where: str, integer: bool = False) -> float:
    if isinstance(value, bool) or value is None:
        raise _fail(where, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(where, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise _fail(where, f"expected a finite number, got {value!r}")
    if integer and number != int(number):
        raise _fail(where, f"expected an integer, got {value!r}")
    return int(number) if integer else number


def _settings(raw: Any, where: str) -> dict[str, str]:
    """Katib's ``[{name: …, value: …}]`` (or a plain mapping) as a dict of strings."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if not isinstance(raw, list) or not all(isinstance(s, Mapping) and "name" in s for s in raw):
        raise _fail(where, "expected a list of {name: …, value: …}")
    return {str(s["name"]): str(s.get("value", "")) for s in raw}


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
            raise _fail(f"{where}.parameterType", f"must be one of {', '.join(PARAMETER_TYPES)}; got {self.type!r}")
        space = f"{where}.feasibleSpace"
        if self.type in ("discrete", "categorical"):
            if not self.choices:
                raise _fail(f"{space}.list", f"a {self.type} parameter needs a non-empty list")
            if len(set(map(str, self.choices))) != len(self.choices):
                raise _fail(f"{space}.list", f"values repeat: {list(self.choices)}")
            return
        if self.low is None or self.high is None:
            raise _fail(space, f"a {self.type} parameter needs min and max")
        if self.low > self.high:
            raise _fail(space, f"inverted range: min {self.low:g} is above max {self.high:g}")
        if self.low == self.high:
            raise _fail(space, f"empty range: min and max are both {self.low:g} (a fixed value goes in trialOptions)")
        if self.step is not None and not 0 < self.step <= self.high - self.low:
            raise _fail(f"{space}.step", f"must be above 0 and at most max - min ({self.high - self.low:g})")
        if self.log and self.low <= 0:
            raise _fail(f"{space}.min", f"a logUniform range must start above 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise _fail(f"{space}.step", "a logUniform range cannot have a step")

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
            raise _fail("objective.type", f"must be maximize or minimize; got {self.direction!r}")
        for where, name in [("objectiveMetricName", self.metric)] + [
            (f"additionalMetricNames[{i}]", m) for i, m in enumerate(self.additional_metrics)
        ]:
            if name not in trial_metrics.METRIC_NAMES:
                raise _fail(
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
            raise _fail("earlyStopping.algorithmName", f"must be medianstop; got {self.algorithm!r}")
        for name in ("min_trials_required", "start_step"):
            if getattr(self, name) < 1:
                raise _fail(f"earlyStopping.algorithmSettings.{name}", f"must be at least 1, got {getattr(self, name)}")

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
            raise _fail("parameters", "at least one parameter is needed")
        seen: set[str] = set()
        for i, parameter in enumerate(self.parameters):
            if not parameter.name or parameter.name in seen:
                raise _fail(f"parameters[{i}].name", f"missing or repeated name {parameter.name!r}")
            seen.add(parameter.name)
            parameter.validate(i)
        self.objective.validate()
        if self.algorithm not in ALGORITHMS:
            raise _fail(
                "algorithm.algorithmName", f"unknown algorithm {self.algorithm!r}; valid: {', '.join(ALGORITHMS)}"
            )
        allowed = ALGORITHM_SETTINGS[self.algorithm]
        for name, value in self.algorithm_settings.items():
            if name not in allowed:
                raise _fail(
                    f"algorithm.algorithmSettings.{name}",
                    f"not a setting of {self.algorithm}; valid: {', '.join(allowed)}",
                )
            _number(value, f"algorithm.algorithmSettings.{name}", integer=name not in ("sigma", "eta"))
        for name, low in (("maxTrialCount", 1), ("parallelTrialCount", 1), ("maxFailedTrialCount", 0)):
            value = getattr(self, _attr(name))
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise _fail(name, f"must be an integer of at least {low}, got {value!r}")
        if self.early_stopping is not None:
            self.early_stopping.validate()
            if self.algorithm == "hyperband":
                raise _fail("earlyStopping", "hyperband stops trials itself; leave earlyStopping out")
        if self.algorithm == "grid":
            self._check_grid()
        for name in self.trial_options:
            if name in seen:
                raise _fail(f"trialOptions.{name}", "is also a parameter; keep one of them")

    def _check_grid(self) -> None:
        size = 1
        for i, parameter in enumerate(self.parameters):
            values = parameter.grid()
            if values is None:
                raise _fail(f"{parameter.where(i)}.feasibleSpace.step", "a double parameter needs a step for grid")
            size *= len(values)
        if size > self.max_trial_count:
            raise _fail(
                "algorithm.algorithmName",
                f"the grid has {size} points but maxTrialCount is {self.max_trial_count}: raise the budget "
                "to at least the grid's size or use fewer values (larger steps, shorter lists)",
            )

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
        """The spec in Katib's field names (what `parse_spec` reads back)."""
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


# --- reading ----------------------------------------------------------------------------------------------


def _parameter(raw: Any, index: int) -> Parameter:
    where = f"parameters[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, "expected a mapping with name, parameterType, feasibleSpace")
    unknown = sorted(set(raw) - {"name", "parameterType", "feasibleSpace"})
    if unknown:
        raise _fail(where, f"unknown key(s) {unknown}; valid: name, parameterType, feasibleSpace")
    name = str(raw.get("name") or "")
    where = f"{where} ({name})"
    kind = str(raw.get("parameterType", ""))
    space = raw.get("feasibleSpace") or {}
    if not isinstance(space, Mapping):
        raise _fail(f"{where}.feasibleSpace", "expected a mapping (min, max, step, list, distribution)")
    unknown = sorted(set(space) - {"min", "max", "step", "list", "distribution"})
    if unknown:
        raise _fail(f"{where}.feasibleSpace", f"unknown key(s) {unknown}; valid: min, max, step, list, distribution")
    distribution = str(space.get("distribution") or "uniform")
    if distribution not in DISTRIBUTIONS:
        raise _fail(f"{where}.feasibleSpace.distribution", f"must be uniform or logUniform; got {distribution!r}")
    if kind in ("discrete", "categorical"):
        for key in ("min", "max", "step"):
            if key in space:
                raise _fail(f"{where}.feasibleSpace.{key}", f"a {kind} parameter takes a list, not {key}")
        values = space.get("list")
        if values is not None and not isinstance(values, list):
            raise _fail(f"{where}.feasibleSpace.list", f"expected a list, got {values!r}")
        choices: tuple[Any, ...] = tuple(values or ())
        if kind == "discrete":
            choices = tuple(_number(v, f"{where}.feasibleSpace.list") for v in choices)
            choices = tuple(int(v) if float(v).is_integer() else v for v in choices)
        else:
            choices = tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in choices)
        return Parameter(name, kind, choices=choices)
    if "list" in space and kind in ("double", "int"):
        raise _fail(f"{where}.feasibleSpace.list", f"a {kind} parameter takes min and max, not a list")
    integer = kind == "int"
    low = _number(space["min"], f"{where}.feasibleSpace.min", integer) if "min" in space else None
    high = _number(space["max"], f"{where}.feasibleSpace.max", integer) if "max" in space else None
    step = _number(space["step"], f"{where}.feasibleSpace.step", integer) if "step" in space else None
    return Parameter(name, kind, low, high, step, log=distribution == "logUniform")


def _integer(raw: Mapping[str, Any], key: str, default: int) -> int:
    if key not in raw or raw[key] is None:
        return default
    return int(_number(raw[key], key, integer=True))


def parse_spec(raw: Any) -> SearchSpec:
    """A `SearchSpec` from a parsed YAML document (a spec or a whole Katib Experiment); validated.

    Raises:
        SpecError: Unknown keys, wrong types, and everything `SearchSpec.validate` checks.
    """
    if isinstance(raw, Mapping) and raw.get("kind") == "Experiment":
        raw = raw.get("spec") or {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"tuning spec: expected a mapping of {', '.join(_SPEC_KEYS)}; got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_SPEC_KEYS) - set(_ENGINE_KEYS))
    if unknown:
        raise SpecError(f"tuning spec: unknown key(s) {unknown}; valid: {', '.join(_SPEC_KEYS)}")
    objective_raw = raw.get("objective") or {}
    if not isinstance(objective_raw, Mapping):
        raise _fail("objective", "expected a mapping (type, objectiveMetricName, goal)")
    goal = objective_raw.get("goal")
    objective = Objective(
        metric=str(objective_raw.get("objectiveMetricName") or Objective.metric),
        direction=str(objective_raw.get("type") or Objective.direction),
        goal=None if goal is None else _number(goal, "objective.goal"),
        additional_metrics=tuple(map(str, objective_raw.get("additionalMetricNames") or ())),
    )
    algorithm_raw = raw.get("algorithm") or {}
    if not isinstance(algorithm_raw, Mapping):
        raise _fail("algorithm", "expected a mapping (algorithmName, algorithmSettings)")
    early = None
    if raw.get("earlyStopping"):
        early_raw = raw["earlyStopping"]
        if not isinstance(early_raw, Mapping):
            raise _fail("earlyStopping", "expected a mapping (algorithmName, algorithmSettings)")
        settings = _settings(early_raw.get("algorithmSettings"), "earlyStopping.algorithmSettings")
        unknown = sorted(set(settings) - set(MEDIANSTOP_DEFAULTS))
        if unknown:
            raise _fail(
                "earlyStopping.algorithmSettings",
                f"unknown setting(s) {unknown}; valid: {', '.join(MEDIANSTOP_DEFAULTS)}",
            )
        values = {
            k: int(_number(settings.get(k, d), f"earlyStopping.algorithmSettings.{k}", integer=True))
            for k, d in MEDIANSTOP_DEFAULTS.items()
        }
        early = EarlyStopping(str(early_raw.get("algorithmName") or "medianstop"), **values)
    parameters_raw = raw.get("parameters") or []
    if not isinstance(parameters_raw, list):
        raise _fail("parameters", "expected a list")
    trial_options = raw.get("trialOptions") or {}
    if not isinstance(trial_options, Mapping):
        raise _fail("trialOptions", "expected a mapping of training option names to values")
    spec = SearchSpec(
        parameters=tuple(_parameter(p, i) for i, p in enumerate(parameters_raw)),
        objective=objective,
        algorithm=str(algorithm_raw.get("algorithmName") or "random"),
        algorithm_settings=_settings(algorithm_raw.get("algorithmSettings"), "algorithm.algorithmSettings"),
        max_trial_count=_integer(raw, "maxTrialCount", SearchSpec.max_trial_count),
        parallel_trial_count=_integer(raw, "parallelTrialCount", SearchSpec.parallel_trial_count),
        max_failed_trial_count=_integer(raw, "maxFailedTrialCount", SearchSpec.max_failed_trial_count),
        early_stopping=early,
        trial_options={str(k): v for k, v in trial_options.items()},
    )
    spec.validate()
    return spec


def load_spec(source: str) -> SearchSpec:
    """The spec in ``source``: a YAML file's path, YAML text, or empty for `default_spec`.

    Raises:
        SpecError: An unreadable file, text that is not YAML, and everything `parse_spec` checks.
    """
    import yaml

    if not source.strip():
        return default_spec()
    text = source
    if "\n" not in source and not source.lstrip().startswith("{"):
        path = Path(source).expanduser()
        try:
            text = path.read_text()
        except OSError as error:
            raise SpecError(f"tuning spec: cannot read {source!r} ({error.strerror or error})") from error
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise SpecError(f"tuning spec: not valid YAML ({detail})") from error
    return parse_spec(raw)


def default_spec() -> SearchSpec:
    """The course's search (random search, learning rate and batch size, maximise validation accuracy),
    scaled to the bundled MiniLM: learning rate log-uniform 5e-5…2e-4 (the course: 1e-5…5e-5 for RoBERTa),
    batch size 16 or 32 (the course: 128 or 256 on GPUs); each trial trains one epoch and evaluates every 25
    optimizer steps, and the median rule may stop it from its second evaluation on, once three trials
    completed."""
    return SearchSpec(
        parameters=(
            Parameter("learning_rate", "double", 5e-5, 2e-4, log=True),
            Parameter("per_device_train_batch_size", "discrete", choices=(16, 32)),
        ),
        objective=Objective("validation-accuracy", "maximize"),
        algorithm="random",
        max_trial_count=8,
        parallel_trial_count=1,
        max_failed_trial_count=3,
        early_stopping=EarlyStopping(min_trials_required=3, start_step=2),
        trial_options={"num_train_epochs": 1, "eval_steps": 25},
    )
