"""tune: the search spec and its bad input, the metric lines, the training CLI as the tuner reads it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.common import training_options as O
from components.common import trial_metrics
from components.train import cli as train_cli
from components.tune import core
from components.tune import spec as S
from components.tune import spec_loading as L


def _spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "objective": {"type": "maximize", "objectiveMetricName": "validation-accuracy"},
        "algorithm": {"algorithmName": "random"},
        "maxTrialCount": 4,
        "parameters": [
            {
                "name": "learning_rate",
                "parameterType": "double",
                "feasibleSpace": {"min": "5e-5", "max": "2e-4", "distribution": "logUniform"},
            },
            {"name": "per_device_train_batch_size", "parameterType": "discrete", "feasibleSpace": {"list": [16, 32]}},
        ],
    }
    raw.update(overrides)
    return raw


def _with_parameter(**space: Any) -> dict[str, Any]:
    kind = space.pop("type", "double")
    name = space.pop("name", "learning_rate")
    return _spec(parameters=[{"name": name, "parameterType": kind, "feasibleSpace": space}])


def test_katib_shaped_yaml_round_trips(tmp_path: Path) -> None:
    import yaml

    spec = L.parse_spec(_spec(earlyStopping={"algorithmName": "medianstop"}))
    assert spec.parameters[0].log and spec.parameters[0].low == 5e-5
    assert spec.parameters[1].choices == (16, 32)
    assert spec.early_stopping == S.EarlyStopping("medianstop", min_trials_required=3, start_step=4)  # Katib's defaults
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.to_dict()))
    assert L.load_spec(str(path)) == spec
    assert L.load_spec(yaml.safe_dump(spec.to_dict())) == spec  # YAML text works too
    experiment = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "spec": {**spec.to_dict(), "trialTemplate": {}},
    }
    assert L.parse_spec(experiment) == spec


def test_default_spec_mirrors_the_course_and_passes_the_training_cli() -> None:
    spec = core.load(core.TuneConfig(tuning_trials=5))
    assert spec == L.default_spec().with_budget(5)
    assert spec.algorithm == "random"  # the course's SageMaker HPT search
    assert spec.objective == S.Objective("validation-accuracy", "maximize")
    assert {p.name for p in spec.parameters} == {"learning_rate", "per_device_train_batch_size"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_with_parameter(min=2e-4, max=5e-5), r"parameters\[0\] \(learning_rate\)\.feasibleSpace: inverted range"),
        (_with_parameter(min=1e-4, max=1e-4), r"parameters\[0\] \(learning_rate\)\.feasibleSpace: empty range"),
        (_with_parameter(min=1e-4), r"feasibleSpace: a double parameter needs min and max"),
        (_with_parameter(min=0, max=1e-3, distribution="logUniform"), r"feasibleSpace\.min: a logUniform range"),
        (_with_parameter(min=0, max=1, distribution="normal"), r"feasibleSpace\.distribution: must be uniform or"),
        (_with_parameter(type="discrete", list=[]), r"feasibleSpace\.list: a discrete parameter needs a non-empty"),
        (_with_parameter(type="discrete", list=[1, 1]), r"feasibleSpace\.list: values repeat"),
        (_with_parameter(type="discrete", list=["a"]), r"feasibleSpace\.list: expected a number"),
        (_with_parameter(type="float", min=0, max=1), r"parameterType: must be one of double, int"),
        (_spec(algorithm={"algorithmName": "annealing"}), r"algorithm\.algorithmName: unknown algorithm 'annealing'"),
        (_spec(algorithm={"algorithmName": "tpe", "algorithmSettings": [{"name": "gamma", "value": "1"}]}),
         r"algorithm\.algorithmSettings\.gamma: not a setting of tpe"),
        (_spec(objective={"type": "maximize", "objectiveMetricName": "test-accuracy"}),
         r"objective\.objectiveMetricName: the training does not emit 'test-accuracy'"),
        (_spec(objective={"type": "larger", "objectiveMetricName": "validation-loss"}), r"objective\.type: must be"),
        (_spec(maxTrialCount=0), r"maxTrialCount: must be an integer of at least 1"),
        (_spec(maxFailedTrialCount=-1), r"maxFailedTrialCount: must be an integer of at least 0"),
        (_spec(earlyStopping={"algorithmName": "medianstop", "algorithmSettings": {"start_step": 0}}),
         r"earlyStopping\.algorithmSettings\.start_step: must be at least 1"),
        (_spec(earlyStopping={"algorithmName": "truncation"}), r"earlyStopping\.algorithmName: must be medianstop"),
        (_spec(algorithm={"algorithmName": "hyperband"}, earlyStopping={"algorithmName": "medianstop"}),
         r"earlyStopping: hyperband stops trials itself"),
        (_spec(algorithm={"algorithmName": "grid"}), r"\(learning_rate\)\.feasibleSpace\.step: a double"),
        (_spec(parameters=[]), r"parameters: at least one parameter"),
        (_spec(objectives={}), r"unknown key\(s\) \['objectives'\]"),
        ("just text", r"expected a mapping"),
    ],
)  # fmt: skip
def test_bad_spec_fails_naming_the_field(raw: Any, message: str) -> None:
    with pytest.raises(S.SpecError, match=message):
        L.parse_spec(raw)


def test_a_grid_larger_than_the_budget_is_a_subset_of_its_points() -> None:
    """Both engines run a grid larger than maxTrialCount (that many of its points); the budget's other side is the
    engine's to check (Katib refuses more trials than points: test_tune_katib.py)."""
    raw = _spec(
        algorithm={"algorithmName": "grid"},
        maxTrialCount=5,
        parameters=[
            {"name": "learning_rate", "parameterType": "double",
             "feasibleSpace": {"min": 1e-5, "max": 5e-5, "step": 1e-5}},
            {"name": "per_device_train_batch_size", "parameterType": "discrete", "feasibleSpace": {"list": [16, 32]}},
        ],
    )  # fmt: skip
    spec = L.parse_spec(raw)
    assert (spec.max_trial_count, spec.grid_size()) == (5, 10)
    assert spec.grid_space() == {
        "learning_rate": [1e-5, 2e-5, 3e-5, 4e-5, 5e-5],
        "per_device_train_batch_size": [16, 32],
    }
    assert L.parse_spec(raw, max_trial_count=3).max_trial_count == 3  # --tuning-trials 3
    spec_file = yaml.safe_dump(raw)
    assert core.load(core.TuneConfig(tuning_trials=4, tuning_spec=spec_file)).max_trial_count == 4


