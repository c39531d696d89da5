"""One tuning trial: the training CLI in a process of its own, its metric lines streamed back as they come.

`run_training` starts ``python -m components.train <argv>`` (as a Katib trial's batch Job would), reads its
output line by line, hands every metric line (`components.common.trial_metrics`) to ``on_metrics`` and
terminates the process when that answers True (the trial is pruned), and every progress line
(`components.common.logs.LINE`) to ``on_progress``.  Everything the process prints goes to ``log_path``.
The process is asked to die with the thread that started it (Linux ``PR_SET_PDEATHSIG``), so a tuner killed
with SIGKILL leaves no training running behind it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.common import logs, trial_metrics
from components.common.training_options import MODULE

log = logging.getLogger("components.tune")

# Runs in the trial's process before it becomes the training CLI: die with the parent (SIGTERM), and stop
# at once when the parent is already gone.
_WRAPPER = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.executable, [sys.executable, "-m", sys.argv[2], *sys.argv[3:]])
"""


@dataclass
class TrialRun:
    """How a trial's process ended: exit code (negative: a signal), pruned or not, its metric lines."""

    returncode: int
    pruned: bool
    evaluations: list[trial_metrics.MetricLine] = field(default_factory=list)
    seconds: float = 0.0
    log_path: str = ""

    def error(self, lines: int = 12) -> str:
        """The end of the trial's log (for a failed trial's record)."""
        try:
            text = Path(self.log_path).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def run_training(
    argv: Sequence[str],
    log_path: str | Path,
    on_metrics: Callable[[trial_metrics.MetricLine], bool],
    env: Mapping[str, str] | None = None,
    terminate_grace: float = 15.0,
    on_progress: Callable[[str], object] | None = None,
) -> TrialRun:
    """Run the training CLI with ``argv`` to its end, or until ``on_metrics`` returns True (then terminate it).

    Args:
        argv: The training CLI's arguments.
        log_path: Its stdout and stderr go here (appended: a retried trial keeps the earlier attempt's log).
        on_metrics: Called with every metric line; True stops the trial (pruned).
        env: The process's environment (default: this one's).
        terminate_grace: Seconds between SIGTERM and SIGKILL when stopping a pruned trial.
        on_progress: Called with every progress line of the training (its message, without the time).
    """
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    command = [sys.executable, "-c", _WRAPPER, str(os.getpid()), MODULE, *argv]
    evaluations: list[trial_metrics.MetricLine] = []
    pruned = False
    with path.open("a", buffering=1) as sink:
        sink.write(f"$ python -m {MODULE} {' '.join(argv)}\n")
        sink.flush()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=dict(env or os.environ)
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                sink.write(line)
                if on_progress is not None and logs.LINE.match(line):
                    on_progress(line.strip().split(" ", 1)[1])
                parsed = trial_metrics.parse_line(line.rstrip("\n"))
                if parsed is None:
                    continue
                evaluations.append(parsed)
                if on_metrics(parsed):
                    pruned = True
                    break
        finally:
            if process.poll() is None and (pruned or sys.exc_info()[0] is not None):
                process.terminate()
                try:
                    process.wait(terminate_grace)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.stdout.close()
            process.wait()
    return TrialRun(process.returncode, pruned, evaluations, time.monotonic() - started, str(path))
