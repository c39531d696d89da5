"""tune: a real study whose trials run the real training CLI on a tiny random BERT, and the component.

One study shows the whole life of a tuning, because every trial costs a training process (~10 s of imports):
``python -m components.tune`` runs a first trial to completion, is killed with SIGKILL while the second
(deliberately poor: learning rate 1e-8, so its validation loss stays at the untrained model's while the sane
trial's falls; the learning rate may not exceed 1e-2, so a diverging trial is no longer possible) trains,
and is run again.  The re-run resumes the same study — the completed trial is not run again, the interrupted
one is failed, re-queued with its parameters, and pruned by the median rule at its first evaluation — and
returns the best parameters; the interrupted trial's training did not outlive the killed tuner; every trial
is an MLflow child run of the pipeline run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from components.common import tracking
from components.tune import core
from tests import testing

ROOT = Path(__file__).resolve().parents[2]
TRIAL_OPTIONS = (
    "trialOptions: {max_steps: 6, eval_steps: 2, per_device_train_batch_size: 16, warmup_ratio: 0, save_steps: 0,"
    " logging_steps: 100, early_stopping_patience: 0}\n"
)
#: Minimise validation loss (it never ties, unlike accuracy on an untrained tiny model); the median rule may
#: stop a trial from its first evaluation once one trial completed.  With seed 11 the random sampler draws
#: 1e-3 then 1e-8 (Optuna 5.0's RandomSampler), so the second trial is the poor one.
PRUNING_SPEC = (
    "objective: {type: minimize, objectiveMetricName: validation-loss}\n"
    "algorithm: {algorithmName: random}\n"
    "earlyStopping: {algorithmName: medianstop, algorithmSettings: {min_trials_required: 1, start_step: 1}}\n"
    "parameters: [{name: learning_rate, parameterType: discrete, feasibleSpace: {list: ['1e-3', '1e-8']}}]\n"
) + TRIAL_OPTIONS


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tune-data")
    tiny = testing.tiny_model(root / "tiny", dropout=0.0)
    texts, labels, facets = testing.synthetic_reviews(200, seed=9)
    frame = testing.features(texts, labels, 32, facets=facets).assign(split=["train"] * 160 + ["validation"] * 40)
    frame.to_parquet(root / "features.parquet")
    return {"features": str(root / "features.parquet"), "base_model": str(tiny), "max_seq_length": 32}


def _tuner(data: dict, out: Path, mlflow_uri: str) -> list[str]:
    return [
        sys.executable, "-m", "components.tune", "--features", data["features"], "--base-model", data["base_model"],
        "--max-seq-length", "32", "--tuning-trials", "2", "--tuning-spec", PRUNING_SPEC, "--seed", "11",
        "--mlflow-tracking-uri", mlflow_uri, "--pipeline-run-id", "run-7", "--output-dir", str(out),
    ]  # fmt: skip


def _processes_using(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow  # about 25-60 s: runs in CI's `-m slow` pass
def test_killed_study_resumes_prunes_the_poor_trial_and_returns_the_best(tmp_path: Path, data: dict) -> None:
    out, uri = tmp_path / "tune", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    tuner = subprocess.Popen(
        _tuner(data, out, uri), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    second = out / "trial_runs" / "trial-0001"
    deadline = time.monotonic() + 240
    while not (second / "train.log").exists() and tuner.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    tuner.send_signal(signal.SIGKILL)
    tuner.wait()
    assert tuner.returncode == -signal.SIGKILL, tuner.stderr.read().decode() if tuner.stderr else ""
    assert (out / "trial_runs" / "trial-0000" / "training_report.json").exists(), "no completed trial before the kill"
    deadline = time.monotonic() + 30  # the trial's training dies with its tuner (PR_SET_PDEATHSIG)
    while _processes_using(second) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_using(second), "the interrupted trial's training outlived the killed tuner"

    done = subprocess.run(_tuner(data, out, uri), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Trial 1 was left running by an interrupted tuning" in done.stderr

    study = optuna.load_study(study_name="tune-run-7", storage=f"sqlite:///{out / 'study.db'}")
    states = [(t.number, t.state.name, t.params, t.user_attrs["trial_key"]) for t in study.trials]
    assert states == [
        (0, "COMPLETE", {"learning_rate": 1e-3}, "trial-0000"),
        (1, "FAIL", {"learning_rate": 1e-8}, "trial-0001"),  # interrupted
        (2, "PRUNED", {"learning_rate": 1e-8}, "trial-0001"),  # its retry, stopped at its first evaluation
    ]
    assert (out / "trial_runs" / "trial-0000" / "train.log").read_text().count("$ python -m components.train") == 1
    assert second.joinpath("train.log").read_text().count("$ python -m components.train") == 2
    good, poor = study.trials[0], study.trials[2]
    assert len(good.intermediate_values) == 3 and len(poor.intermediate_values) == 1 and poor.value > good.value
    assert not (out / "trial_runs" / "trial-0000" / "model").exists()  # a finished trial's heavy files are removed

    report = json.loads((out / "tuning_report.json").read_text())
    assert json.loads(done.stdout) == {"best_params": {"learning_rate": 0.001}, "best_value": good.value}
    assert report["best_params"] == {"learning_rate": 0.001} and report["best_trial"] == 0
    assert report["trial_counts"] == {"complete": 1, "pruned": 1, "fail": 0, "retried": 1}
    assert report["resumed_trials"] == 1 and report["spec"]["earlyStopping"]["algorithmName"] == "medianstop"
    table = pd.read_parquet(out / "trials.parquet")
    assert table["state"].tolist() == ["COMPLETE", "FAIL", "PRUNED"] and table["retry_of"].tolist()[2] == 1
    html = (out / "tuning_report.html").read_text()
    assert html.count("<svg") == 2 and "PRUNED" in html and "retry of trial 1" in html

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs["pipeline-run-7"]
    assert parent.data.params["tune.best.learning_rate"] == "0.001" and parent.data.metrics["tune/trials_pruned"] == 1
    for key, status, state in (("trial-0000", "FINISHED", "COMPLETE"), ("trial-0001", "KILLED", "PRUNED")):
        child = runs[key]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert (child.info.status, child.data.tags["tune.state"]) == (status, state)
    assert runs["trial-0000"].data.params["train.learning_rate"] == "0.001"
    trial_artifacts = {a.path for a in client.list_artifacts(runs["trial-0000"].info.run_id)}
    assert "train" in trial_artifacts and "model" not in trial_artifacts  # a trial's metrics, not its model


def test_katib_trials_child_runs_are_ended_with_their_state(tmp_path: Path) -> None:
    """On Katib an early-stopped trial's pod is killed before its training CLI can end its MLflow child run;
    the tune step ends every trial's run from the Experiment's outcome, as the optuna engine does."""
    from mlflow import MlflowClient

    from components.tune import results as R

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    names = ["bert-tune-1a2b3c4d-0001-x", "bert-tune-1a2b3c4d-0001-y", "bert-tune-1a2b3c4d-0001-z"]
    for name in names:  # what each trial pod's training did: open its child run (it never ended it)
        assert tracking.PipelineRun(uri, pipeline_run_id="run-9", child=name).run_id
    records = [
        R.TrialRecord(i, state, {"learning_rate": 1e-4}, 0.5, key=name)
        for i, (name, state) in enumerate(zip(names, ("COMPLETE", "PRUNED", "FAIL"), strict=True))
    ]
    records.append(R.TrialRecord(3, "RUNNING", {}, key="bert-tune-1a2b3c4d-0001-w"))  # not ended: no run made
    core.close_trial_runs(uri, "run-9", records)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert [(runs[n].info.status, runs[n].data.tags["tune.state"]) for n in names] == [
        ("FINISHED", "COMPLETE"),
        ("KILLED", "PRUNED"),
        ("FAILED", "FAIL"),
    ]
    assert "bert-tune-1a2b3c4d-0001-w" not in runs


def test_component_without_tuning_returns_no_parameters(tmp_path: Path) -> None:
    from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics

    from components.tune.component import tune_hyperparameters

    kinds = {
        "report_json": Artifact,
        "report_html": HTML,
        "trials": Dataset,
        "metrics": Metrics,
        "summary_md": Markdown,
    }
    outputs = {name: cls(uri=str(tmp_path / name)) for name, cls in kinds.items()}
    for name, artifact in outputs.items():
        artifact.path = str(tmp_path / name)
    best = tune_hyperparameters.python_func(
        feature_store="", feast_config="local", base_model="", max_seq_length=128, seed=42, tuning_trials=0,
        tuning_spec="", study_storage="", study_name="", mlflow_tracking_uri="", pipeline_run_id="p", **outputs,
    )  # fmt: skip
    assert (best.best_params, best.best_value) == ({}, 0.0)
    assert json.loads((tmp_path / "report_json").read_text()) == {"status": "skipped", "trials": 0}
    assert "Tuning was off" in (tmp_path / "report_html").read_text()
    assert pd.read_parquet(tmp_path / "trials").empty
    assert "No tuning (tuning\\_trials 0)" in (tmp_path / "summary_md").read_text()