def test_unreadable_and_malformed_spec_files(tmp_path: Path) -> None:
    with pytest.raises(S.SpecError, match=r"cannot read 'no/such.yaml'"):
        L.load_spec("no/such.yaml")
    (tmp_path / "bad.yaml").write_text("parameters: [unclosed\n")
    with pytest.raises(S.SpecError, match=r"not valid YAML"):
        L.load_spec(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        ({"name": "learning_rte", "parameterType": "double", "feasibleSpace": {"min": 1e-5, "max": 1e-4}},
         r"parameters\[0\] \(learning_rte\)\.name: 'learning_rte' is no training option; valid: .*learning_rate"),
        ({"name": "batch_size", "parameterType": "discrete", "feasibleSpace": {"list": [8, 16]}},
         r"'batch_size' is an alias; use the option's name 'per_device_train_batch_size'"),
        ({"name": "output_dir", "parameterType": "categorical", "feasibleSpace": {"list": ["a", "b"]}},
         r"parameters\[0\] \(output_dir\)\.name: the tuner sets output_dir on every trial"),
        ({"name": "num_train_epochs", "parameterType": "double", "feasibleSpace": {"min": 1, "max": 3}},
         r"parameterType: double does not fit --num-train-epochs, which takes int; use int or discrete"),
        ({"name": "learning_rate", "parameterType": "double", "feasibleSpace": {"min": -1e-3, "max": 1e-3}},
         r"a value the training CLI refuses: argument --learning-rate.*must be above 0, got -0\.001"),
        ({"name": "learning_rate", "parameterType": "double", "feasibleSpace": {"min": 1e-5, "max": 0.1}},
         r"refuses: argument --learning-rate.*must be at most 0\.01, got 0\.1\. Fine-tuning BERT uses 1e-5"),
        ({"name": "lr_scheduler_type", "parameterType": "categorical", "feasibleSpace": {"list": ["linear", "step"]}},
         r"a value the training CLI refuses: argument --lr-scheduler-type.*must be one of linear, cosine.*got 'step'"),
        ({"name": "per_device_train_batch_size", "parameterType": "discrete", "feasibleSpace": {"list": [16, 24.5]}},
         r"a value the training CLI refuses: argument --batch-size.*expected int, got '24\.5'"),
        ({"name": "use_cpu", "parameterType": "categorical", "feasibleSpace": {"list": ["yes", "no"]}},
         r"--use-cpu is a switch: true or false"),
    ],
)  # fmt: skip
def test_parameters_are_checked_against_the_training_cli(parameter: dict, message: str) -> None:
    spec = L.parse_spec(_spec(parameters=[parameter]))
    with pytest.raises(S.SpecError, match=message):
        core.check_training_options(spec)


