"""Reading a search spec (`components.tune.spec.SearchSpec`): Katib-shaped YAML, or the default spec.

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

Numbers may be written as numbers or, as Katib writes them, as strings.  `parse_spec` reads a parsed
document and validates it (`SearchSpec.validate`: everything that needs no training CLI; the training
options are checked by `components.tune.core.check_training_options`); `load_spec` reads a YAML file or
text.  Every error is a `SpecError` (a `ValueError`) whose message starts with the field it is about.

The default spec (`default_spec`) mirrors the course's search (random search over the learning rate and
the batch size, maximise validation accuracy), scaled to the bundled MiniLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.tune.spec import (
    DISTRIBUTIONS,
    MEDIANSTOP_DEFAULTS,
    EarlyStopping,
    Objective,
    Parameter,
    SearchSpec,
    SpecError,
    field_error,
    to_number,
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


def _settings(raw: Any, where: str) -> dict[str, str]:
    """Katib's ``[{name: …, value: …}]`` (or a plain mapping) as a dict of strings."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if not isinstance(raw, list) or not all(isinstance(s, Mapping) and "name" in s for s in raw):
        raise field_error(where, "expected a list of {name: …, value: …}")
    return {str(s["name"]): str(s.get("value", "")) for s in raw}


def _parameter(raw: Any, index: int) -> Parameter:
    where = f"parameters[{index}]"
    if not isinstance(raw, Mapping):
        raise field_error(where, "expected a mapping with name, parameterType, feasibleSpace")
    unknown = sorted(set(raw) - {"name", "parameterType", "feasibleSpace"})
    if unknown:
        raise field_error(where, f"unknown key(s) {unknown}; valid: name, parameterType, feasibleSpace")
    name = str(raw.get("name") or "")
    where = f"{where} ({name})"
    kind = str(raw.get("parameterType", ""))
    space = raw.get("feasibleSpace") or {}
    if not isinstance(space, Mapping):
        raise field_error(f"{where}.feasibleSpace", "expected a mapping (min, max, step, list, distribution)")
    unknown = sorted(set(space) - {"min", "max", "step", "list", "distribution"})
    if unknown:
        raise field_error(
            f"{where}.feasibleSpace", f"unknown key(s) {unknown}; valid: min, max, step, list, distribution"
        )
    distribution = str(space.get("distribution") or "uniform")
    if distribution not in DISTRIBUTIONS:
        raise field_error(f"{where}.feasibleSpace.distribution", f"must be uniform or logUniform; got {distribution!r}")
    if kind in ("discrete", "categorical"):
        for key in ("min", "max", "step"):
            if key in space:
                raise field_error(f"{where}.feasibleSpace.{key}", f"a {kind} parameter takes a list, not {key}")
        values = space.get("list")
        if values is not None and not isinstance(values, list):
            raise field_error(f"{where}.feasibleSpace.list", f"expected a list, got {values!r}")
        choices: tuple[Any, ...] = tuple(values or ())
        if kind == "discrete":
            choices = tuple(to_number(v, f"{where}.feasibleSpace.list") for v in choices)
            choices = tuple(int(v) if float(v).is_integer() else v for v in choices)
        else:
            choices = tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in choices)
        return Parameter(name, kind, choices=choices)
    if "list" in space and kind in ("double", "int"):
        raise field_error(f"{where}.feasibleSpace.list", f"a {kind} parameter takes min and max, not a list")
    integer = kind == "int"
    low = to_number(space["min"], f"{where}.feasibleSpace.min", integer) if "min" in space else None
    high = to_number(space["max"], f"{where}.feasibleSpace.max", integer) if "max" in space else None
    step = to_number(space["step"], f"{where}.feasibleSpace.step", integer) if "step" in space else None
    return Parameter(name, kind, low, high, step, log=distribution == "logUniform")


def _integer(raw: Mapping[str, Any], key: str, default: int) -> int:
    if key not in raw or raw[key] is None:
        return default
    return int(to_number(raw[key], key, integer=True))


def parse_spec(raw: Any, max_trial_count: int | None = None) -> SearchSpec:
    """A `SearchSpec` from a parsed YAML document (a spec or a whole Katib Experiment); validated.

    ``max_trial_count`` (``--tuning-trials``) replaces the document's ``maxTrialCount`` before the checks, so a
    grid is checked against the budget that will run.

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
        raise field_error("objective", "expected a mapping (type, objectiveMetricName, goal)")
    goal = objective_raw.get("goal")
    objective = Objective(
        metric=str(objective_raw.get("objectiveMetricName") or Objective.metric),
        direction=str(objective_raw.get("type") or Objective.direction),
        goal=None if goal is None else to_number(goal, "objective.goal"),
        additional_metrics=tuple(map(str, objective_raw.get("additionalMetricNames") or ())),
    )
    algorithm_raw = raw.get("algorithm") or {}
    if not isinstance(algorithm_raw, Mapping):
        raise field_error("algorithm", "expected a mapping (algorithmName, algorithmSettings)")
    early = None
    if raw.get("earlyStopping"):
        early_raw = raw["earlyStopping"]
        if not isinstance(early_raw, Mapping):
            raise field_error("earlyStopping", "expected a mapping (algorithmName, algorithmSettings)")
        settings = _settings(early_raw.get("algorithmSettings"), "earlyStopping.algorithmSettings")
        unknown = sorted(set(settings) - set(MEDIANSTOP_DEFAULTS))
        if unknown:
            raise field_error(
                "earlyStopping.algorithmSettings",
                f"unknown setting(s) {unknown}; valid: {', '.join(MEDIANSTOP_DEFAULTS)}",
            )
        values = {
            k: int(to_number(settings.get(k, d), f"earlyStopping.algorithmSettings.{k}", integer=True))
            for k, d in MEDIANSTOP_DEFAULTS.items()
        }
        early = EarlyStopping(str(early_raw.get("algorithmName") or "medianstop"), **values)
    parameters_raw = raw.get("parameters") or []
    if not isinstance(parameters_raw, list):
        raise field_error("parameters", "expected a list")
    trial_options = raw.get("trialOptions") or {}
    if not isinstance(trial_options, Mapping):
        raise field_error("trialOptions", "expected a mapping of training option names to values")
    spec = SearchSpec(
        parameters=tuple(_parameter(p, i) for i, p in enumerate(parameters_raw)),
        objective=objective,
        algorithm=str(algorithm_raw.get("algorithmName") or "random"),
        algorithm_settings=_settings(algorithm_raw.get("algorithmSettings"), "algorithm.algorithmSettings"),
        max_trial_count=max_trial_count or _integer(raw, "maxTrialCount", SearchSpec.max_trial_count),
        parallel_trial_count=_integer(raw, "parallelTrialCount", SearchSpec.parallel_trial_count),
        max_failed_trial_count=_integer(raw, "maxFailedTrialCount", SearchSpec.max_failed_trial_count),
        early_stopping=early,
        trial_options={str(k): v for k, v in trial_options.items()},
    )
    spec.validate()
    return spec


def load_spec(source: str, max_trial_count: int | None = None) -> SearchSpec:
    """The spec in ``source``: a YAML file's path, YAML text, or empty for `default_spec`; ``max_trial_count``
    replaces its budget (see `parse_spec`).

    Raises:
        SpecError: An unreadable file, text that is not YAML, and everything `parse_spec` checks.
    """
    import yaml

    if not source.strip():
        spec = default_spec()
        return spec.with_budget(max_trial_count) if max_trial_count else spec
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
    return parse_spec(raw, max_trial_count)


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
