"""A server as a subprocess: started in a process group of its own, stopped with SIGTERM, then SIGKILL.

The local model server (deploy's `local` backend, the server's tests and benchmark) and the local MLflow server
(`python -m pipelines run --runner container`, the integration tests) run this way.  A process group of its own
lets `stop_group` reach the server's children too (uvicorn's worker, mlflow's gunicorn), and keeps Ctrl-C in a
terminal from reaching the server before the program that started it has stopped it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Seconds a stopped server gets to exit after SIGTERM before SIGKILL.
STOP_GRACE_S = 15.0


def start_group(
    command: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` as the leader of a new process group (and session), its stdout and stderr into ``log``
    (created with its directory; overwritten), stdin from /dev/null.  ``env``: the whole environment instead of
    this process's."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=None if env is None else dict(env),
            cwd=cwd,
        )


def stop_group(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM ``process``'s group (started by `start_group`), SIGKILL it if the leader has not exited after
    ``grace_s`` seconds; the leader is reaped either way.  Returns its exit status (negative: the signal)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:  # every process of the group has exited already
        return process.wait()
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it exited just now
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=grace_s)