def test_trial_options_are_checked_and_discrete_values_typed() -> None:
    with pytest.raises(S.SpecError, match=r"trialOptions\.max_step: 'max_step' is no training option"):
        core.check_training_options(L.parse_spec(_spec(trialOptions={"max_step": 5})))
    with pytest.raises(S.SpecError, match=r"trialOptions\.report: the tuner sets it"):
        core.check_training_options(L.parse_spec(_spec(trialOptions={"report": "x.json"})))
    with pytest.raises(S.SpecError, match=r"refuses: argument --eval-steps.*must be at least 0, got -2"):
        core.check_training_options(L.parse_spec(_spec(trialOptions={"eval_steps": -2})))
    with pytest.raises(S.SpecError, match=r"trialOptions\.learning_rate: is also a parameter"):
        L.parse_spec(_spec(trialOptions={"learning_rate": 1e-4}))
    raw = _spec(
        parameters=[{"name": "weight_decay", "parameterType": "discrete", "feasibleSpace": {"list": [0, "0.01"]}}]
    )
    typed = core.check_training_options(L.parse_spec(raw))
    assert typed.parameters[0].choices == (0.0, 0.01) and all(isinstance(v, float) for v in typed.parameters[0].choices)


def test_the_tuner_reads_every_training_option_from_the_declaration() -> None:
    known = O.declared()
    assert set(known) == O.option_names()
    assert known["learning_rate"].kind == "float" and known["num_train_epochs"].kind == "int"
    assert known["lr_scheduler_type"].choices == ("linear", "cosine", "constant_with_warmup")
    assert known["use_cpu"].kind == "bool"
    assert O.to_argv({"use_cpu": "true", "deterministic": False, "learning_rate": 1e-4}) == [
        "--use-cpu", "--no-deterministic", "--learning-rate", "0.0001",
    ]  # fmt: skip
    parsed = O.parse(O.to_argv({"learning_rate": 3e-5, "per_device_train_batch_size": 8}))
    assert (parsed[3].learning_rate, parsed[3].per_device_train_batch_size) == (3e-5, 8)


def test_the_tuner_checks_values_without_running_the_training_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """No process is started (the check used to run ``python -m components.train --help``)."""
    import subprocess

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    raw = _spec(trialOptions={"warmup_ratio": 0.06, "use_cpu": True})
    assert core.check_training_options(L.parse_spec(raw), {"max_seq_length": 64}).trial_options["use_cpu"] is True
    with pytest.raises(S.SpecError, match=r"refuses: argument --max-seq-length.*must be at least 3, got 2"):
        core.check_training_options(L.parse_spec(_spec()), {"max_seq_length": 2})


def test_bad_tune_options() -> None:
    with pytest.raises(ValueError, match=r"--tuning-trials must be at least 0, got -1"):
        core.tune(core.TuneConfig(tuning_trials=-1), {"features": "x"}, "/nonexistent")
    with pytest.raises(ValueError, match=r"exactly one of feature_store .* and features"):
        core.tune(core.TuneConfig(tuning_trials=1), {"base_model": "x"}, "/nonexistent")
    assert core.tune(core.TuneConfig(tuning_trials=0), {}, "/nonexistent").best_params == {}  # no tuning: at once


