"""`python -m components.train`: the train step for tuning trials, `torchrun` and the KFP component.

Reads the train and validation splits (from the Feast store that feast_ingest wrote, or from a features
Parquet with a `split` column), checks the MLflow store first, fine-tunes with `core.train`, writes the
model directory and a JSON report, and logs params, metrics, health, lineage tags and the model to the
pipeline run's MLflow run.  With more than one GPU visible it re-launches itself under `torchrun`
(one process per GPU, DDP).

    python -m components.train --feature-store runs/x/feature_store --output-dir runs/x/train \\
        --num-train-epochs 3 --learning-rate 5e-5 --pipeline-run-id abc123

Every option of `IOArguments`, `ModelArguments`, `DataArguments`, `TrainingArguments` and
`HealthArguments` is a flag (`--help` lists them; underscores and dashes both work): the same
declarations give the KFP component's parameters and `python -m pipelines run`'s training flags.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.common import options, tracking
from components.common.logs import configure_logging
from components.common.trainjob import ClusterPlacement
from components.train import core
from components.train.health import HealthArguments

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

log = logging.getLogger("components.train")


@dataclass
class IOArguments:
    """Where the data comes from, where results go, and the MLflow run they belong to."""

    feature_store: str = field(default="", metadata={"help": "Feast store directory written by feast_ingest."})
    feast_config: str = field(default="local", metadata={"help": "Feast configuration: local, cluster or a YAML."})
    features: str = field(default="", metadata={"help": "Or: features Parquet with a split column (featurize)."})
    model_dir: str = field(default="", metadata={"help": "Final model directory (default <output-dir>/model)."})
    report: str = field(default="", metadata={"help": "Report JSON (default <output-dir>/training_report.json)."})
    mlflow_tracking_uri: str = field(default="", metadata={"help": tracking.TRACKING_URI_HELP})
    mlflow: bool = field(default=True, metadata={"help": "Log params, metrics and the model to MLflow."})
    mlflow_experiment: str = field(default=tracking.DEFAULT_EXPERIMENT, metadata={"help": "MLflow experiment."})
    mlflow_child_run: str = field(default="", metadata={"help": "Log into this child run (tuning trials)."})
    pipeline_run_id: str = field(default="", metadata={"help": "Pipeline run id: one MLflow run per pipeline run."})
    data_hash: str = field(default="", metadata={"help": "Hash of the input data file (lineage tag)."})
    nproc_per_node: int = field(
        default=0, metadata={"help": "Processes (GPUs) for DDP; 0: every visible GPU (1 on CPU)."}
    )


ARGUMENT_CLASSES = (IOArguments, core.ModelArguments, core.DataArguments, core.TrainingArguments, HealthArguments)


def parser() -> options.OneLineParser:
    """The CLI's parser: one flag per option of `ARGUMENT_CLASSES`, dashes or underscores."""
    cli = options.OneLineParser(prog="python -m components.train", description=__doc__.split("\n")[0])
    for cls in ARGUMENT_CLASSES:
        group = cli.add_argument_group(cls.__name__, cls.__doc__)
        for f in fields(cls):
            options.add_argument(group, cls, f.name, underscores=True)
    return cli


def parse(argv: Sequence[str]) -> tuple[Any, ...]:
    """(IOArguments, ModelArguments, DataArguments, TrainingArguments, HealthArguments) from ``argv``."""
    return split_options(vars(parser().parse_args(list(argv))))


def option_names() -> set[str]:
    """Every training option's name (the fields of `ARGUMENT_CLASSES`)."""
    return {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}


def split_options(values: Mapping[str, Any]) -> tuple[Any, ...]:
    """The argument dataclasses from option values given by name (missing ones keep their defaults).

    Raises:
        ValueError: A name that is no training option, listing the valid ones.
    """
    unknown = sorted(set(values) - option_names())
    if unknown:
        raise ValueError(
            f"Unknown training option(s) {unknown}; valid: {', '.join(sorted(option_names()))} "
            "(python -m components.train --help)."
        )
    return tuple(options.from_mapping(cls, values, ignore_unknown=True) for cls in ARGUMENT_CLASSES)


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
    uri = tracking.resolve_tracking_uri(io.mlflow_tracking_uri)
    tracking.check_tracking_uri(uri)
    from components.common import features as F

    tags = tracking.lineage_tags(io.pipeline_run_id, io.data_hash, F.FEATURE_VIEW if io.feature_store else "")
    return tracking.PipelineRun(
        uri, io.mlflow_experiment, io.pipeline_run_id, {**tags, **extra_tags}, io.mlflow_child_run
    )


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


