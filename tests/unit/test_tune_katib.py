"""The katib engine's Experiment, rendered without a server: feasible spaces, trial template, collector, GPU."""

from __future__ import annotations

import re
from typing import Any

import pytest

from components.common import trial_metrics
from components.tune import spec as S
from components.tune.engines import katib
from components.tune.engines import katib_experiment as K

GPU = {
    "accelerator_type": "nvidia.com/gpu",
    "accelerator_count": 2,
    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "memory_limit": "24Gi",
    "cpu_request": "4",
}


def _spec(**overrides: Any) -> S.SearchSpec:
    parameters = (
        S.Parameter("learning_rate", "double", 1e-5, 5e-5, log=True),
        S.Parameter("per_device_train_batch_size", "discrete", choices=(16, 32)),
        S.Parameter("num_train_epochs", "int", 1, 4, step=1),
        S.Parameter("warmup_ratio", "double", 0.0, 0.2, step=0.05),
        S.Parameter("lr_scheduler_type", "categorical", choices=("linear", "cosine")),
    )
    fields: dict[str, Any] = {
        "parameters": parameters,
        "max_trial_count": 6,
        "parallel_trial_count": 2,
        "max_failed_trial_count": 1,
        "trial_options": {"max_steps": 40},
    }
    return S.SearchSpec(**(fields | overrides))


#: Two numeric parameters, none log-uniform: a space Katib's goptuna service (cmaes, sobol) takes as it is.
UNIFORM = (
    S.Parameter("num_train_epochs", "int", 1, 4, step=1),
    S.Parameter("warmup_ratio", "double", 0.0, 0.2, step=0.05),
)


def _render(spec: S.SearchSpec | None = None, gpu: dict[str, Any] | None = None, **args: Any) -> dict[str, Any]:
    return K.render_experiment(
        spec or _spec(),
        name="bert-tune",
        namespace="team",
        image="registry.example/bert-train:1.2.0",
        training_args=args,
        gpu=gpu,
    )


def _container(experiment: dict[str, Any]) -> dict[str, Any]:
    return experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]


def test_feasible_spaces_are_strings_of_katib_types() -> None:
    spec = _render()["spec"]
    assert spec["parameters"] == [
        {
            "name": "learning_rate",
            "parameterType": "double",
            "feasibleSpace": {"min": "1e-05", "max": "5e-05", "distribution": "logUniform"},
        },
        {"name": "per_device_train_batch_size", "parameterType": "discrete", "feasibleSpace": {"list": ["16", "32"]}},
        {"name": "num_train_epochs", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "4", "step": "1"}},
        {
            "name": "warmup_ratio",
            "parameterType": "double",
            "feasibleSpace": {"min": "0", "max": "0.2", "step": "0.05"},
        },
        {"name": "lr_scheduler_type", "parameterType": "categorical", "feasibleSpace": {"list": ["linear", "cosine"]}},
    ]
    assert (spec["maxTrialCount"], spec["parallelTrialCount"], spec["maxFailedTrialCount"]) == (6, 2, 1)
    assert spec["objective"]["objectiveMetricName"] == "validation-accuracy"
    assert spec["algorithm"]["algorithmName"] == "random"
    assert "earlyStopping" not in spec