# --- the metric lines ------------------------------------------------------------------------------------


def test_metric_line_round_trip_and_katib_filter() -> None:
    line = trial_metrics.format_line(3, 60, {"loss": 0.9123, "accuracy": 0.63125, "f1_macro": 0.5988})
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z trial-metrics evaluation=3 step=60 ", line)
    parsed = trial_metrics.parse_line(line)
    assert parsed == trial_metrics.MetricLine(
        3, 60, {"validation-loss": 0.9123, "validation-accuracy": 0.63125, "validation-f1_macro": 0.5988}
    )
    katib = re.compile(trial_metrics.KATIB_FILTER)
    assert katib.groups == 2  # Katib: exactly two groups, name and value
    body = line.split(" ", 1)[1]  # Katib takes the RFC 3339 time off first
    assert sorted(katib.findall(body)) == sorted((k, f"{v:.6f}") for k, v in parsed.metrics.items())
    assert set(trial_metrics.METRIC_NAMES) == {name for name, _ in katib.findall(body)}
    assert trial_metrics.parse_line("10:46:18 eval at step 2: loss 1.1 accuracy 0.3") is None
    assert trial_metrics.parse_line(line[:40]) is None  # a line cut short
    nan = trial_metrics.parse_line(trial_metrics.format_line(1, 2, {"loss": float("nan"), "accuracy": 0.5}))
    assert nan is not None and nan.metrics["validation-accuracy"] == 0.5


def test_training_prints_a_metric_line_per_evaluation(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from tests import testing

    tiny = testing.tiny_model(tmp_path / "tiny", dropout=0.0)
    texts, labels, facets = testing.synthetic_reviews(60, seed=1)
    frame = testing.features(texts, labels, 32, facets=facets).assign(split=["train"] * 40 + ["validation"] * 20)
    frame.to_parquet(tmp_path / "f.parquet")
    argv = ["--features", str(tmp_path / "f.parquet"), "--base-model", str(tiny), "--output-dir", str(tmp_path / "o"),
            "--no-mlflow", "--max-seq-length", "32", "--max-steps", "4", "--eval-steps", "2", "--batch-size", "8",
            "--save-steps", "0", "--logging-steps", "100"]  # fmt: skip
    assert train_cli.main(argv) == 0
    lines = [trial_metrics.parse_line(x) for x in capfd.readouterr().out.splitlines()]
    assert [(m.evaluation, m.step) for m in lines if m] == [(1, 2), (2, 4)]
    assert all(set(m.metrics) == set(trial_metrics.METRIC_NAMES) for m in lines if m)


@pytest.mark.parametrize("storage", ["bogus://x", "not a url"])
def test_unusable_study_storage_is_refused_naming_the_flag(storage: str) -> None:
    with pytest.raises(ValueError, match=rf"--study-storage '{storage}' is not a database URL SQLAlchemy can use"):
        core.load(core.TuneConfig(tuning_trials=2, study_storage=storage))
    assert core.load(core.TuneConfig(tuning_trials=2, study_storage="sqlite:////tmp/x.db")).max_trial_count == 2


@pytest.mark.parametrize(
    ("storage", "reason"),
    [
        ("sqlite:////proc/study.db", "No such file or directory"),  # /proc takes no new file, even from root
        ("sqlite:////no/such/dir/study.db", "No such file or directory"),  # SQLite creates no directory
    ],
)
def test_a_sqlite_study_storage_that_cannot_be_written_is_refused_before_any_trial(storage: str, reason: str) -> None:
    with pytest.raises(ValueError, match=rf"--study-storage '{storage}': the SQLite database .* cannot be written"):
        core.load(core.TuneConfig(tuning_trials=2, study_storage=storage))
    core.TuneConfig(tuning_trials=0, study_storage=storage).validate()  # no trials: the storage is not used


def test_the_study_storage_write_check_leaves_no_file(tmp_path: Path) -> None:
    core.TuneConfig(tuning_trials=2, study_storage=f"sqlite:///{tmp_path / 'study.db'}").validate()
    core.TuneConfig(tuning_trials=2, study_storage="sqlite:///:memory:").validate()
    assert list(tmp_path.iterdir()) == []
