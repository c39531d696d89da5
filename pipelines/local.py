"""Run the pipeline on this machine with `kfp.local` and write `summary.json`.

The very same components as on a cluster run, each in a subprocess of this virtualenv
(`SubprocessRunner(use_venv=False)`); their artifacts land under ``<output>/artifacts``.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.common import schema, tracking
from components.featurize.core import load_tokenizer
from components.prepare_data import core as prepare_core
from components.prepare_data.core import PrepareConfig
from components.tune import core as tune_core
from pipelines import container_runner, parameters

#: `python -m pipelines run --runner`: how the steps run (`RunOptions.runner`).
RUNNERS = ("subprocess", "container")
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '([\w-]+)'")
_TASK_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_METRICS = re.compile(r"^\s*metrics: Metrics\(")
_METADATA = re.compile(r"metadata=(\{.*\}) \)$")
#: Training progress lines (components.train's log format: a time, then the message).
_PROGRESS = re.compile(r"^\s*\d\d:\d\d:\d\d ")
#: The figure each step's one-line report shows: (metric, label).
HEADLINES = {
    "prepare-reviews": (("rows_out", "rows"), ("facet_values", "facet values")),
    "check-bias": (("max_abs_CI", "max |CI|"), ("max_abs_DPL", "max |DPL|")),
    "featurize-reviews": (("rows_train", "train"), ("rows_validation", "validation"), ("rows_test", "test")),
    "ingest-features": (("rows_written", "rows written"),),
    "tune-hyperparameters": (("best_value", "best value"), ("trials_complete", "trials"), ("trials_pruned", "pruned")),
    "train-classifier": (("eval_accuracy", "validation accuracy"), ("samples_per_second", "samples/s")),
    "evaluate-classifier": (("accuracy", "test accuracy"), ("f1_macro", "macro-F1")),
    "deploy-model": (("smoke_reviews", "smoke reviews"), ("smoke_matched", "answered as evaluate")),
}


@dataclass
class RunOptions:
    """What `python -m pipelines run` was asked to do."""

    #: Reviews file or URI; None: synthetic sample reviews written into the run directory.
    data: str | None
    output: Path
    #: Pipeline parameters given by name (`pipelines.parameters.DECLARED_IN`); the rest keep their defaults.
    arguments: dict[str, Any] = field(default_factory=dict)
    #: Replace an earlier run in ``output`` (else such a directory is refused).
    overwrite: bool = False
    #: Print every step's full log (it always goes to ``<output>/logs``).
    verbose: bool = False
    #: ``subprocess``: every step in this virtualenv; ``container``: every step in its own container
    #: (`pipelines.container_runner`), given what the cluster profile ``profile`` gives its pod.
    runner: str = "subprocess"
    profile: str = container_runner.DEFAULT_PROFILE

    @property
    def feature_store_dir(self) -> Path:
        return (self.output / "feature_store").resolve()

    def pipeline_arguments(self) -> dict[str, Any]:
        """Every pipeline parameter's value for this run."""
        values = {
            name: parameters.default(name) for name in parameters.DECLARED_IN if name not in parameters.LOCAL_ONLY
        }
        return {
            **values,
            **self.arguments,
            "data": self.data,
            "feature_store_dir": str(self.feature_store_dir),
            "checkpoint_root": str((self.output / "checkpoints").resolve()),
        }


class PipelineFailed(RuntimeError):
    """A step of the local run failed; the message is the step's own error."""


