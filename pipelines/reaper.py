"""`python -m pipelines.reaper -- COMMAND...`: run one step of a local run so that none of its processes outlives it.

kfp.local's SubprocessRunner starts each step as a ``sh -c`` process whose Python child runs the component,
which may start more (the tune step's trial trainings, the deploy step's model server, torchrun's workers).
When the run is stopped — SIGTERM, Ctrl-C, or ``kill -9`` of `python -m pipelines run` — killing the ``sh``
would leave the rest running. This wrapper (`local.run_pipeline` puts it in front of every step's command):

- asks the kernel for SIGTERM when the process that started it dies (``PR_SET_PDEATHSIG``: the run was
  killed, even with SIGKILL), and to become the parent of every orphan below it (``PR_SET_CHILD_SUBREAPER``);
- on SIGTERM, SIGINT or SIGHUP sends SIGTERM to every process below it, SIGKILL to those still there after
  `GRACE_S`, reaps them, and exits 128 + the signal;
- when the step's command ends, does the same to whatever it left behind, and exits with the command's code.

Linux only (prctl); elsewhere it runs the command without the guarantees.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

#: Seconds between SIGTERM and SIGKILL for the processes below the wrapper.
GRACE_S = 3.0
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants(root: int, depth: int | None = None) -> list[int]:
    """The live processes below ``root`` (``depth`` 1: its children), parents before their children; from /proc,
    where each process names its parent. Zombies (ended, not yet reaped) are left out: nothing can stop them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:  # ended meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    level, queue = 0, [root]
    while queue and (depth is None or level < depth):
        level += 1
        queue = [child for parent in queue for child in children.get(parent, ())]
        found.extend(queue)
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _reap() -> None:
    """Collect every child that has ended (orphans included: they are ours as a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_below(root: int, grace_s: float = GRACE_S, reap: bool = True) -> None:
    """SIGTERM every process below ``root``, SIGKILL those left after ``grace_s``; ``reap``: collect them
    (``root`` is this process, their parent or subreaper; not where another thread waits for its children)."""
    _signal_all(descendants(root), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if reap:
            _reap()
        if not descendants(root):
            return
        time.sleep(0.05)
    deadline = time.monotonic() + grace_s  # (a process in uninterruptible sleep may take a while to die)
    while (left := descendants(root)) and time.monotonic() < deadline:
        _signal_all(left, signal.SIGKILL)
        if reap:
            _reap()
        time.sleep(0.02)
    if reap:
        _reap()


def wrappers_below(parent: int) -> list[int]:
    """The children of ``parent`` that are this wrapper (a process's other children are none of its business)."""
    found = []
    for pid in descendants(parent, depth=1):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if b"pipelines.reaper" in argv:
            found.append(pid)
    return found


def stop_wrappers(parent: int, grace_s: float = GRACE_S) -> None:
    """Stop every wrapper below ``parent`` and what runs under it: SIGTERM to the wrappers (each stops its
    own processes, see `main`), then SIGKILL to whatever is left of them after ``grace_s`` and a second more.
    The wrappers are not reaped here: kfp.local's threads wait for them."""
    wrappers = wrappers_below(parent)
    _signal_all(wrappers, signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 1.0

    def left() -> list[int]:
        alive = [pid for pid in wrappers if _alive(pid)]
        return alive + [pid for wrapper in alive for pid in descendants(wrapper)]

    while (remaining := left()) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_all(remaining, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (not ended, and not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[:1] != [b"Z"]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m pipelines.reaper -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)

    def stop(signum: int, frame: object) -> None:
        raise _Stop(signum)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, stop)
    me = os.getpid()
    try:
        if os.getppid() != parent:  # the run died before PR_SET_PDEATHSIG took effect
            raise _Stop(signal.SIGTERM)
        child = subprocess.Popen(argv)
        while True:
            pid, status = os.waitpid(-1, 0)  # our command, or an orphan handed to us
            if pid == child.pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                break
    except _Stop as stopped:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        stop_below(me)
        return 128 + stopped.signum
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    stop_below(me)  # what the command left behind
    code = child.returncode
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
