"""The run directory's lock: one run at a time in one ``--output``, and a killed run recognised as such.

A run holds an exclusive `fcntl.flock` on ``<output>/run.lock`` for as long as it runs. The kernel releases it
when the process ends, however it ends (``kill -9`` included), so a lock is never left held by a dead run. The
file says who holds it (pid, host, start time); a run that ends (succeeded, failed, interrupted) empties it. A
file that is not empty but whose lock is free is therefore the mark of a run that was killed before it could end:
its directory is refused, unless ``--overwrite`` takes it over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOCK_FILE = "run.lock"


@dataclass(frozen=True)
class Holder:
    """What a lock file says about the run that wrote it."""

    pid: int | None
    host: str
    started_at: str

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lock file names; None for an empty file (no run, or one that ended)."""
        if not text.strip():
            return None
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        pid = data.get("pid")
        return cls(
            pid=pid if isinstance(pid, int) else None,
            host=str(data.get("host") or "?"),
            started_at=str(data.get("started_at") or "?"),
        )

    def describe(self) -> str:
        return f"pid {self.pid if self.pid is not None else '?'} on {self.host}, started at {self.started_at}"


class RunDirBusy(ValueError):
    """Another run holds the lock of this run directory."""


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _busy(output: Path, fd: int) -> RunDirBusy:
    holder = Holder.parse(_read(fd))
    who = holder.describe() if holder else "a run that is starting"
    return RunDirBusy(
        f"--output {str(output)!r} is in use by another run ({who}); wait for it to end, or choose another --output."
    )


def _killed(output: Path, holder: Holder) -> ValueError:
    return ValueError(
        f"--output {str(output)!r} holds a run that was killed before it ended ({holder.describe()}; no longer "
        "running); choose a new directory, or pass --overwrite to replace it."
    )


def check(output: Path, overwrite: bool) -> Holder | None:
    """Look at ``output``'s lock without changing anything; return the killed run ``--overwrite`` will take over.

    Raises:
        RunDirBusy: a run holds the lock now.
        ValueError: a killed run's lock, without ``overwrite``.
    """
    path = output / LOCK_FILE
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # unreadable: `RunLock.acquire` says so when the run starts
    try:
        if not _try_lock(fd):
            raise _busy(output, fd)
        holder = Holder.parse(_read(fd))
    finally:
        os.close(fd)  # (releases the lock taken to look)
    if holder is not None and not overwrite:
        raise _killed(output, holder)
    return holder


class RunLock:
    """The lock a run holds on its directory (`acquire` … `release`)."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, overwrite: bool) -> Holder | None:
        """Take the lock and write this run into the file; return the killed run taken over (``overwrite``).

        Raises:
            RunDirBusy: another run holds the lock (it started after `check`).
            ValueError: a killed run's lock, without ``overwrite``; a lock file that cannot be opened.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ValueError(f"--output {str(self.output)!r}: cannot open {self.path} ({err.strerror}).") from err
        locked = False
        try:
            if not _try_lock(fd):
                raise _busy(self.output, fd)
            locked = True
            holder = Holder.parse(_read(fd))
            if holder is not None and not overwrite:
                raise _killed(self.output, holder)
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as err:  # e.g. a full disk, or a file system without locks
            if locked:
                os.ftruncate(fd, 0)
            os.close(fd)
            raise ValueError(f"--output {str(self.output)!r}: cannot lock {self.path} ({err.strerror}).") from err
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return holder

    def release(self) -> None:
        """The run ended (whatever its status): empty the file, so no one takes it for a killed run; unlock."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass  # the file stays as a killed run's: `--overwrite` takes it over
        finally:
            os.close(self.fd)
            self.fd = None
