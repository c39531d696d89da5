"""The tune step: run a Katib-style search (`components.tune.spec`) with the training CLI as its trial.

`TuneConfig` declares the step's options once (`components.common.options`).  `tune` checks everything
before the first trial starts — the spec, its parameter names and values against the training CLI's own
parser, the MLflow store — then runs the study with the ``optuna`` engine (or as a Katib Experiment on the
cluster when the profile's ``tuning.engine`` says katib: `engines.katib_engine`): every trial is
``python -m components.train`` in a process of its own (`components.tune.trials`), reading the train and
validation splits from the Feast store (or a features Parquet), logging into an MLflow child run of the
pipeline run (``trial-0003``), and printing the metric lines the engine prunes on.  `write_outputs` writes
the report JSON (summary.json's ``tuning``), the trials table (Parquet) and the HTML report.

Trials run in ``<output_dir>/trial_runs/<trial key>``, beside the outputs: the training's checkpoints (a
trial re-queued after an interruption resumes there), its report and log; a finished trial's model and
checkpoints are removed.  The component's ``output_dir`` is its task directory, the folder of its outputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from components.common import logs, options, tracking
from components.common import training_options as O
from components.common.cluster import Cluster
from components.common.schema import MAX_SEQ_LENGTH
from components.tune import results as R
from components.tune import spec as S
from components.tune import spec_loading, trials

log = logging.getLogger("components.tune")


@dataclass(frozen=True)
class TrialData:
    """The training options every trial gets from the step (the data and the model); same names and
    defaults as the training's own (a test compares them)."""

    feature_store: str = field(
        default="", metadata={"help": "Feast store directory written by feast_ingest (train and validation splits)."}
    )
    feast_config: str = field(default="local", metadata={"help": "Feast configuration: local, cluster or a YAML."})
    features: str = field(default="", metadata={"help": "Or: features Parquet with a split column (featurize)."})
    base_model: str = field(
        default="", metadata={"help": "Hugging Face model id or directory; empty: the bundled MiniLM."}
    )
    max_seq_length: int = field(
        default=MAX_SEQ_LENGTH, metadata={"help": "Cut longer reviews to this many tokens.", "min": 3}
    )


#: Training options the step hands every trial from its own parameters (the data, the model and the seed).
TRIAL_DATA_OPTIONS = (*(f.name for f in fields(TrialData)), "seed")


