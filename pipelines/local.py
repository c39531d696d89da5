"""Run the pipeline on this machine with `kfp.local`: check every input, hold the run directory, run the steps
(stopping every process of theirs on Ctrl-C or SIGTERM), and end with `summary.json`.

The very same components as on a cluster run, each in a subprocess of this virtualenv
(`SubprocessRunner(use_venv=False)`); their artifacts land under ``<output>/artifacts``.  What the steps print
is read by `pipelines.run_log`; `summary.json` is built and written by `pipelines.summary`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common import tracking
from components.common.logs import Progress, print_line
from components.featurize.core import load_tokenizer
from components.prepare_data import core as prepare_core
from components.prepare_data.core import PrepareConfig
from components.tune import core as tune_core
from pipelines import container_runner, parameters, reaper, run_dir, summary
from pipelines.run_log import RunLog

#: `python -m pipelines run --runner`: how the steps run (`RunOptions.runner`).
RUNNERS = ("subprocess", "container")
#: An ``--output`` on a file system with less free space than this is refused before anything is written.
MIN_FREE_BYTES = 1 << 20
#: How a stopped run ends: signal → (``summary.json`` status, its error, what the terminal is told).
STOPPED = {
    signal.SIGINT: ("interrupted", "interrupted by the user (Ctrl-C)", "interrupted"),
    signal.SIGTERM: ("terminated", "terminated by SIGTERM", "terminated (SIGTERM)"),
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


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an output location no run can use, before anything is written.

    Raises:
        ValueError: ``--output`` is a file, lies under a file, cannot be written, is on a full file system, is
            in use by another run (`run_dir.RunDirBusy`), or holds an earlier or a killed run (without
            ``--overwrite``).
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
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise ValueError(
            f"--output {str(output)!r}: the file system of {str(existing)!r} is full ({free // 1024} KiB free); "
            "free some space or choose another --output."
        )
    run_dir.check(output, overwrite)  # another run in it now, or a killed one's lock
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
    tracking.usable_tracking_uri(arguments["mlflow_tracking_uri"])
    if arguments["tuning_trials"]:  # the search spec, against the training CLI's own parser
        tune_core.load(parameters.config(tune_core.TuneConfig, arguments))


class Stopped(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT: Ctrl-C, or SIGTERM); its steps' processes are gone and
    `summary.json` says ``interrupted`` or ``terminated``."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class OutputUnwritable(RuntimeError):
    """The run directory could not be written during the run (a full disk); partial files were removed."""


def _stop_steps() -> None:
    """SIGTERM this process's children: each step's `pipelines.reaper`, which stops every process of its step."""
    for pid in reaper.wrappers_below(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@contextlib.contextmanager
def _remembered_ctrl_c() -> Any:
    """Ctrl-C and SIGTERM as a `Stopped` (a KeyboardInterrupt) in the main thread, the steps told to stop, and
    a record of the signal.

    SIGTERM (what Kubernetes, systemd and CI send) reaches this process alone: the handler passes it on to the
    steps' wrappers, for kfp.local waits for its running steps before the exception can leave it. kfp.local
    runs the steps in worker threads while the main thread waits; a KeyboardInterrupt that happens to be raised
    inside a finalizer or a library's ``except`` there is lost, and the run would go on (seen once, on a loaded
    machine). The record lets `run_pipeline` honour the signal when the steps return. Yields a list that is
    non-empty once a signal arrived; outside the main thread, Python's handling only."""
    import threading

    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        _stop_steps()
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, handler) for signum in STOPPED}
    try:
        yield seen
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


#: The environment every step of a subprocess run gets: its Python processes (trials included) write each line
#: as it comes, not when 8 KiB have gathered in the pipe, so `logs/<step>.log` follows the step (the images set
#: the same for the container runner).
STEP_ENV = {"PYTHONUNBUFFERED": "1"}


def _guard_steps(graph: Any) -> Any:
    """Run every step of ``graph`` under `pipelines.reaper`, so no process of a step outlives the run, with
    `STEP_ENV` (kfp.local reads each step's command and environment from the pipeline spec)."""
    executors = graph.pipeline_spec.deployment_spec["executors"]
    for name in executors:
        if "container" in executors[name]:
            container = executors[name]["container"]
            # "python3" is what kfp.local replaces with this interpreter in a step's command.
            container["command"] = ["python3", "-m", "pipelines.reaper", "--", *container["command"]]
    container_runner.add_env(graph, {name: STEP_ENV for name in executors if "container" in executors[name]})
    return graph


