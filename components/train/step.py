"""One training run as the train step does it: read the splits, check MLflow, train, write the report, log it.

`run` is what every way of starting the step ends in (`cli`: the command line, torchrun's processes, the KFP
component, each node of a TrainJob): the splits from the Feast store that feast_ingest wrote or from a features
Parquet with a `split` column, `core.train`, the JSON report, and params, metrics, health, lineage tags and (with
`--mlflow-log-model`, the CLI's default) the model directory in the pipeline run's MLflow run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from components.common import tracking
from components.common.logs import Progress, set_status
from components.common.training_options import (
    DataArguments,
    HealthArguments,
    IOArguments,
    ModelArguments,
    TrainingArguments,
)
from components.train import core

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd


def read_splits(io: IOArguments, splits: Sequence[str] = ("train", "validation")) -> list[pd.DataFrame]:
    """The requested splits, from the Feast store or the features Parquet.

    Raises:
        ValueError: Neither or both sources given, or a source without the data.
    """
    import pandas as pd

    from components.common import features as F

    if bool(io.feature_store) == bool(io.features):
        raise ValueError("Pass exactly one of --feature-store (Feast store directory) and --features (Parquet).")
    if io.feature_store:
        every = F.get_training_features(F.open_store(io.feature_store, io.feast_config))  # one read, all splits
        return [every[split] for split in splits]
    try:
        frame = pd.read_parquet(io.features)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read features {io.features!r} as Parquet: {error}") from error
    if F.SPLIT not in frame.columns:
        raise ValueError(f"Features {io.features!r} have no {F.SPLIT!r} column; pass the output of featurize.")
    return [frame[frame[F.SPLIT] == split].reset_index(drop=True) for split in splits]


def open_tracker(io: IOArguments, extra_tags: dict[str, str]) -> tracking.PipelineRun | None:
    """The MLflow run to log into (opened lazily), after checking the store is usable; None with --no-mlflow.

    Raises:
        ValueError: The tracking URI is unreachable or unusable (before anything is trained).
    """
    if not io.mlflow:
        return None
    uri = tracking.usable_tracking_uri(io.mlflow_tracking_uri)
    from components.common import features as F

    tags = tracking.lineage_tags(io.pipeline_run_id, io.data_hash, F.FEATURE_VIEW if io.feature_store else "")
    return tracking.PipelineRun(
        uri, io.mlflow_experiment, io.pipeline_run_id, {**tags, **extra_tags}, io.mlflow_child_run
    )


def finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


def run(
    io: IOArguments,
    model_args: ModelArguments,
    data_args: DataArguments,
    args: TrainingArguments,
    health_args: HealthArguments,
) -> core.TrainResult:
    """Check MLflow, read the splits, train, write the report and log everything; return the result.

    The main process says where it is at least every `components.common.logs.PROGRESS_EVERY_S` seconds: the
    training's step lines, and `Progress` lines while it reads, loads, evaluates or saves.
    """
    main = int(os.environ.get("RANK", 0)) == 0  # (torchrun's rank: one process logs and writes the report)
    with Progress("train") if main else contextlib.nullcontext():
        set_status("reading the splits")
        tracker = open_tracker(io, {"step": "train"}) if main else None
        splits = read_splits(io)
        set_status(f"loading the model for {len(splits[0])} training reviews")
        parameters = {**vars(model_args), **vars(data_args), **vars(args), **vars(health_args)}
        started = False

        def on_log(metrics: dict[str, float], step: int) -> None:
            nonlocal started
            if tracker is None:
                return
            if not started:  # the inputs are valid by now: open the run
                started = True
                tracker.log_params(parameters, prefix="train.")
            tracker.log_metrics(metrics, step, prefix="train/")

        model_dir = Path(io.model_dir or Path(args.output_dir) / "model")
        try:
            result = core.train(*splits, model_args, data_args, args, health_args, model_dir, on_log)
        except Exception:
            if tracker is not None and started:
                tracker.end("FAILED")
            raise
        set_status("writing the report and logging the run")
        report = result.to_dict()
        if tracker is not None:
            if not started:
                tracker.log_params(parameters, prefix="train.")
            tracker.log_metrics(finite(result.metrics), result.global_step, prefix="train_final/")
            tags = {f"health.{rule}": "fired" if v["fired"] else "ok" for rule, v in result.health["rules"].items()}
            tracker.set_tags({**tags, "train.stop_reason": result.stop_reason, "base_model": result.base_model})
            report["mlflow"] = {"run_id": tracker.run_id, "experiment": tracker.experiment}
            if io.mlflow_log_model:
                report["mlflow"]["model_uri"] = tracker.log_artifacts(model_dir, "model")
            tracker.log_text(json.dumps(report, indent=1, default=str), "train/training_report.json")
            tracker.end()
        if main:
            path = Path(io.report or Path(args.output_dir) / "training_report.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1, default=str))
        return result