@dataclass(frozen=True)
class TuneConfig:
    """The tune step's options."""

    tuning_trials: int = field(
        default=0,
        metadata={"help": "Trials to run (the spec's maxTrialCount); 0: no tuning, train with the defaults.", "min": 0},
    )
    tuning_spec: str = field(
        default="",
        metadata={
            "help": "Search spec: a YAML file (or YAML text) in the shape of a Katib Experiment spec; empty: "
            "random search over learning rate and batch size, maximising validation accuracy."
        },
    )
    study_storage: str = field(
        default="",
        metadata={
            "help": "Optuna study database URL (sqlite:///…, postgresql://…, mysql://…); empty: study.db beside "
            "the tuning outputs. A run with the same storage and study name resumes the study."
        },
    )
    study_name: str = field(
        default="",
        metadata={
            "help": "Optuna study name; empty: tune-<pipeline run id> (a retry of the run resumes it). Name it, "
            "with a --study-storage every run reaches, to continue one study across runs."
        },
    )
    warm_start: bool = field(
        default=True,
        metadata={"help": "A new study starts with the best parameters of earlier studies in the same storage."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the sampler (and of every trial's training)."})
    mlflow_tracking_uri: str = field(default="", metadata={"help": tracking.TRACKING_URI_HELP})
    mlflow: bool = field(default=True, metadata={"help": "Every trial is an MLflow child run of the pipeline run."})
    pipeline_run_id: str = field(default="", metadata={"help": "Pipeline run id: one MLflow run per pipeline run."})

    def validate(self) -> None:
        """Bounds and choices; a ``study_storage`` SQLAlchemy cannot use, or (with trials to run) a SQLite
        file that cannot be written where it is, is refused before any step runs.

        Raises:
            ValueError: naming the flag.
        """
        options.check_fields(self)
        if self.study_storage.strip():
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError

            try:
                url = make_url(self.study_storage.strip())
                url.get_dialect()
            except (ArgumentError, NoSuchModuleError, ValueError) as error:
                raise ValueError(
                    f"{options.flag('study_storage')} {self.study_storage!r} is not a database URL SQLAlchemy can "
                    f"use ({error}); use sqlite:////absolute/path.db, postgresql://… or mysql://…"
                ) from None
            if self.tuning_trials and url.get_backend_name() == "sqlite":
                check_sqlite_storage(self.study_storage, url.database or "")

    def storage_url(self, output_dir: Path) -> str:
        return self.study_storage.strip() or f"sqlite:///{(output_dir / 'study.db').resolve()}"

    def name(self) -> str:
        return self.study_name.strip() or (f"tune-{self.pipeline_run_id}" if self.pipeline_run_id else "tune")


def check_sqlite_storage(storage: str, database: str) -> None:
    """A real write where the SQLite study database ``database`` (the URL's path) will be written; an
    in-memory database passes.

    Raises:
        ValueError: Its directory is missing or takes no new file (a read-only mount, /proc), or the file
            cannot be opened for writing — naming the flag.
    """
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    try:
        tracking.try_sqlite_write(path)
    except OSError as error:
        raise ValueError(
            f"{options.flag('study_storage')} {storage!r}: the SQLite database {str(path)!r} cannot be written "
            f"({error.strerror or error}; a real write in {str(path.parent.resolve())!r} failed); give a path in an "
            "existing, writable directory, e.g. sqlite:////absolute/path/study.db, or leave it empty"
        ) from None


@dataclass
class TuneOutcome:
    """What the component returns and writes."""

    best_params: dict[str, Any]
    best_value: float
    report: dict[str, Any]
    result: R.StudyResult | None = None

    def headline(self) -> dict[str, float]:
        """The step's KFP Metrics."""
        if self.result is None:
            return {}
        counts = self.result.counts()
        out = {f"trials_{k}": float(v) for k, v in counts.items()}
        if self.result.best_value is not None:
            out["best_value"] = float(self.result.best_value)
        return out


def load(config: TuneConfig, data: Mapping[str, Any] | None = None) -> S.SearchSpec:
    """The spec to run: `TuneConfig.tuning_spec` with the budget `TuneConfig.tuning_trials`, fully checked
    (training option names and values through the training CLI's parser).

    Raises:
        ValueError: A bad option or spec (`spec.SpecError`), naming the field.
    """
    config.validate()
    spec = spec_loading.load_spec(config.tuning_spec, config.tuning_trials or None)
    spec.validate()
    return check_training_options(spec, data)


#: The parameter types that fit a training option's kind (the hint of the error above).
_FITTING_TYPES = {"int": "int or discrete", "float": "double or discrete"}


def check_training_options(spec: S.SearchSpec, data: Mapping[str, Any] | None = None) -> S.SearchSpec:
    """The spec's parameters and trial options (and the trials' ``data`` options) against the training options'
    declaration (`components.common.training_options`: names, kinds, and each value through the CLI's parser);
    returns the spec with discrete values of the option's type (``1`` for a float option: ``1.0``).

    Raises:
        SpecError: A name that is no training option, an alias, one the tuner sets itself, a parameter type
            that does not fit the option's, or a value the CLI's own parser refuses.
    """
    fits = {"double": ("float",), "int": ("int", "float"), "discrete": ("int", "float")}
    for i, p in enumerate(spec.parameters):
        where = p.where(i)
        if p.name in S.RESERVED_OPTIONS:
            raise S.SpecError(f"tuning spec: {where}.name: the tuner sets {p.name} on every trial; it cannot be tuned")
        try:
            option = O.resolve(p.name)
        except ValueError as error:
            raise S.SpecError(f"tuning spec: {where}.name: {error}") from None
        if p.type in fits and option.kind not in fits[p.type]:
            raise S.SpecError(
                f"tuning spec: {where}.parameterType: {p.type} does not fit {option.flag}, which takes "
                f"{option.kind}{' ' + str(list(option.choices)) if option.choices else ''}; use "
                f"{_FITTING_TYPES.get(option.kind, 'categorical')}"
            )
        if option.kind == "bool" and not {str(c).lower() for c in p.choices} <= {"true", "false"}:
            raise S.SpecError(f"tuning spec: {where}.feasibleSpace.list: {option.flag} is a switch: true or false")
    for name in spec.trial_options:
        if name in S.RESERVED_OPTIONS:
            raise S.SpecError(f"tuning spec: trialOptions.{name}: the tuner sets it on every trial")
        try:
            O.resolve(name)
        except ValueError as error:
            raise S.SpecError(f"tuning spec: trialOptions.{name}: {error}") from None
    pairs = [(p.name, v) for p in spec.parameters for v in p.extremes()]
    pairs += list(spec.trial_options.items()) + list((data or {}).items())
    try:
        O.check_values(pairs)
    except ValueError as error:
        raise S.SpecError(f"tuning spec: a value the training CLI refuses: {error}") from None
    typed = []
    for p in spec.parameters:
        kind = O.resolve(p.name).kind
        if p.type == "discrete" and kind in ("int", "float"):
            p = replace(p, choices=tuple(int(v) if kind == "int" else float(v) for v in p.choices))
        typed.append(p)
    return replace(spec, parameters=tuple(typed))


# --- running ------------------------------------------------------------------------------------------------


@dataclass
class _Trials:
    """Runs one trial's training CLI for the engine: options, directory, MLflow child run, clean-up."""

    spec: S.SearchSpec
    data: dict[str, Any]
    root: Path
    tracking_uri: str  # "" without MLflow
    pipeline_run_id: str
    env: dict[str, str]

    def argv(self, key: str, params: Mapping[str, Any]) -> list[str]:
        directory = self.root / key
        values: dict[str, Any] = {
            **self.data,
            "metric_for_best_model": self.spec.objective.training_metric,
            **self.spec.trial_options,
            **params,
            "output_dir": str(directory),
            "report": str(directory / "training_report.json"),
            "model_dir": str(directory / "model"),
        }
        if self.tracking_uri:
            # a trial's metrics only: its model is discarded (the pipeline trains the best settings again)
            values.update(mlflow_tracking_uri=self.tracking_uri, mlflow_child_run=key, mlflow_log_model=False)
            if self.pipeline_run_id:
                values["pipeline_run_id"] = self.pipeline_run_id
        argv = O.to_argv(values)
        if not self.tracking_uri:
            argv.append("--no-mlflow")
        return argv

    def __call__(self, key: str, params: dict[str, Any], on_metrics: Any) -> trials.TrialRun:
        directory = self.root / key
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        # A line when the trial starts and ends, its training's progress lines between, and where it is when
        # it is silent for long (its start-up): progress lines, which the local run's terminal shows.
        progress = logs.Progress(key, every=logs.RELAY_EVERY_S)
        progress.say(f"{key}: started: {shown}")
        with progress:
            run = trials.run_training(
                self.argv(key, params),
                directory / "train.log",
                on_metrics,
                self.env,
                on_progress=lambda line: progress.say(f"{key}: {line}"),
            )
        state = "PRUNED" if run.pruned else "COMPLETE" if run.returncode == 0 else "FAIL"
        best = [e.metrics.get(self.spec.objective.metric) for e in run.evaluations]
        progress.say(
            f"{key}: {state.lower()} after {len(run.evaluations)} evaluation(s), {run.seconds:.0f} s"
            + (f", last {self.spec.objective.metric} {best[-1]:.4f}" if best and best[-1] is not None else "")
        )
        if run.returncode == 0 or run.pruned:  # keep report and log; a failed one keeps its checkpoints too
            for heavy in (directory / "model", directory / "checkpoints"):
                shutil.rmtree(heavy, ignore_errors=True)
        if self.tracking_uri:
            close_trial_run(self.tracking_uri, self.pipeline_run_id, key, state)
        return run


def close_trial_run(tracking_uri: str, pipeline_run_id: str, key: str, state: str) -> None:
    """Tag a trial's MLflow child run with its state and end it: FINISHED, KILLED (pruned: its process was
    stopped before it could end the run) or FAILED."""
    try:
        child = tracking.PipelineRun(tracking_uri, pipeline_run_id=pipeline_run_id, child=key)
        child.set_tags({"tune.state": state, "tune.trial": key})  # (finding the run marks it RUNNING)
        child.end({"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED"))
    except Exception as error:  # the tuning does not fail over a tag
        log.warning("Could not tag MLflow child run %s: %s", key, error)


def close_trial_runs(tracking_uri: str, pipeline_run_id: str, records: list[R.TrialRecord]) -> None:
    """`close_trial_run` for every trial that ended (the katib engine: after its Experiment)."""
    for trial in records:
        if trial.key and trial.state in ("COMPLETE", "PRUNED", "FAIL"):
            close_trial_run(tracking_uri, pipeline_run_id, trial.key, trial.state)


def _trial_env(parallel: int) -> dict[str, str]:
    env = dict(os.environ)
    if parallel > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def tune(config: TuneConfig, data: Mapping[str, Any], output_dir: str | Path) -> TuneOutcome:
    """Run the search (nothing at all when `TuneConfig.tuning_trials` is 0) with the profile's engine: optuna
    (trials in this process's machine) unless the profile in the environment (`components.common.cluster.ENV`)
    says katib (a Katib Experiment, `engines.katib_engine`).

    Args:
        config: The step's options.
        data: Training options every trial gets: where the splits are (``feature_store`` + ``feast_config``,
            or ``features``), ``base_model``, ``max_seq_length``, ``seed`` (see `TRIAL_DATA_OPTIONS`).
        output_dir: Trials' directories and, by default, the study database go here.

    Raises:
        ValueError: Bad options, spec or data options, an unusable MLflow store, a study of the same name made
            for another search — all before the first trial.
        RuntimeError: More trials failed than the spec allows; the Katib Experiment failed or timed out.
    """
    config.validate()
    if config.tuning_trials == 0:
        return TuneOutcome({}, 0.0, {"status": "skipped", "trials": 0})
    from components.tune.engines import katib, optuna_engine, optuna_mapping

    unknown = sorted(set(data) - set(TRIAL_DATA_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown trial data option(s) {unknown}; valid: {', '.join(TRIAL_DATA_OPTIONS)}.")
    data = {k: v for k, v in data.items() if v not in ("", None)}
    if bool(data.get("feature_store")) == bool(data.get("features")):
        raise ValueError("Pass exactly one of feature_store (Feast store directory) and features (Parquet).")
    spec = load(config, data)
    cluster = Cluster.from_env()
    engine = cluster.tuning.engine if cluster is not None else "optuna"
    if engine == "optuna":
        optuna_mapping.check(spec)
    else:
        katib.check(spec)
    tracking_uri = ""
    if config.mlflow:
        tracking_uri = tracking.usable_tracking_uri(config.mlflow_tracking_uri)
    if engine == "katib":  # the profile's choice: an Experiment on the cluster instead of trials in this pod
        from components.tune.engines import katib_engine

        assert cluster is not None
        result = katib_engine.run(
            spec, data, cluster, tracking_uri=tracking_uri, pipeline_run_id=config.pipeline_run_id
        )
        if tracking_uri:  # an early-stopped trial's pod was killed before its run could end
            close_trial_runs(tracking_uri, config.pipeline_run_id, result.trials)
        return outcome_of(spec, result, tracking_uri, config.pipeline_run_id)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = optuna_engine.OptunaSettings(
        storage=config.storage_url(out), study_name=config.name(), seed=config.seed, warm_start=config.warm_start
    )
    runner = _Trials(
        spec,
        dict(data),
        out / "trial_runs",
        tracking_uri,
        config.pipeline_run_id,
        _trial_env(spec.parallel_trial_count),
    )
    log.info(
        "Tuning: %s, %d trial(s), %s %s, study %s in %s",
        spec.algorithm,
        spec.max_trial_count,
        spec.objective.direction,
        spec.objective.metric,
        settings.study_name,
        optuna_engine.redact(settings.storage),
    )
    result = optuna_engine.run(spec, runner, settings)
    return outcome_of(spec, result, tracking_uri, config.pipeline_run_id)


def outcome_of(
    spec: S.SearchSpec, result: R.StudyResult, tracking_uri: str = "", pipeline_run_id: str = ""
) -> TuneOutcome:
    """The step's outputs from a study's result, whichever engine ran it (the SageMaker target's too); with
    ``tracking_uri``, the outcome logged on the pipeline run's MLflow run."""
    report = {"status": "completed", **result.to_dict(), "spec": spec.to_dict()}
    report["trials"] = [t.row() for t in result.trials]
    if tracking_uri:
        _log_parent(tracking_uri, pipeline_run_id, result)
    best_value = float(result.best_value) if result.best_value is not None else 0.0
    return TuneOutcome(dict(result.best_params), best_value, report, result)


def _log_parent(uri: str, pipeline_run_id: str, result: R.StudyResult) -> None:
    """The tuning's outcome on the pipeline run's MLflow run (``tune.*`` params, ``tune/*`` metrics)."""
    try:
        run = tracking.PipelineRun(uri, pipeline_run_id=pipeline_run_id, tags={"step": "tune"})
        run.log_params(
            {"algorithm": result.algorithm, "metric": result.metric, "study": result.study_name}
            | {f"best.{k}": v for k, v in result.best_params.items()},
            prefix="tune.",
        )
        metrics = {f"trials_{k}": float(v) for k, v in result.counts().items()}
        if result.best_value is not None:
            metrics["best_value"] = float(result.best_value)
        run.log_metrics(metrics, prefix="tune/")
    except Exception as error:
        log.warning("Could not log the tuning to MLflow: %s", error)


# --- outputs ------------------------------------------------------------------------------------------------


def write_outputs(
    outcome: TuneOutcome, report_json: str | Path, trials_path: str | Path, report_html: str | Path
) -> None:
    """The report JSON, the trials table (Parquet, one row per trial, ``param.<name>`` columns) and the HTML
    report (objective per trial, one slice per parameter, the trials table)."""
    import pandas as pd

    from components.tune import report

    for path in (report_json, trials_path, report_html):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_json).write_text(json.dumps(_clean(outcome.report), indent=1, default=str))
    rows = outcome.report.get("trials") if isinstance(outcome.report.get("trials"), list) else []
    frame = pd.DataFrame(rows)
    if "intermediate" in frame:
        frame = frame.drop(columns="intermediate")
    frame.to_parquet(trials_path, index=False)
    spec = outcome.report.get("spec") or {}
    log_params = [
        p["name"] for p in spec.get("parameters", []) if p.get("feasibleSpace", {}).get("distribution") == "logUniform"
    ]
    Path(report_html).write_text(report.render(outcome.result, log_params))


def _clean(value: Any) -> Any:
    """NaN and infinities as None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def from_parameters(parameters: Mapping[str, Any]) -> tuple[TuneConfig, dict[str, Any]]:
    """(TuneConfig, trial data options) from the component's parameters, by name."""
    config = options.from_mapping(TuneConfig, parameters, ignore_unknown=True)
    data = {k: v for k, v in parameters.items() if k in TRIAL_DATA_OPTIONS}
    return config, data
