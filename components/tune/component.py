"""KFP component: Katib-style hyper-parameter search with the training CLI as its trial (Optuna in the pod, or a
Katib Experiment on the cluster when the profile's ``tuning.engine`` is katib)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Output

from components.common.image import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def tune_hyperparameters(
    feature_store: str,
    feast_config: str,
    base_model: str,
    max_seq_length: int,
    seed: int,
    tuning_trials: int,
    tuning_spec: str,
    study_storage: str,
    study_name: str,
    mlflow_tracking_uri: str,
    pipeline_run_id: str,
    report_json: Output[Artifact],
    report_html: Output[HTML],
    trials: Output[Dataset],
    metrics: Output[Metrics],
    summary_md: Output[Markdown],
) -> NamedTuple("TuneOutputs", [("best_params", dict), ("best_value", float)]):
    """Search training hyper-parameters on the train/validation splits; every trial is an MLflow child run.

    The engine is the profile's (``tuning.engine``): Optuna in this pod, or a Katib Experiment whose trials are
    Jobs (TrainJobs on a multi-node profile); its namespace, timeout and cleanup come from the profile too.

    Args:
        feature_store: Feast store directory: ingest_features' `store` output (train and validation splits).
        feast_config: Feast configuration: local, cluster, or a feature_store.yaml path.
        base_model: Hugging Face model id (local cache) or directory; empty: the bundled MiniLM.
        max_seq_length: Longer reviews are cut to this many tokens.
        seed: Seed of the sampler and of every trial's training.
        tuning_trials: Trials to run (the spec's maxTrialCount); 0: no tuning (best_params {}).
        tuning_spec: Search spec, YAML file or text in the shape of a Katib Experiment spec; empty: the default.
        study_storage: Optuna study database URL (resumable on a database every retry reaches); empty: SQLite
            beside the outputs.
        study_name: Optuna study name; empty: tune-<pipeline run id>, so that a retry of the run resumes its
            study. Name it (with a shared ``study_storage``) to resume the same study from another run.
        mlflow_tracking_uri: MLflow tracking URI; empty: $MLFLOW_TRACKING_URI (a KFP pod gets it from the
            profile), else the embedded SQLite store (locally).
        pipeline_run_id: The pipeline run's id (trials are child runs of its MLflow run).
        report_json: Tuning report JSON (summary.json's `tuning`): algorithm, trials, best params and value.
        report_html: Objective per trial, one slice per parameter, the trials table.
        trials: Trials table (Parquet): state, value, parameters, evaluations, MLflow child run.
        metrics: Best value and trials by state.
        summary_md: Trials by state and the best parameters, for the dashboard.
    """
    parameters = dict(locals())  # the options are handed on by name
    import os

    from components.tune import core, report

    config, data = core.from_parameters(parameters)
    outcome = core.tune(config, data, os.path.dirname(report_json.path))
    core.write_outputs(outcome, report_json.path, trials.path, report_html.path)
    for name, value in outcome.headline().items():
        metrics.log_metric(name, value)
    report.write_summary(summary_md.path, outcome.headline(), outcome.best_params)
    outputs = NamedTuple("TuneOutputs", [("best_params", dict), ("best_value", float)])  # noqa: UP014
    return outputs(outcome.best_params, outcome.best_value)
