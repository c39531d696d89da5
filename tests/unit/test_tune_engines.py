"""tune engines: each algorithm's Optuna sampler and pruner, and its Katib name (table-driven)."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
import pytest

from components.common import trial_metrics
from components.tune import spec as S
from components.tune.engines import katib
from components.tune.engines import optuna_engine as E
from components.tune.engines import optuna_mapping as M


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
    built = M.sampler(_spec(algorithm), seed=7)
    assert type(built) is sampler
    for name, value in attributes.items():
        assert getattr(built, name) == value
    assert katib.algorithm_name(algorithm) == algorithm
    if algorithm == "hyperband":  # Katib's Hyperband takes its resource as a search parameter: refused, clearly
        with pytest.raises(S.SpecError, match="hyperband on Katib needs its resource as a search parameter"):
            katib.algorithm_spec(_spec(algorithm, random_state=3))
        return
    katib_spec = _spec(algorithm, random_state=3)
    if algorithm == "cmaes":  # Katib's goptuna service wants two numeric dimensions; this spec has one
        with pytest.raises(S.SpecError, match="cmaes on Katib needs at least two int or double parameters"):
            katib.algorithm_spec(katib_spec)
        epochs = S.Parameter("num_train_epochs", "int", 1, 3)
        katib_spec = dataclasses.replace(katib_spec, parameters=(*katib_spec.parameters, epochs))
    assert katib.algorithm_spec(katib_spec) == {
        "algorithmName": algorithm,
        "algorithmSettings": [{"name": "random_state", "value": "3"}],
    }


def test_every_spec_algorithm_has_a_sampler_and_a_katib_name() -> None:
    assert set(M.SAMPLERS) == set(S.ALGORITHMS) == set(katib.ALGORITHM_NAMES)
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
    built = M.pruner(_spec(algorithm, early, **settings))
    assert type(built) is pruner
    for name, value in attributes.items():
        assert getattr(built, name) == value


def test_settings_reach_the_sampler() -> None:
    tpe = M.sampler(_spec("tpe", n_startup_trials=4, random_state=9), seed=1)
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
    d = M.distributions(spec)
    assert d["learning_rate"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert d["warmup_ratio"] == optuna.distributions.FloatDistribution(0.0, 0.2, step=0.05)
    assert d["num_train_epochs"] == optuna.distributions.IntDistribution(1, 3)
    assert d["per_device_train_batch_size"] == optuna.distributions.CategoricalDistribution([16, 32])
    grid = M.distributions(_spec("grid"))
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
        M.check(_spec("cmaes"))
        return
    with pytest.raises(S.SpecError, match="cmaes needs the `cmaes` package"):
        M.check(_spec("cmaes"))


# --- the engine's bookkeeping, with scripted trials ----------------------------------------------------------
# The trial runner is the engine's parameter (in the step: the training CLI in a process of its own, tested in
# test_tune_study.py); here it replays metric lines from a table, so budget, failure limit, goal, warm start
# and parallelism are checked in milliseconds.


class Scripted:
    """A trial runner whose objective per evaluation is ``curve(params)``; exit code ``fail(params)``."""

    def __init__(self, curve, fail=lambda params: 0) -> None:  # type: ignore[no-untyped-def]
        self.curve, self.fail, self.calls = curve, fail, []

    def __call__(self, key, params, on_metrics):  # type: ignore[no-untyped-def]
        from components.tune.trials import TrialRun

        self.calls.append((key, dict(params)))
        lines = []
        for i, value in enumerate(self.curve(params), start=1):
            line = trial_metrics.MetricLine(i, 2 * i, {"validation-accuracy": value})
            lines.append(line)
            if on_metrics(line):
                return TrialRun(-15, True, lines)
        return TrialRun(self.fail(params), False, lines)


def _settings(tmp_path, name: str = "s", **kwargs: Any) -> E.OptunaSettings:  # type: ignore[no-untyped-def]
    return E.OptunaSettings(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name=name, seed=1, **kwargs)


def _search(**overrides: Any) -> S.SearchSpec:
    values: dict[str, Any] = {"max_trial_count": 4, **overrides}
    base = S.SearchSpec(parameters=(S.Parameter("learning_rate", "double", 1e-5, 1e-3, log=True),), **values)
    base.validate()
    return base


def test_budget_best_value_and_resume_with_a_larger_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = Scripted(lambda p: [0.4, 0.5 + p["learning_rate"] * 100, 0.45])
    result = E.run(_search(), runner, _settings(tmp_path))
    assert len(runner.calls) == 4 and result.counts() == {"complete": 4, "pruned": 0, "fail": 0, "retried": 0}
    best = max(result.trials, key=lambda t: t.value or 0)
    assert result.best_trial == best.number and result.best_value == 0.5 + best.params["learning_rate"] * 100
    again = E.run(_search(), runner, _settings(tmp_path))  # the budget is spent: nothing runs
    assert len(runner.calls) == 4 and again.stop_reason.startswith("budget")
    more = E.run(_search().with_budget(6), runner, _settings(tmp_path))  # a larger budget: the rest only
    assert len(runner.calls) == 6 and len(more.trials) == 6
    assert len({c[1]["learning_rate"] for c in runner.calls}) == 6  # the resumed sampler does not repeat draws


def test_failed_trials_beyond_the_limit_fail_the_tuning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = Scripted(lambda p: [0.4], fail=lambda p: 1)
    with pytest.raises(RuntimeError, match=r"3 trials failed, more than maxFailedTrialCount \(2\)"):
        E.run(_search(max_failed_trial_count=2), runner, _settings(tmp_path))
    assert len(runner.calls) == 3
    silent = Scripted(lambda p: [])  # exits 0 without a metric line: failed too
    result = E.run(_search(max_trial_count=2), silent, _settings(tmp_path, "quiet"))
    assert [t.state for t in result.trials] == ["FAIL", "FAIL"] and "no objective value" in result.trials[0].error
    assert result.best_params == {} and result.stop_reason.endswith("no trial completed")


def test_goal_stops_the_search(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = Scripted(lambda p: [0.95])
    result = E.run(_search(objective=S.Objective(goal=0.9)), runner, _settings(tmp_path))
    assert len(runner.calls) == 1 and result.stop_reason == "goal"


def test_median_stop_prunes_a_trial_worse_than_the_median(tmp_path) -> None:  # type: ignore[no-untyped-def]
    curves = iter([[0.5, 0.6, 0.7], [0.5, 0.6, 0.7], [0.2, 0.2, 0.2], [0.5, 0.65, 0.8]])
    runner = Scripted(lambda p: next(curves))
    spec = _search(early_stopping=S.EarlyStopping(min_trials_required=2, start_step=2))
    result = E.run(spec, runner, _settings(tmp_path))
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert list(result.trials[2].intermediate) == [1, 2]  # not before start_step evaluations


def test_warm_start_from_an_earlier_study_and_another_search_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    E.run(_search(max_trial_count=3), Scripted(lambda p: [p["learning_rate"] * 100]), _settings(tmp_path, "first"))
    earlier = optuna.load_study(study_name="first", storage=f"sqlite:///{tmp_path / 'study.db'}").best_params
    runner = Scripted(lambda p: [0.5])
    result = E.run(_search(max_trial_count=2), runner, _settings(tmp_path, "second"))
    assert runner.calls[0][1] == earlier and result.warm_start == [result.trials[0].warm_start_from]
    assert result.trials[0].warm_start_from.startswith("first#")
    cold = Scripted(lambda p: [0.5])
    E.run(_search(max_trial_count=1), cold, _settings(tmp_path, "third", warm_start=False))
    assert cold.calls[0][1] != earlier
    other = _search(objective=S.Objective("validation-loss", "minimize"))
    with pytest.raises(ValueError, match=r"Study 'first' .* was made for another search"):
        E.run(other, runner, _settings(tmp_path, "first"))


def test_parallel_trials(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    active, peak = [0], [0]
    lock = threading.Lock()

    def curve(params):  # type: ignore[no-untyped-def]
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return [0.5]

    result = E.run(_search(parallel_trial_count=2), Scripted(curve), _settings(tmp_path))
    assert len(result.trials) == 4 and peak[0] == 2


def test_html_report_escapes_everything_and_charts_each_parameter() -> None:
    from components.tune import report
    from components.tune import results as R

    evil = "<script>alert(1)</script>"
    trials = [
        R.TrialRecord(0, "COMPLETE", {"learning_rate": 1e-4, "lr_scheduler_type": evil}, 0.61, {1: 0.5, 2: 0.61}),
        R.TrialRecord(1, "PRUNED", {"learning_rate": 1e-5, "lr_scheduler_type": "linear"}, 0.2, {1: 0.2}),
        R.TrialRecord(2, "FAIL", {"learning_rate": 3e-5, "lr_scheduler_type": "linear"}, error=evil),
    ]
    result = R.StudyResult(
        "optuna", evil, "sqlite:///x.db", "tpe", "validation-accuracy", "maximize", trials,
        {"learning_rate": 1e-4, "lr_scheduler_type": evil}, 0.61, 0, "budget",
    )  # fmt: skip
    html = report.render(result, log_params=["learning_rate"])
    assert "<script>" not in html and html.count("&lt;script&gt;") >= 4
    assert html.count("<svg") == 3  # objective per trial, and one slice per parameter
    assert result.counts() == {"complete": 1, "pruned": 1, "fail": 1, "retried": 0}
