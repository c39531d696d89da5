"""`components.common.processes`: a server started in a group of its own, stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from components.common.processes import start_group, stop_group


def _wait_for(log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"no {text!r} in {log}: {log.read_text()!r}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: where PID 1 does not reap orphans, a killed orphan stays one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_a_server_that_stops_on_sigterm_is_not_killed(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "server.log"
    script = "import time\nprint('ready', flush=True)\ntime.sleep(60)"
    process = start_group([sys.executable, "-c", script], log)
    _wait_for(log, "ready")
    assert os.getpgid(process.pid) == process.pid != os.getpgid(0)  # a group of its own
    started = time.monotonic()
    assert stop_group(process, grace_s=10) == -signal.SIGTERM
    assert time.monotonic() - started < 5


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    """The leader and its child (as uvicorn's worker) ignore SIGTERM; both are gone after SIGKILL."""
    log = tmp_path / "server.log"
    script = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = start_group([sys.executable, "-c", script], log, env={**os.environ, "EXTRA": "1"})
    _wait_for(log, "child ")
    child = int(log.read_text().split()[1])
    started = time.monotonic()
    assert stop_group(process, grace_s=1) == -signal.SIGKILL
    assert 1 <= time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_server_that_exited_already_is_reaped(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    process = start_group([sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"], log, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while _alive(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stop_group(process) == 3
    assert log.read_text() == "bye\n"
