"""The progress lines of the steps and CLIs: a time, then the message, on stderr.

One convention for every step: a progress line is ``HH:MM:SS message`` on stderr (`LINE` matches it), written by
the ``components`` loggers once `configure_logging` ran (the train and tune CLIs, the train step) or by the
``components.progress`` logger (`Progress`, in every long step). The local run's terminal shows these lines and
no other line of a step (`pipelines.run_log`); the step's log file has everything.

A long step prints a line at least every 30 s: its `Progress` says where it is `FIRST_LINE_S` after it starts
(the process's start-up took some of the 30 s already), then whenever `PROGRESS_EVERY_S` passed without a line;
a loop with a line of its own (training's step line) prints it by time after `LOOP_EVERY_S`, before the
`Progress` would; a process that relays another's lines (the tune step, its trials') speaks for it only after
`RELAY_EVERY_S` without one.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: A long step says where it is after this many seconds without a line (`Progress`)...
PROGRESS_EVERY_S = 20.0
#: ... and this soon after it started.
FIRST_LINE_S = 10.0
#: A loop's own progress line (training's step line) comes by time after this long without a line.
LOOP_EVERY_S = 15.0
#: A process relaying another's progress lines says where that one is after this long without a line from it.
RELAY_EVERY_S = 25.0
#: A progress line, as the step prints it and `pipelines.run_log` finds it in the step's output (indented by
#: kfp.local): a time, then the message.
LINE = re.compile(r"^\s*\d\d:\d\d:\d\d ")
#: The logger of `Progress` (its own handler; it leaves the ``components`` logger as the process set it).
PROGRESS_LOGGER = "components.progress"


class _LastLine(logging.Filter):
    """Notes when the last progress line went out (any handler of this module), so that `Progress` stays quiet
    while the step prints lines of its own (training's step lines, the tune step's trial lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.at = float("-inf")  # none yet

    def filter(self, record: logging.LogRecord) -> bool:
        self.at = time.monotonic()
        return True


_LAST_LINE = _LastLine()


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever ``sys.stderr`` is when a line is written (pytest swaps it per test), in the line
    format, noting each line's time."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        self.addFilter(_LAST_LINE)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # (StreamHandler.__init__ sets it)
        pass


def _own_handler(logger: logging.Logger) -> logging.Logger:
    if not logger.handlers:
        logger.addHandler(_Stderr())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def configure_logging() -> None:
    """Progress lines of the ``components`` loggers on stderr (once per process; with DDP, rank 0 of a job
    prints them)."""
    _own_handler(logging.getLogger("components"))


def print_line(message: str) -> None:
    """A progress line on stdout, for a process whose stderr is kept for its one error line (`python -m
    pipelines run`'s checks)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)
    _LAST_LINE.at = time.monotonic()


#: The `Progress` heartbeats running in this process, the innermost last.
_RUNNING: list[Progress] = []


def set_status(status: str) -> None:
    """Tell the innermost running `Progress` where the work is (nothing when none runs): a loop deep inside a
    step (training's steps) shows in the step's lines without holding its `Progress`."""
    if _RUNNING:
        _RUNNING[-1].update(status)


def last_line_at() -> float:
    """`time.monotonic` of the last progress line this process printed (-inf: none yet)."""
    return _LAST_LINE.at


class Progress:
    """Progress lines by time: at least one every ``every`` seconds while a long piece of work runs.

    `update` says where the work is (cheap: call it in loops); `tick` prints ``<what>: <status>, <n> s`` when
    ``every`` seconds have passed since the last progress line (``first`` after the start); `say` prints a line
    now; `due` and `said` let a caller print its own line format by time (training's step line). As a context
    manager a daemon thread ticks, so a line comes while one long call (a library's) runs, and stays quiet
    while the work prints lines of its own (any line of this module's handlers counts).

    Args:
        what: The line's subject (the step, or ``trial-3``).
        every: Seconds between lines at most (a `tick` checks; the thread checks every ``poll`` seconds).
        first: Seconds to the first line (at most ``every``; default `FIRST_LINE_S`).
        clock: ``time.monotonic``; a test passes its own.
        emit: Where a line goes (default: the ``components.progress`` logger on stderr).
        heard: When the last line of the process went out (default: `last_line_at`; a test passes its own).
    """

    def __init__(
        self,
        what: str,
        every: float = PROGRESS_EVERY_S,
        first: float = FIRST_LINE_S,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], Any] | None = None,
        heard: Callable[[], float] | None = None,
        poll: float = 1.0,
    ) -> None:
        self.what, self.every, self.clock, self.poll = what, every, clock, poll
        self.emit = emit or _own_handler(logging.getLogger(PROGRESS_LOGGER)).info
        self.heard = heard or (last_line_at if clock is time.monotonic else lambda: float("-inf"))
        self.started = clock()
        self.last = self.started - (every - min(first, every))  # (as if a line had gone out that long ago)
        self.status = "running"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def elapsed(self) -> float:
        return self.clock() - self.started

    def update(self, status: str) -> None:
        self.status = status

    def due(self) -> bool:
        """Whether ``every`` seconds have passed since the last line (this one's, or any of the process's)."""
        return self.clock() - max(self.last, self.heard()) >= self.every

    def said(self) -> None:
        """A line went out by other means (the caller's own format): the next one is due ``every`` s later."""
        self.last = self.clock()

    def say(self, message: str) -> None:
        with self._lock:
            self.emit(message)
            self.last = self.clock()

    def tick(self, status: str | None = None) -> bool:
        """Print where the work is, if a line is due; whether one was printed."""
        if status is not None:
            self.status = status
        with self._lock:
            if not self.due():
                return False
            self.emit(f"{self.what}: {self.status}, {self.elapsed():.0f} s")
            self.last = self.clock()
        return True

    def __enter__(self) -> Progress:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"progress-{self.what}", daemon=True)
        self._thread.start()
        _RUNNING.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        while not self._stop.wait(self.poll):
            self.tick()