class RunLog(io.TextIOBase):
    """What the steps print: every line to ``logs/run.log`` and the step's own ``logs/<step>.log``; to the
    terminal one line when a step starts and one when it ends (seconds and its headline figures), the
    training progress lines, and — with ``verbose`` — everything."""

    def __init__(self, terminal: io.TextIOBase, log_dir: Path, verbose: bool = False) -> None:
        self.terminal, self.log_dir, self.verbose = terminal, log_dir, verbose
        log_dir.mkdir(parents=True, exist_ok=True)
        self.everything = (log_dir / "run.log").open("a")
        self.step: tuple[str, float, Any] | None = None
        self.finished: tuple[str, str, float] | None = None
        self.last_error: str | None = None
        self._partial = ""
        self._metrics_next = False  # the finished step's Metrics output is being listed

    def write(self, text: str) -> int:
        if self.everything.closed:
            return len(text)
        if self.verbose:
            self.terminal.write(text)
        plain = _ANSI.sub("", text)  # the log files without kfp's colours
        self.everything.write(plain)
        lines = (self._partial + plain).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)
        return len(text)

    def _say(self, text: str) -> None:
        if not self.verbose:
            self.terminal.write(text + "\n")
            self.terminal.flush()

    def _line(self, line: str) -> None:
        if start := _TASK_START.search(line):
            self._end_step()
            name = start.group(1)
            self.step = (name, time.monotonic(), (self.log_dir / f"{name}.log").open("w"))
            self._say(f"▶ {name}")
            return
        if self.step is not None:
            self.step[2].write(line + "\n")
        if end := _TASK_END.search(line):
            if self.step is not None:
                self.finished = (end.group(1), end.group(2), time.monotonic() - self.step[1])
            if end.group(2) != "SUCCESS":
                self._report(None)
            return
        if self.finished and _METRICS.match(line):
            self._metrics_next = True
        if self.finished and self._metrics_next and (found := _METADATA.search(line)):
            self._metrics_next = False
            self._report(ast.literal_eval(found.group(1)))
            return
        if match := _ERROR_LINE.match(line.strip()):
            self.last_error = f"{match.group(1)}: {match.group(2)}"
        if _PROGRESS.match(line):
            self._say("    " + line.strip())

    def _report(self, metrics: dict[str, Any] | None) -> None:
        if self.finished is None:
            return
        name, state, seconds = self.finished
        figures = ""
        if metrics:
            shown = [(label, metrics[key]) for key, label in HEADLINES.get(name, ()) if key in metrics]
            figures = "  " + ", ".join(f"{label} {value:.4g}" for label, value in shown)
        mark = "✓" if state == "SUCCESS" else "✗"
        self._say(f"{mark} {name}  {seconds:.1f} s{figures}")
        self.finished = None

    def _end_step(self) -> None:
        self._report(None)
        if self.step is not None:
            self.step[2].close()
            self.step = None

    def flush(self) -> None:
        self.everything.flush()
        self.terminal.flush()

    def finish(self) -> None:
        """Close the log files (later writes, e.g. from loggers kfp leaves behind, are dropped)."""
        self._end_step()
        self.everything.close()


def _read_json(artifact: Any) -> dict:
    return json.loads(Path(artifact.path).read_text())


def build_summary(options: RunOptions, outputs: Any, started: float) -> dict[str, Any]:
    """`summary.json` (DESIGN §4) from the pipeline's output artifacts."""
    arguments = options.pipeline_arguments()
    data = _read_json(outputs["data_report"])
    bias = _read_json(outputs["bias_report"])
    return {
        "status": "succeeded",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "output_dir": str(options.output.resolve()),
        "parameters": arguments,
        "data": data,
        "bias": {
            "facet": arguments["facet_column"],
            "label": bias["label"],
            "positive_label": schema.SENTIMENTS[schema.POSITIVE_LABEL],
            "positive_label_value": schema.POSITIVE_LABEL,
            "group": bias["group"] and arguments["group_column"],
            "rows": bias["rows"],
            "facet_rows": bias["facet_rows"],
            "metrics": bias["metrics"],
            "report_html": str(Path(outputs["bias_report"].path).with_name("report_html")),
        },
        "features": _read_json(outputs["features_report"]),
        "feature_store": _read_json(outputs["feature_store_report"]),
        "tuning": _read_json(outputs["tuning_report"]),
        "training": _read_json(outputs["training_report"]),
        "evaluation": _read_json(outputs["evaluation_report"]),
        "deployment": json.loads(outputs["deployment"]),
    }