def run(
    io: IOArguments,
    model_args: core.ModelArguments,
    data_args: core.DataArguments,
    args: core.TrainingArguments,
    health_args: HealthArguments,
) -> core.TrainResult:
    """Check MLflow, read the splits, train, write the report and log everything; return the result."""
    main = int(os.environ.get("RANK", 0)) == 0  # (torchrun's rank: one process logs and writes the report)
    tracker = open_tracker(io, {"step": "train"}) if main else None
    train_rows, validation_rows = read_splits(io)
    started = {"done": False}

    def on_log(metrics: dict[str, float], step: int) -> None:
        if tracker is None:
            return
        if not started["done"]:  # the inputs are valid by now: open the run
            started["done"] = True
            tracker.log_params(
                {**vars(model_args), **vars(data_args), **vars(args), **vars(health_args)}, prefix="train."
            )
        tracker.log_metrics(metrics, step, prefix="train/")

    model_dir = Path(io.model_dir or Path(args.output_dir) / "model")
    try:
        result = core.train(train_rows, validation_rows, model_args, data_args, args, health_args, model_dir, on_log)
    except Exception:
        if tracker is not None and started["done"]:
            tracker.end("FAILED")
        raise
    report = result.to_dict()
    if tracker is not None:
        if not started["done"]:
            tracker.log_params(result.parameters, prefix="train.")
        tracker.log_metrics(_finite(result.metrics), result.global_step, prefix="train_final/")
        tags = {f"health.{rule}": "fired" if v["fired"] else "ok" for rule, v in result.health["rules"].items()}
        tracker.set_tags({**tags, "train.stop_reason": result.stop_reason, "base_model": result.base_model})
        report["mlflow"] = {
            "run_id": tracker.run_id,
            "experiment": tracker.experiment,
            "model_uri": tracker.log_artifacts(model_dir, "model"),
        }
        tracker.log_text(json.dumps(report, indent=1, default=str), "train/training_report.json")
        tracker.end()
    if main:
        path = Path(io.report or Path(args.output_dir) / "training_report.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, default=str))
    return result


def processes(io: IOArguments, args: core.TrainingArguments) -> int:
    """How many training processes: --nproc-per-node, else one per visible GPU (one on CPU)."""
    if io.nproc_per_node > 0:
        return io.nproc_per_node
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() and not args.use_cpu else 1


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Re-run this CLI under `torchrun` with ``nproc`` processes on this node; return its exit code."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "components.train",
        *argv,
    ]
    log.info("Launching %d training processes: %s", nproc, " ".join(command))
    return subprocess.run(command, check=False).returncode


def shutdown_distributed() -> None:
    """Leave the process group Trainer started under torchrun (each rank, before its process ends)."""
    if "torch" not in sys.modules:  # nothing was trained in this process (bad input, or the TrainJob path)
        return
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success, 2 on bad input (one line on stderr), torchrun's code otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    parsed = parse(argv)
    io, args = parsed[0], parsed[3]
    try:
        nproc = processes(io, args)
        if nproc > 1 and "WORLD_SIZE" not in os.environ:
            return launch(nproc, argv)
        run(*parsed)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    return 0


# --- what the KFP component calls ------------------------------------------------------------------


def component_options(
    parameters: Mapping[str, Any],
    hyperparameters: Mapping[str, Any],
    checkpoint_root: str,
    model_dir: str,
    report: str,
) -> dict[str, Any]:
    """The training options of the component's call: its parameters that are training options, by name,
    overridden by ``hyperparameters`` (from tuning).

    Checkpoints go to ``<checkpoint_root>/<pipeline_run_id>/train`` (a retried task resumes there), or to
    a temporary directory when ``checkpoint_root`` is empty.

    Raises:
        ValueError: A hyperparameter that is not a training option (the message lists the valid ones).
    """
    split_options(hyperparameters)  # unknown names fail here, with the list of valid ones
    values = {name: value for name, value in parameters.items() if name in option_names()}
    run_id = values.get("pipeline_run_id") or "run"
    if checkpoint_root:
        output_dir = str(Path(checkpoint_root) / run_id / "train")
    else:
        output_dir = tempfile.mkdtemp(prefix="bert-kfp-train-")
    return {**values, "output_dir": output_dir, "model_dir": model_dir, "report": report, **hyperparameters}


def run_component(values: Mapping[str, Any], keep_checkpoints: bool) -> None:
    """Train in this process, under torchrun when several GPUs are visible, or on several nodes with a Kubeflow
    Trainer TrainJob when the profile's placement (`components.common.trainjob.ENV`) asks for more than one;
    remove temporary checkpoints.

    Raises:
        ValueError: Bad input (see `run`).
        RuntimeError: The torchrun job or the TrainJob failed.
    """
    configure_logging()
    parsed = split_options(values)
    io, args = parsed[0], parsed[3]
    placement = ClusterPlacement.from_env()
    try:
        if placement is not None and placement.nodes > 1:  # the profile asks for several nodes: a TrainJob
            from components.train import trainjob

            trainjob.train_on_cluster(values, placement, keep_checkpoints=keep_checkpoints)
            return
        nproc = processes(io, args)
        if nproc > 1:
            code = launch(nproc, options.to_argv(values))
            if code:
                raise RuntimeError(f"torchrun with {nproc} processes failed with exit code {code}; see its log above.")
        else:
            run(*parsed)
    finally:
        if not keep_checkpoints:
            shutil.rmtree(args.output_dir, ignore_errors=True)


def metric_items(report_path: str) -> list[tuple[str, float]]:
    """The finite metrics of the report at ``report_path``, for the component's KFP Metrics."""
    return sorted(_finite(json.loads(Path(report_path).read_text())["metrics"]).items())