def test_trial_template_runs_the_training_cli_with_every_parameter_referenced() -> None:
    experiment = _render(max_steps=60)  # a training arg overrides the spec's trialOptions
    template = experiment["spec"]["trialTemplate"]
    names = [p.name for p in _spec().parameters]
    assert [(p["name"], p["reference"]) for p in template["trialParameters"]] == [(n, n) for n in names]
    container = _container(experiment)
    assert template["primaryContainerName"] == container["name"]
    assert container["image"] == "registry.example/bert-train:1.2.0"
    command = container["command"]
    assert command[:3] == ["python", "-m", "components.train"]
    assert command[3:5] == ["--max-steps", "60"]
    placeholders = dict(zip(command[5::2], command[6::2], strict=True))
    assert placeholders == {
        "--learning-rate": "${trialParameters.learning_rate}",
        "--per-device-train-batch-size": "${trialParameters.per_device_train_batch_size}",
        "--num-train-epochs": "${trialParameters.num_train_epochs}",
        "--warmup-ratio": "${trialParameters.warmup_ratio}",
        "--lr-scheduler-type": "${trialParameters.lr_scheduler_type}",
    }
    job = template["trialSpec"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert template["successCondition"] == 'status.conditions.#(type=="Complete")#|#(status=="True")#'
    assert template["failureCondition"] == 'status.conditions.#(type=="Failed")#|#(status=="True")#'


def test_stdout_collector_filter_reads_the_training_metric_lines() -> None:
    collector = _render()["spec"]["metricsCollectorSpec"]
    assert collector["collector"] == {"kind": "StdOut"}
    (pattern,) = collector["source"]["filter"]["metricsFormat"]
    assert pattern == trial_metrics.KATIB_FILTER
    line = trial_metrics.format_line(3, 60, {"accuracy": 0.63125, "loss": 0.9})
    assert re.compile(pattern).groups == 2
    assert re.findall(pattern, line) == [("validation-accuracy", "0.631250"), ("validation-loss", "0.900000")]


def test_gpu_placement_and_none_without_gpu() -> None:
    pod = _render(gpu=GPU)["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "limits": {"nvidia.com/gpu": "2", "memory": "24Gi"},
        "requests": {"cpu": "4"},
    }
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == GPU["tolerations"]
    plain = _render()["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    assert "resources" not in plain["containers"][0]
    assert "nodeSelector" not in plain and "tolerations" not in plain


def test_early_stopping_and_algorithm_settings() -> None:
    spec = _spec(algorithm="tpe", algorithm_settings={"random_state": "3"}, early_stopping=S.EarlyStopping())
    rendered = _render(spec)["spec"]
    assert rendered["algorithm"] == {
        "algorithmName": "tpe",
        "algorithmSettings": [{"name": "random_state", "value": "3"}],
    }
    assert rendered["earlyStopping"]["algorithmName"] == "medianstop"


@pytest.mark.parametrize(
    ("algorithm", "settings", "rendered"),
    [
        ("tpe", {"random_state": "3", "n_ei_candidates": "12"}, {"random_state": "3", "n_EI_candidates": "12"}),
        ("bayesianoptimization", {"n_startup_trials": "4"}, {"n_initial_points": "4"}),
        ("multivariate-tpe", {"n_startup_trials": "4", "n_ei_candidates": "8"}, None),  # Katib's optuna: same names
        ("cmaes", {"sigma": "0.5"}, None),
    ],
)
def test_algorithm_settings_take_the_names_katibs_suggestion_service_reads(
    algorithm: str, settings: dict[str, str], rendered: dict[str, str] | None
) -> None:
    spec = _spec(algorithm=algorithm, algorithm_settings=settings, parameters=UNIFORM)
    got = _render(spec)["spec"]["algorithm"]["algorithmSettings"]
    assert {s["name"]: s["value"] for s in got} == (rendered or settings)


@pytest.mark.parametrize(
    ("algorithm", "settings", "match"),
    [
        ("tpe", {"n_startup_trials": "3"}, r"algorithmSettings\.n_startup_trials: Katib's tpe \(hyperopt suggestion"),
        ("tpe", {"random_state": "1", "n_startup_trials": "3"}, r"it takes random_state, n_ei_candidates — remove it"),
        ("hyperband", {"eta": "3"}, r"algorithmName: hyperband on Katib needs its resource as a search parameter"),
    ],
)
def test_what_katib_would_refuse_is_refused_before_anything_is_created(
    algorithm: str, settings: dict[str, str], match: str
) -> None:
    spec = _spec(algorithm=algorithm, algorithm_settings=settings)
    with pytest.raises(S.SpecError, match=match):
        katib.check(spec)
    with pytest.raises(S.SpecError, match=match):
        _render(spec)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"gpu": {"accelerator_type": "nvidia.com/gpu", "acelerator_count": 1}},
            r"gpu: unknown keys \['acelerator_count'\]",
        ),
        ({"gpu": {"accelerator_count": 1}}, "gpu.accelerator_type"),
        ({"gpu": {"accelerator_type": "nvidia.com/gpu", "accelerator_count": 0}}, "gpu.accelerator_count"),
        ({"image": "bert-train:latest"}, "image: a pinned"),
        ({"training_args": {"learning_rate": 1e-5}}, "learning_rate both searched and fixed"),
        ({"training_args": {"no_such_option": 1}}, "'no_such_option' is no training option"),
        ({"spec": _spec(parameters=(S.Parameter("use_cpu", "categorical", choices=("true", "false")),))}, "switch"),
        ({"spec": _spec(parameters=(S.Parameter("learning_rate", "double", 5e-5, 1e-5),))}, "inverted range"),
    ],
    ids=[
        "gpu-typo",
        "gpu-no-type",
        "gpu-zero",
        "latest-image",
        "searched-and-fixed",
        "unknown-option",
        "switch",
        "inverted",
    ],
)
def test_bad_input_is_a_value_error_naming_the_field(change: dict[str, Any], match: str) -> None:
    kwargs: dict[str, Any] = {
        "name": "bert-tune",
        "namespace": "team",
        "image": "registry.example/bert-train:1.2.0",
        "training_args": {},
        "gpu": None,
    }
    spec = change.pop("spec", _spec())
    with pytest.raises(ValueError, match=match):
        K.render_experiment(spec, **(kwargs | change))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda e: e["spec"].update(maxTrialCount="6"), r"spec.maxTrialCount"),
        (
            lambda e: e["spec"]["parameters"][0]["feasibleSpace"].update(min=1e-5),
            r"spec.parameters.0.feasibleSpace.min",
        ),
        (
            lambda e: e["spec"]["trialTemplate"].update(primaryContainer="x"),
            r"unknown field spec.trialTemplate.primaryContainer",
        ),
        (lambda e: e["spec"]["objective"].update(objectiveMetric="x"), r"unknown field spec.objective.objectiveMetric"),
    ],
    ids=["count-as-string", "min-as-number", "misspelt-template-field", "misspelt-objective-field"],
)
def test_katib_models_refuse_bad_fields(mutate: Any, match: str) -> None:
    experiment = _render()
    K.validate_experiment(experiment)
    mutate(experiment)
    with pytest.raises(ValueError, match=match):
        K.validate_experiment(experiment)


