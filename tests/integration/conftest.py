"""Fixtures for integration tests: a real `mlflow server` on a free loopback port."""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.common import processes

#: How long the server may take to answer /health (it creates its database tables first; a busy 2-core
#: machine needs about half a minute).
STARTUP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server: its URI, and where it keeps runs (SQLite) and artifacts (proxied)."""

    uri: str
    backend_store: Path
    artifacts: Path
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class _ServerProcess:
    """`mlflow server` started in a process group of its own; `wait` until it answers /health."""

    def __init__(self, root: Path) -> None:
        port = _free_port()
        self.server = MlflowServer(
            uri=f"http://127.0.0.1:{port}",
            backend_store=root / "mlflow.db",
            artifacts=root / "artifacts",
            log=root / "server.log",
        )
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri", f"sqlite:///{self.server.backend_store}",
            "--default-artifact-root", "mlflow-artifacts:/",
            "--serve-artifacts",
            "--artifacts-destination", str(self.server.artifacts),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", "1",
        ]  # fmt: skip
        # The server's background job runner (an extra process) is not needed by tracking and registry.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.process = processes.start_group(command, self.server.log, env=env, cwd=root)

    def wait(self) -> MlflowServer:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(self.server.uri):
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.process.returncode}:\n{self._log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server gave no /health in {STARTUP_TIMEOUT_S:.0f} s:\n{self._log()}")
            time.sleep(0.25)
        return self.server

    def _log(self) -> str:
        return self.server.log.read_text()[-3000:]

    def stop(self) -> None:
        """SIGTERM the server's own process group (the CLI and its uvicorn worker); SIGKILL it after 15 s."""
        processes.stop_group(self.process)


@pytest.fixture(scope="module")
def mlflow_server_starting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_ServerProcess]:
    """`mlflow server` from this virtualenv, booting: SQLite backend store, artifacts proxied by the server
    (``mlflow-artifacts:/`` → a temporary directory), on 127.0.0.1 and a free port; stopped afterwards.

    Request it before slow fixtures and `mlflow_server` after them, so the server boots meanwhile."""
    process = _ServerProcess(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def mlflow_server(mlflow_server_starting: _ServerProcess) -> MlflowServer:
    """The running server (waits for its /health)."""
    return mlflow_server_starting.wait()
