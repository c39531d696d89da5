"""How the train step is started: `python -m components.train`, `torchrun`, the KFP component, a TrainJob.

Each way ends in `step.run` (read the splits, train, report, log).  ``main`` parses the command line (the options
of `components.common.training_options`: ``--help`` lists them; underscores and dashes both work) and, with more
than one GPU visible, re-launches itself under `torchrun` (one process per GPU, DDP).  The KFP component hands
its parameters on by name (`component_options`, `run_component`); on a multi-node profile it runs a Kubeflow
Trainer TrainJob (`trainjob`) instead.

    python -m components.train --feature-store runs/x/feature_store --output-dir runs/x/train \\
        --num-train-epochs 3 --learning-rate 5e-5 --pipeline-run-id abc123
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.common import options
from components.common.cluster import Cluster
from components.common.logs import configure_logging
from components.common.training_options import (
    MODULE,
    IOArguments,
    TrainingArguments,
    option_names,
    parse,
    split_options,
)
from components.train.step import finite, run

log = logging.getLogger("components.train")


def processes(io: IOArguments, args: TrainingArguments) -> int:
    """How many training processes: --nproc-per-node, else one per visible GPU (one on CPU)."""
    if io.nproc_per_node > 0:
        return io.nproc_per_node
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() and not args.use_cpu else 1


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Re-run this CLI under `torchrun` with ``nproc`` processes on this node; return its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command += ["-m", MODULE, *argv]
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
    overridden by ``hyperparameters`` (from tuning); checkpoints under ``checkpoint_root`` (a retried task resumes
    there), else in a temporary directory.

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
    return {
        **values,
        "output_dir": output_dir,
        "model_dir": model_dir,
        "report": report,
        **hyperparameters,
        "mlflow_log_model": False,  # evaluate logs and registers the model it evaluates: one upload, not two
    }


def run_component(values: Mapping[str, Any], keep_checkpoints: bool) -> None:
    """Train in this process, under torchrun when several GPUs are visible, or on several nodes with a Kubeflow
    Trainer TrainJob when the profile (`components.common.cluster.ENV`) asks for more than one;
    remove temporary checkpoints.

    Raises:
        ValueError: Bad input (see `run`).
        RuntimeError: The torchrun job or the TrainJob failed.
    """
    configure_logging()
    parsed = split_options(values)
    io, args = parsed[0], parsed[3]
    cluster = Cluster.from_env()
    try:
        if cluster is not None and cluster.nodes > 1:  # the profile asks for several nodes: a TrainJob
            from components.train import trainjob

            trainjob.train_on_cluster(values, cluster, keep_checkpoints=keep_checkpoints)
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
    return sorted(finite(json.loads(Path(report_path).read_text())["metrics"]).items())