def write_summary(output: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically, so a reader never sees half of it."""
    path = output / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)
    return path


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an output location no run can use, before anything is written.

    Raises:
        ValueError: ``--output`` is a file, lies under a file, cannot be written, or holds an earlier run
            (without ``--overwrite``).
    """
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {str(output)!r} is a file, not a directory; choose a directory.")
    existing = output.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--output {str(output)!r} lies under the file {str(existing)!r}; choose a directory.")
    try:
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as err:
        raise ValueError(
            f"--output {str(output)!r}: cannot write in {str(existing)!r} ({err.strerror}); "
            "choose a writable directory."
        ) from err
    if (output / "summary.json").exists() and not overwrite:
        raise ValueError(
            f"--output {str(output)!r} holds an earlier run (summary.json); choose a new directory, or pass "
            "--overwrite to replace it."
        )


def check_inputs(options: RunOptions) -> None:
    """Every check that needs no output: options, output location, tokenizer, MLflow store, Feast config.

    Raises:
        ValueError: the first problem, naming the flag or file.
    """
    arguments = options.pipeline_arguments()
    parameters.check(arguments)
    check_output(options.output, options.overwrite)
    try:
        load_tokenizer(arguments["base_model"])
    except ValueError as err:
        raise ValueError(f"--base-model: {err}") from err
    tracking.check_tracking_uri(tracking.resolve_tracking_uri(arguments["mlflow_tracking_uri"]))
    if arguments["tuning_trials"]:  # the search spec, against the training CLI's own parser
        tune_core.load(parameters.config(tune_core.TuneConfig, arguments))


@contextlib.contextmanager
def _remembered_ctrl_c() -> Any:
    """Python's own Ctrl-C handling (a KeyboardInterrupt in the main thread), plus a record of it.

    kfp.local runs the steps in worker threads while the main thread waits; a KeyboardInterrupt that happens
    to be raised inside a finalizer or a library's ``except`` there is lost, and the run would go on (seen
    once, on a loaded machine). The record lets `run_pipeline` honour the Ctrl-C when the steps return.
    Yields a list that is non-empty once SIGINT arrived; outside the main thread, Python's handling only."""
    import signal
    import threading

    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def run_pipeline(options: RunOptions) -> Path:
    """Validate, run every step locally, write `summary.json`; return its path.

    Raises:
        ValueError: bad input, found before anything is written.
        PipelineFailed: a step failed; `summary.json` then says ``"status": "failed"``.
        KeyboardInterrupt: after writing `summary.json` with ``"status": "interrupted"``.
    """
    from kfp import local

    from pipelines.pipeline import build_pipeline
    from pipelines.sample_data import write_sample_csv

    started = time.time()
    if options.overwrite:
        (options.output / "summary.json").unlink(missing_ok=True)  # no stale summary, whatever happens next
    check_inputs(options)
    if options.runner not in RUNNERS:
        raise ValueError(f"Unknown --runner {options.runner!r}; choose one of {', '.join(RUNNERS)}.")
    if options.runner == "container":  # before anything is written: the runtime answers, the images exist
        container_runner.check_runtime()
    if options.data is None:
        options.data = str(write_sample_csv(options.output / "sample_reviews.csv"))
        print(f"No --data given: using SYNTHETIC sample reviews written to {options.data}")
    prepare_core.validate(options.data, parameters.config(PrepareConfig, options.pipeline_arguments()))
    options.output.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    if options.runner == "container":
        session = stack.enter_context(
            container_runner.session(options.output, options.pipeline_arguments(), options.profile)
        )
    else:
        session = container_runner.Session(
            runner=local.SubprocessRunner(use_venv=False), build=lambda: build_pipeline(profile=None)
        )
    local.init(runner=session.runner, pipeline_root=str(options.output / "artifacts"))
    log = RunLog(sys.stdout, options.output / "logs", options.verbose)
    print(f"Running the pipeline; each step's full log goes to {log.log_dir}/")

    def ended(status: str, error: str) -> dict[str, Any]:
        return {
            "status": status,
            "error": error,
            "output_dir": str(options.output.resolve()),
            "parameters": options.pipeline_arguments(),
        }

    ctrl_c = stack.enter_context(_remembered_ctrl_c())
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            # The components' base image is this very virtualenv's code, and display names are cluster-only.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            task = session.build()(**session.arguments(options.pipeline_arguments()))
        if ctrl_c:  # a Ctrl-C whose KeyboardInterrupt was swallowed on the way (see `_remembered_ctrl_c`)
            raise KeyboardInterrupt
    except RuntimeError as err:
        message = log.last_error or str(err)
        write_summary(options.output, ended("failed", message))
        raise PipelineFailed(message) from err
    except KeyboardInterrupt:
        write_summary(options.output, ended("interrupted", "interrupted by the user (Ctrl-C)"))
        raise
    finally:
        log.finish()
        stack.close()  # the container runner's MLflow server
    return write_summary(options.output, build_summary(options, task.outputs, started))


def deployment_line(deployment: dict[str, Any]) -> str:
    """One line on the deployment: what was deployed where and how it went, or why nothing was."""
    version = f"version {deployment.get('model_version')} of {deployment.get('registered_model')}"
    if deployment.get("decision") != "deployed":
        return f"Deployment: skipped ({version} stays challenger) — {deployment.get('reason', 'no reason given')}"
    outcome = f", {deployment['outcome']}" if deployment.get("outcome") else ""
    return f"Deployment: deployed {version} ({deployment.get('backend')}{outcome}) — {deployment.get('message', '')}"


def print_ending(summary_path: Path) -> None:
    """The run's last lines: the deployment, and where the summary is."""
    summary = json.loads(summary_path.read_text())
    print(deployment_line(summary.get("deployment") or {}))
    print(f"Pipeline succeeded. Summary: {summary_path.resolve()}")
