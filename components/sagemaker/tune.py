"""KFP component: the hyper-parameter search as a SageMaker automatic model tuning job."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Output

from components.common.image import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def tune_on_sagemaker(
    feature_store: str,
    feast_config: str,
    base_model: str,
    max_seq_length: int,
    seed: int,
    tuning_trials: int,
    tuning_spec: str,
    pipeline_run_id: str,
    mlflow_tracking_uri: str,
    report_json: Output[Artifact],
    report_html: Output[HTML],
    trials: Output[Dataset],
    metrics: Output[Metrics],
    summary_md: Output[Markdown],
) -> NamedTuple("TuneOutputs", [("best_params", dict), ("best_value", float)]):
    """Search training hyper-parameters with SageMaker automatic model tuning; every trial is a training job.

    The spec is the one of the other engines (random → Random, bayesianoptimization → Bayesian, hyperband →
    Hyperband, grid → Grid, medianstop → early stopping Auto); trials run on the profile's
    ``sagemaker.tuning`` instances and come back in the same report shape.

    Args:
        feature_store: Feast store directory: ingest_features' `store` output (train and validation splits).
        feast_config: Feast configuration: local, cluster, or a feature_store.yaml path.
        base_model: Hugging Face model id or directory in the train image; empty: the bundled MiniLM.
        max_seq_length: Longer reviews are cut to this many tokens.
        seed: Seed of every trial's training.
        tuning_trials: Trials to run (the spec's maxTrialCount); 0: no tuning (best_params {}).
        tuning_spec: Search spec, YAML file or text in the shape of a Katib Experiment spec; empty: the default.
        pipeline_run_id: The pipeline run's id: names the tuning job (a retried task finds it) and its S3 folder.
        mlflow_tracking_uri: MLflow tracking URI (checked before the job starts; the search's algorithm, best
            parameters and trial counts go to the pipeline run's MLflow run); empty: $MLFLOW_TRACKING_URI.
        report_json: Tuning report JSON (summary.json's `tuning`): algorithm, trials, best params and value.
        report_html: Objective per trial, one slice per parameter, the trials table.
        trials: Trials table (Parquet): state, value, parameters, training job.
        metrics: Best value and trials by state.
        summary_md: Trials by state and the best parameters, for the dashboard.
    """
    parameters = dict(locals())  # the options by name
    from components.common import options, tracking
    from components.sagemaker import aws, core
    from components.sagemaker.settings import SageMakerSettings
    from components.tune import core as tune_core
    from components.tune import report

    settings = SageMakerSettings.from_env()
    config = options.from_mapping(tune_core.TuneConfig, parameters, ignore_unknown=True)
    data = {k: v for k, v in parameters.items() if k in tune_core.TRIAL_DATA_OPTIONS}
    uri = tracking.usable_tracking_uri(mlflow_tracking_uri)  # before the job starts: a bad URI costs no SageMaker time
    outcome = core.tune(settings, aws.clients(settings), config, data, settings.image("train"), tracking_uri=uri)
    tune_core.write_outputs(outcome, report_json.path, trials.path, report_html.path)
    for name, value in outcome.headline().items():
        metrics.log_metric(name, value)
    report.write_summary(summary_md.path, outcome.headline(), outcome.best_params)
    outputs = NamedTuple("TuneOutputs", [("best_params", dict), ("best_value", float)])  # noqa: UP014
    return outputs(outcome.best_params, outcome.best_value)
