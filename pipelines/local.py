"""Run the pipeline on this machine with `kfp.local` and write `summary.json`.

The very same components as on a cluster run, each in a subprocess of this virtualenv
(`SubprocessRunner(use_venv=False)`); their artifacts land under ``<output>/artifacts``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.common import schema, tracking
from components.featurize import core as featurize_core
from components.prepare_data import core as prepare_core

_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


@dataclass
class RunOptions:
    """What `python -m pipelines run` was asked to do; pipeline arguments come from here."""

    data: str
    output: Path
    prepare: prepare_core.PrepareConfig = field(default_factory=prepare_core.PrepareConfig)
    max_abs_ci: float = 1.0
    max_abs_dpl: float = 1.0
    featurize: featurize_core.FeaturizeConfig = field(default_factory=featurize_core.FeaturizeConfig)
    #: Feast configuration: `local` (SQLite + Parquet under the run directory) or a feature_store.yaml.
    feast_config: str = "local"
    #: Training settings; None: the pipeline's defaults (which are the train step's).
    epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    health_policy: str = "report"
    #: MLflow tracking URI; empty: $MLFLOW_TRACKING_URI, else the embedded SQLite store (user-level).
    mlflow_tracking_uri: str = ""
    min_accuracy: float = 0.33

    @property
    def feature_store_dir(self) -> Path:
        return (self.output / "feature_store").resolve()

    def pipeline_arguments(self) -> dict[str, Any]:
        p, f = self.prepare, self.featurize
        arguments = {
            "data": self.data,
            "text_column": p.text_column,
            "rating_column": p.rating_column,
            "label_column": p.label_column or "",
            "facet_column": p.facet_column,
            "group_column": p.group_column or "",
            "min_facet_rows": p.min_facet_rows,
            "balance": p.balance,
            "max_rows": p.max_rows or 0,
            "seed": p.seed,
            "max_abs_ci": self.max_abs_ci,
            "max_abs_dpl": self.max_abs_dpl,
            "base_model": f.base_model,
            "max_seq_length": f.max_seq_length,
            "validation_fraction": f.validation_fraction,
            "test_fraction": f.test_fraction,
            "feature_store_dir": str(self.feature_store_dir),
            "feast_config": self.feast_config,
            "feast_offline_path": "",
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "health_policy": self.health_policy,
            "checkpoint_root": str((self.output / "checkpoints").resolve()),
            "mlflow_tracking_uri": self.mlflow_tracking_uri,
            "min_accuracy": self.min_accuracy,
        }
        return {name: value for name, value in arguments.items() if value is not None}


class PipelineFailed(RuntimeError):
    """A step of the local run failed; the message is the step's own error."""


class _Tee(io.TextIOBase):
    """Passes the steps' log through to the terminal and remembers the last error line in it."""

    def __init__(self, target: io.TextIOBase) -> None:
        self.target = target
        self.last_error: str | None = None
        self._partial = ""

    def write(self, text: str) -> int:
        self.target.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            match = _ERROR_LINE.match(line.strip())
            if match:
                self.last_error = f"{match.group(1)}: {match.group(2)}"
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def _read_json(artifact: Any) -> dict:
    return json.loads(Path(artifact.path).read_text())


def build_summary(options: RunOptions, outputs: Any, started: float) -> dict[str, Any]:
    """`summary.json` (DESIGN §4) from the pipeline's output artifacts."""
    data = _read_json(outputs["data_report"])
    bias = _read_json(outputs["bias_report"])
    return {
        "status": "succeeded",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "output_dir": str(options.output.resolve()),
        "parameters": options.pipeline_arguments(),
        "data": data,
        "bias": {
            "facet": options.prepare.facet_column,
            "label": bias["label"],
            "positive_label": schema.SENTIMENTS[schema.POSITIVE_LABEL],
            "positive_label_value": schema.POSITIVE_LABEL,
            "group": bias["group"] and options.prepare.group_column,
            "rows": bias["rows"],
            "facet_rows": bias["facet_rows"],
            "metrics": bias["metrics"],
            "report_html": str(Path(outputs["bias_report"].path).with_name("report_html")),
        },
        "features": _read_json(outputs["features_report"]),
        "feature_store": _read_json(outputs["feature_store_report"]),
        "training": _read_json(outputs["training_report"]),
        "evaluation": _read_json(outputs["evaluation_report"]),
    }


def write_summary(output: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically, so a reader never sees half of it."""
    path = output / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)
    return path


def run_pipeline(options: RunOptions) -> Path:
    """Validate, run every step locally, write `summary.json`; return its path.

    Raises:
        ValueError: bad input, found before anything is written.
        PipelineFailed: a step failed; `summary.json` then says ``"status": "failed"``.
    """
    from kfp import local

    from pipelines.pipeline import build_pipeline

    started = time.time()
    # Fail fast, before any output exists: the data, the featurization settings, the tokenizer.
    prepare_core.validate(options.data, options.prepare)
    options.featurize.validate()
    featurize_core.load_tokenizer(options.featurize.base_model)
    tracking.check_tracking_uri(tracking.resolve_tracking_uri(options.mlflow_tracking_uri))
    options.output.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(options.output / "artifacts"))
    tee = _Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(tee), warnings.catch_warnings():
            # The components' base image is this very virtualenv's code, and display names are cluster-only.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            task = build_pipeline(profile=None)(**options.pipeline_arguments())
    except RuntimeError as err:
        message = tee.last_error or str(err)
        write_summary(
            options.output,
            {
                "status": "failed",
                "error": message,
                "output_dir": str(options.output.resolve()),
                "parameters": options.pipeline_arguments(),
            },
        )
        raise PipelineFailed(message) from err
    return write_summary(options.output, build_summary(options, task.outputs, started))