def test_optimal_trial_values_are_typed_by_the_parameter_types() -> None:
    experiment = _render()
    experiment["status"] = {
        "currentOptimalTrial": {
            "bestTrialName": "bert-tune-abc",
            "parameterAssignments": [
                {"name": "learning_rate", "value": "3.1e-05"},
                {"name": "per_device_train_batch_size", "value": "32"},
                {"name": "num_train_epochs", "value": "3"},
                {"name": "warmup_ratio", "value": "0.1"},
                {"name": "lr_scheduler_type", "value": "cosine"},
            ],
            "observation": {
                "metrics": [
                    {"name": "validation-accuracy", "latest": "0.7", "min": "0.6", "max": "0.74"},
                    {"name": "validation-loss", "latest": "0.5", "min": "0.45", "max": "0.9"},
                ]
            },
        }
    }
    result = K.optimal_trial(experiment)
    assert result.params == {
        "learning_rate": 3.1e-05,
        "per_device_train_batch_size": 32,
        "num_train_epochs": 3,
        "warmup_ratio": 0.1,
        "lr_scheduler_type": "cosine",
    }
    assert type(result.params["per_device_train_batch_size"]) is int
    assert result.value == 0.74  # maximize: the trial's best observation
    assert result.best_trial == "bert-tune-abc"


GRID = (
    S.Parameter("learning_rate", "double", 1e-5, 5e-5, step=1e-5),
    S.Parameter("per_device_train_batch_size", "discrete", choices=(16, 32)),
)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        # kubeflow/katib v0.19.0 pkg/suggestion/v1beta1/optuna/service.py _validate_grid_setting
        (
            {"algorithm": "grid", "parameters": GRID, "max_trial_count": 11},
            r"maxTrialCount: 11 is more than the grid's 10 points; .*lower maxTrialCount \(--tuning-trials\) to at "
            r"most 10",
        ),
        # pkg/suggestion/v1beta1/goptuna/service.go ValidateAlgorithmSettings
        (
            {"algorithm": "cmaes", "parameters": UNIFORM[:1] + GRID[1:]},
            r"cmaes on Katib needs at least two int or double parameters .* the spec has 1 \(num_train_epochs\)",
        ),
        # pkg/suggestion/v1beta1/goptuna/converter.go: DOUBLE is a UniformDistribution whatever its distribution
        ({"algorithm": "sobol"}, r"sobol on Katib samples learning_rate uniformly"),
        ({"algorithm": "cmaes"}, r"cmaes on Katib samples learning_rate uniformly"),
    ],
)
def test_search_spaces_katibs_suggestion_services_refuse_or_change_are_refused(
    overrides: dict[str, Any], match: str
) -> None:
    spec = _spec(**overrides)
    spec.validate()  # the engine-neutral spec is fine: the optuna engine runs it as it is
    with pytest.raises(S.SpecError, match=match):
        _render(spec)


@pytest.mark.parametrize("budget", [4, 10])
def test_a_grid_at_least_as_large_as_the_budget_is_what_katib_runs(budget: int) -> None:
    """A grid larger than maxTrialCount: Katib's optuna service accepts it (it runs that many of its points)."""
    spec = _spec(algorithm="grid", parameters=GRID, max_trial_count=budget)
    spec.validate()
    assert _render(spec)["spec"]["maxTrialCount"] == budget
    assert _render(_spec(algorithm="cmaes", parameters=UNIFORM))["spec"]["algorithm"]["algorithmName"] == "cmaes"
