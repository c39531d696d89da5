"""``summary.json`` (DESIGN §4): what a local run ends with, built from the steps' reports, and the run's last lines.

A succeeded run's summary holds the run's facts (status, when, how long, where, every parameter) and, under each
step's key, that step's report as its descriptor in `pipelines.steps` says (``summary``, ``output``, ``report``,
``summarise``).  A run that failed or was stopped gets `ended`.  The file is written atomically.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines import steps

FILE = "summary.json"
#: Where a local run copies the steps' HTML reports with an ``.html`` name (kfp.local's artifact files have no
#: extension, so a browser shows them as text).
REPORTS = "reports"


def read_report(step: steps.Step, outputs: Mapping[str, Any]) -> tuple[Any, Path | None]:
    """A step's report from the pipeline's outputs: the JSON in its artifact (and the artifact's path), or the
    JSON text its component returned (and None)."""
    value = outputs[step.output]
    if step.report == steps.RETURNED:
        return json.loads(value), None
    path = Path(value.path)
    return json.loads(path.read_text()), path


def copy_html(step: steps.Step, report_path: Path, output: Path) -> dict[str, str]:
    """Copy each HTML output of ``step`` (beside its report artifact) to ``<output>/reports/<summary>.html``
    (``<summary>-<output name>.html`` when it has several); output name → the copy's absolute path."""
    copies = {}
    for name in step.html:
        target = output / REPORTS / (f"{step.summary}.html" if len(step.html) == 1 else f"{step.summary}-{name}.html")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report_path.with_name(name), target)
        copies[name] = str(target.resolve())
    return copies


def build_summary(
    arguments: Mapping[str, Any], output: Path, outputs: Mapping[str, Any], started: float
) -> dict[str, Any]:
    """The summary of a succeeded run from the pipeline's outputs (`pipelines.pipeline.PipelineOutputs`).

    Args:
        arguments: Every pipeline parameter's value.
        output: The run directory.
        outputs: The pipeline task's outputs, by name.
        started: When the run started (`time.time`).
    """
    summary: dict[str, Any] = {
        "status": "succeeded",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "output_dir": str(output.resolve()),
        "parameters": dict(arguments),
    }
    for step in steps.STEPS:
        if step.summary:
            report, path = read_report(step, outputs)
            summary[step.summary] = step.summarise(report, arguments, path)
            if step.html and path is not None:
                summary[step.summary].update(copy_html(step, path, output))
    return summary


def ended(status: str, error: str, arguments: Mapping[str, Any], output: Path) -> dict[str, Any]:
    """The summary of a run that did not succeed: ``failed``, ``interrupted`` or ``terminated``, and why."""
    return {"status": status, "error": error, "output_dir": str(output.resolve()), "parameters": dict(arguments)}


def write_summary(output: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically, so a reader never sees half of it."""
    path = output / FILE
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):  # (a full disk leaves it empty or cut short)
            tmp.unlink(missing_ok=True)
        raise
    return path


def log_parameters(summary: Mapping[str, Any]) -> None:
    """Every pipeline parameter of a succeeded run as a ``pipeline.<name>`` param of its MLflow run (the steps log
    only their own options), found by evaluate's ``mlflow_run``; nothing when evaluate logged no run."""
    from components.common import tracking

    run = (summary.get("evaluation") or {}).get("mlflow_run") or {}
    if run.get("run_id") and run.get("tracking_uri"):
        mlflow_run = tracking.PipelineRun(run["tracking_uri"], _run_id=run["run_id"])
        with warnings.catch_warnings():  # (SQLAlchemy's deprecation notes on MLflow's store: not the user's business)
            warnings.simplefilter("ignore", DeprecationWarning)
            mlflow_run.log_params(summary.get("parameters") or {}, prefix="pipeline.")


def deployment_line(deployment: dict[str, Any]) -> str:
    """One line on the deployment: what was deployed where and how it went, or why nothing was."""
    version = f"version {deployment.get('model_version')} of {deployment.get('registered_model')}"
    if deployment.get("decision") != "deployed":
        return f"Deployment: skipped ({version} stays challenger) — {deployment.get('reason', 'no reason given')}"
    outcome = f", {deployment['outcome']}" if deployment.get("outcome") else ""
    return f"Deployment: deployed {version} ({deployment.get('backend')}{outcome}) — {deployment.get('message', '')}"


def print_ending(summary_path: Path) -> None:
    """The run's last lines: evaluate's warnings, the MLflow run, the deployment, and where the summary is."""
    summary = json.loads(summary_path.read_text())
    evaluation = summary.get("evaluation") or {}
    for warning in evaluation.get("warnings") or []:
        print(f"warning: {warning}")
    run = evaluation.get("mlflow_run") or {}
    if run.get("url"):
        hint = f" (open the UI with: {run['ui_command']})" if run.get("ui_command") else ""
        print(f"MLflow run {run.get('run_name') or run.get('run_id')}: {run['url']}{hint}")
    print(deployment_line(summary.get("deployment") or {}))
    print(f"Pipeline succeeded. Summary: {summary_path.resolve()}")
