"""What the steps of a local run print (kfp.local's output): the log files, and the few lines the terminal shows.

kfp.local writes every step's output to this process's stdout, its task lines ("Executing task …", "Task …
finished with status …") and each task's outputs among them; `RunLog` takes that stream in and reads it: which
step runs, how long it took, its headline figures (from its ``metrics`` output, as `pipelines.steps` names
them), the progress lines (`components.common.logs`) and the last error a step printed.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import time
from pathlib import Path
from typing import Any

from components.common import logs
from pipelines import steps

_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '([\w-]+)'")
_TASK_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_METRICS = re.compile(r"^\s*metrics: Metrics\(")
_METADATA = re.compile(r"metadata=(\{.*\}) \)$")
#: The steps' progress lines (`components.common.logs.LINE`: a time, then the message).
_PROGRESS = logs.LINE
#: The figures each step's one-line report shows: component name → (metric, label) (`pipelines.steps`).
HEADLINES = steps.headlines()


class RunLog(io.TextIOBase):
    """What the steps print: every line to ``logs/run.log`` and the step's own ``logs/<step>.log``; to the
    terminal one line when a step starts and one when it ends (seconds and its headline figures), the steps'
    progress lines (`components.common.logs.LINE`), and — with ``verbose`` — everything. The log files are
    written line by line, as the steps print."""

    def __init__(self, terminal: io.TextIOBase, log_dir: Path, verbose: bool = False) -> None:
        self.terminal, self.log_dir, self.verbose = terminal, log_dir, verbose
        log_dir.mkdir(parents=True, exist_ok=True)
        self.everything = (log_dir / "run.log").open("a", buffering=1)  # line by line: `tail -f` shows them
        self.step: tuple[str, float, Any] | None = None
        self.finished: tuple[str, str, float] | None = None
        self.last_error: str | None = None
        self._partial = ""
        self._metrics_next = False  # the finished step's Metrics output is being listed
        #: The first error writing the log files (a full disk): they are not written to after it.
        self.write_error: OSError | None = None

    def _to_file(self, file: Any, text: str) -> None:
        """Write to a log file, unless writing failed before. An error here must not leave this object: the
        writers are kfp.local's loggers and threads, which would print a traceback for every line."""
        if self.write_error is not None:
            return
        try:
            file.write(text)
        except OSError as err:
            self.write_error = err

    def write(self, text: str) -> int:
        if self.everything.closed:
            return len(text)
        if self.verbose:
            self.terminal.write(text)
        plain = _ANSI.sub("", text)  # the log files without kfp's colours
        self._to_file(self.everything, plain)
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
            try:
                step_log: Any = (self.log_dir / f"{name}.log").open("w", buffering=1)  # line by line
            except OSError as err:
                self.write_error, step_log = self.write_error or err, io.StringIO()
            self.step = (name, time.monotonic(), step_log)
            self._say(f"▶ {name}")
            return
        if self.step is not None:
            self._to_file(self.step[2], line + "\n")
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
            with contextlib.suppress(OSError):
                self.step[2].close()
            self.step = None

    def flush(self) -> None:
        if self.write_error is None and not self.everything.closed:
            try:
                self.everything.flush()
            except OSError as err:
                self.write_error = err
        self.terminal.flush()

    def finish(self) -> None:
        """Close the log files (later writes, e.g. from loggers kfp leaves behind, are dropped)."""
        self._end_step()
        with contextlib.suppress(OSError):  # what a full disk did not take is lost
            self.everything.close()
        if not self.everything.closed:  # (close flushed, failed, and left it open)
            with contextlib.suppress(OSError):
                self.everything.close()
