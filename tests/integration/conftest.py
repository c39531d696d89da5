"""Fixtures for integration tests: a real `mlflow server` on a free loopback port.

The server is the one a container run starts (`pipelines.container_runner.MlflowServer`): SQLite backend store,
artifacts proxied by the server (``mlflow-artifacts:/``), its own process group.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines import container_runner


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server: its URI, and where it keeps runs (SQLite) and artifacts (proxied)."""

    uri: str
    backend_store: Path
    artifacts: Path
    log: Path


class _ServerProcess:
    """`mlflow server` started; `wait` until it answers /health (a busy 2-core machine needs about half a minute:
    it creates its database tables first)."""

    def __init__(self, root: Path) -> None:
        self.backend_store, self.artifacts, self.log = root / "mlflow.db", root / "artifacts", root / "server.log"
        self.process = container_runner.MlflowServer(f"sqlite:///{self.backend_store}", self.artifacts, self.log)

    def wait(self) -> MlflowServer:
        try:
            uri = self.process.wait()
        except ValueError as error:  # exited or no /health in time (its log's end in the message); stopped
            pytest.fail(str(error))
        return MlflowServer(uri, self.backend_store, self.artifacts, self.log)

    def stop(self) -> None:
        self.process.stop()


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
