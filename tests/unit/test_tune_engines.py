"""tune engines: each algorithm's Optuna sampler and pruner, and its Katib name (table-driven)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from components.common import trial_metrics
from components.tune import spec as S
from components.tune.engines import katib
from components.tune.engines import optuna_engine as E


def _spec(algorithm: str, early: bool = False, **settings: Any) -> S.SearchSpec:
    return S.SearchSpec(
        parameters=(
            S.Parameter("learning_rate", "double", 1e-5, 5e-5, step=1e-5),
            S.Parameter("per_device_train_batch_size", "discrete", choices=(16, 32)),
        ),
        algorithm=algorithm,
        algorithm_settings={k: str(v) for k, v in settings.items()},
        max_trial_count=10,
        early_stopping=S.EarlyStopping(min_trials_required=2, start_step=3) if early else None,
    )


@pytest.mark.parametrize(
    ("algorithm", "sampler", "attributes"),
    [
        ("random", optuna.samplers.RandomSampler, {}),
        ("grid", optuna.samplers.GridSampler, {}),
        ("tpe", optuna.samplers.TPESampler, {"_multivariate": False}),
        ("multivariate-tpe", optuna.samplers.TPESampler, {"_multivariate": True}),
        ("bayesianoptimization", optuna.samplers.GPSampler, {}),
        ("hyperband", optuna.samplers.RandomSampler, {}),
        ("cmaes", optuna.samplers.CmaEsSampler, {}),
        ("sobol", optuna.samplers.QMCSampler, {"_qmc_type": "sobol"}),
    ],
)
def test_algorithm_maps_to_its_sampler_and_katib_name(algorithm: str, sampler: type, attributes: dict) -> None:
    built = E.sampler(_spec(algorithm), seed=7)
    assert type(built) is sampler
    for name, value in attributes.items():
        assert getattr(built, name) == value
    assert katib.algorithm_name(algorithm) == algorithm
    assert katib.algorithm_spec(_spec(algorithm, random_state=3)) == {
        "algorithmName": algorithm,
        "algorithmSettings": [{"name": "random_state", "value": "3"}],
    }


def test_every_spec_algorithm_has_a_sampler_and_a_katib_name() -> None:
    assert set(E.SAMPLERS) == set(S.ALGORITHMS) == set(katib.ALGORITHM_NAMES)
    assert S.ALGORITHMS == (
        "random", "grid", "tpe", "multivariate-tpe", "bayesianoptimization", "hyperband", "cmaes", "sobol",
    )  # fmt: skip
    with pytest.raises(ValueError, match="Unknown algorithm 'annealing'"):
        katib.algorithm_name("annealing")


@pytest.mark.parametrize(
    ("algorithm", "early", "settings", "pruner", "attributes"),
    [
        ("random", False, {}, optuna.pruners.NopPruner, {}),
        ("tpe", True, {}, optuna.pruners.MedianPruner, {"_n_startup_trials": 2, "_n_warmup_steps": 3}),
        ("hyperband", False, {}, optuna.pruners.HyperbandPruner, {"_reduction_factor": 3, "_max_resource": "auto"}),
        ("hyperband", False, {"eta": 2, "r_l": 9}, optuna.pruners.HyperbandPruner,
         {"_reduction_factor": 2, "_max_resource": 9}),
    ],
)  # fmt: skip
def test_pruners(algorithm: str, early: bool, settings: dict, pruner: type, attributes: dict) -> None:
    built = E.pruner(_spec(algorithm, early, **settings))
    assert type(built) is pruner
    for name, value in attributes.items():
        assert getattr(built, name) == value


def test_settings_reach_the_sampler() -> None:
    tpe = E.sampler(_spec("tpe", n_startup_trials=4, random_state=9), seed=1)
    assert tpe._n_startup_trials == 4
    assert _spec("tpe", random_state=9).seed(1) == 9 and _spec("tpe").seed(1) == 1


def test_distributions() -> None:
    spec = S.SearchSpec(
        parameters=(
            S.Parameter("learning_rate", "double", 1e-5, 1e-3, log=True),
            S.Parameter("warmup_ratio", "double", 0.0, 0.2, step=0.05),
            S.Parameter("num_train_epochs", "int", 1, 3),
            S.Parameter("per_device_train_batch_size", "discrete", choices=(16, 32)),
            S.Parameter("lr_scheduler_type", "categorical", choices=("linear", "cosine")),
        )
    )
    d = E.distributions(spec)
    assert d["learning_rate"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert d["warmup_ratio"] == optuna.distributions.FloatDistribution(0.0, 0.2, step=0.05)
    assert d["num_train_epochs"] == optuna.distributions.IntDistribution(1, 3)
    assert d["per_device_train_batch_size"] == optuna.distributions.CategoricalDistribution([16, 32])
    grid = E.distributions(_spec("grid"))
    assert grid["learning_rate"] == optuna.distributions.CategoricalDistribution([1e-5, 2e-5, 3e-5, 4e-5, 5e-5])


def test_katib_early_stopping_objective_and_collector() -> None:
    spec = _spec("random", early=True)
    assert katib.early_stopping_spec(spec) == {
        "algorithmName": "medianstop",
        "algorithmSettings": [{"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "3"}],
    }
    assert katib.early_stopping_spec(_spec("random")) is None
    assert katib.objective_spec(spec) == {
        "type": "maximize",
        "objectiveMetricName": "validation-accuracy",
        "additionalMetricNames": ["validation-f1_macro", "validation-loss"],
    }
    collector = katib.metrics_collector_spec()
    assert collector["collector"] == {"kind": "StdOut"}
    assert collector["source"]["filter"]["metricsFormat"] == [trial_metrics.KATIB_FILTER]


def test_cmaes_without_its_package_fails_before_any_trial() -> None:
    import importlib.util

    if importlib.util.find_spec("cmaes") is not None:
        E.check(_spec("cmaes"))
        return
    with pytest.raises(S.SpecError, match="cmaes needs the `cmaes` package"):
        E.check(_spec("cmaes"))