def _remove_partial(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _prepare_data(options: RunOptions, sample_dir: Path) -> Path | None:
    """Check ``--data`` (or the synthetic sample, written into ``sample_dir`` to be checked before the run
    directory is touched); return the sample file to move into the run directory, if any.

    Raises:
        ValueError: the data or the options that read it.
    """
    from pipelines.sample_data import write_sample_csv

    sample = None
    data = options.data
    if data is None:
        sample = write_sample_csv(sample_dir / "sample_reviews.csv")
        data = str(sample)
    prepare_core.validate(data, parameters.config(PrepareConfig, options.pipeline_arguments()))
    return sample


def run_pipeline(options: RunOptions) -> Path:
    """Validate, lock the run directory, run every step locally, write `summary.json`; return its path.

    Nothing in ``options.output`` changes until every check has passed and the run holds the directory's lock
    (`run_dir.RunLock`); only then does ``--overwrite`` remove the earlier run's `summary.json`.

    Raises:
        ValueError: bad input, found before anything is written (`run_dir.RunDirBusy`: another run holds
            the directory).
        PipelineFailed: a step failed; `summary.json` then says ``"status": "failed"``.
        Stopped: SIGINT or SIGTERM, after the steps' processes stopped and `summary.json` says
            ``"interrupted"`` or ``"terminated"``.
        OutputUnwritable: the run directory could not be written (full disk); partial files removed.
    """
    from kfp import local

    from pipelines.pipeline import build_pipeline

    started = time.time()
    # The checks may take a while (a loaded machine, a large --data): progress lines, as a step's, on stdout
    # (stderr has the one line of bad input).
    with Progress("checks", emit=print_line) as progress:
        progress.update("the options, the tokenizer, the MLflow store")
        check_inputs(options)
        if options.runner not in RUNNERS:
            raise ValueError(f"Unknown --runner {options.runner!r}; choose one of {', '.join(RUNNERS)}.")
        if options.runner == "container":  # before anything is written: the runtime answers, the images exist
            progress.update("the container runtime and the images")
            container_runner.check_runtime()
    with tempfile.TemporaryDirectory(prefix="bert-kfp-sample-") as sample_dir:
        with Progress("checks", emit=print_line) as progress:
            progress.update("the data")
            sample = _prepare_data(options, Path(sample_dir))
        # Every check passed: the run starts here, and holds the directory until it ends.
        try:
            options.output.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"--output {str(options.output)!r}: cannot create it ({err.strerror}).") from err
        lock = run_dir.RunLock(options.output)
        killed = lock.acquire(options.overwrite)
        try:
            if killed is not None:
                print(f"--overwrite: taking over {options.output} from a run that was killed ({killed.describe()})")
            if options.overwrite:
                (options.output / "summary.json").unlink(missing_ok=True)  # no stale summary, whatever happens next
            if sample is not None:
                options.data = str(options.output / "sample_reviews.csv")
                try:
                    shutil.copyfile(sample, options.data)
                except OSError as err:
                    _remove_partial(Path(options.data))
                    raise _unwritable(options.output, err) from err
                print(f"No --data given: using SYNTHETIC sample reviews written to {options.data}")
            return _run_locked(options, local, build_pipeline, started)
        except OSError as err:
            if err.errno not in _DISK_ERRORS:
                raise
            raise _unwritable(options.output, err) from err
        finally:
            lock.release()


def _run_locked(options: RunOptions, local: Any, build_pipeline: Any, started: float) -> Path:
    with contextlib.ExitStack() as stack:  # closed last: the container runner's MLflow server; signal handlers
        ctrl_c = stack.enter_context(_remembered_ctrl_c())
        stack.enter_context(tracking.named_runs(options.output.resolve().name))  # the MLflow run's name
        if options.runner == "container":
            session = stack.enter_context(
                container_runner.session(options.output, options.pipeline_arguments(), options.profile)
            )
        else:
            session = container_runner.Session(
                runner=local.SubprocessRunner(use_venv=False), build=lambda: _guard_steps(build_pipeline(profile=None))
            )
        local.init(runner=session.runner, pipeline_root=str(options.output / "artifacts"))
        log = RunLog(sys.stdout, options.output / "logs", options.verbose)
        print(f"Running the pipeline; each step's full log goes to {log.log_dir}/")

        def ended(status: str, error: str) -> dict[str, Any]:
            return summary.ended(status, error, options.pipeline_arguments(), options.output)

        def stopped(signum: int) -> Stopped:
            for other in STOPPED:  # a second signal must not cut this short
                signal.signal(other, signal.SIG_IGN)
            reaper.stop_wrappers(os.getpid())  # every process of the steps, before the summary says so
            status, error, _ = STOPPED.get(signum, STOPPED[signal.SIGINT])
            summary.write_summary(options.output, ended(status, error))
            return Stopped(signum)

        try:
            with contextlib.redirect_stdout(log), warnings.catch_warnings():
                # The components' base image is this very virtualenv's code, and display names are cluster-only.
                warnings.filterwarnings("ignore", message=".*non-Python base image.*")
                warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
                task = session.build()(**session.arguments(options.pipeline_arguments()))
            if ctrl_c:  # a signal whose KeyboardInterrupt was swallowed on the way (see `_remembered_ctrl_c`)
                raise Stopped(ctrl_c[0])
        except RuntimeError as err:
            if ctrl_c:  # the steps failed because they were told to stop
                raise stopped(ctrl_c[0]) from None
            message = log.last_error or str(err)
            if log.write_error is not None:  # (a full disk: the summary below may not fit either)
                message += f" (logs/ is incomplete: {log.write_error.strerror or log.write_error})"
            summary.write_summary(options.output, ended("failed", message))
            raise PipelineFailed(message) from err
        except KeyboardInterrupt as err:
            signum = err.signum if isinstance(err, Stopped) else (ctrl_c[0] if ctrl_c else signal.SIGINT)
            raise stopped(signum) from None
        finally:
            log.finish()
    built = summary.build_summary(options.pipeline_arguments(), options.output, task.outputs, started)
    summary.log_parameters(built)
    return summary.write_summary(options.output, built)


#: The errors of a run directory that cannot take more (full disk, quota, read-only, file too large).
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def _unwritable(output: Path, err: OSError) -> OutputUnwritable:
    return OutputUnwritable(
        f"cannot write in --output {str(output)!r} ({err.strerror or err}); the run stopped (see its logs/ for "
        "how far it got), partial files removed"
    )
