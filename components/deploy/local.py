"""The `local` backend: the project's model server (`python -m serving`) as a subprocess on 127.0.0.1.

`LocalServer` starts it in a process group of its own on a free port (or the one asked for), waits until
the model is ready (KServe's V2 model-ready route answers 200) and stops it with SIGTERM (SIGKILL after a
grace period).  The server is a separate program, reached over HTTP as any client would: deploy does not
import it.  `smoke_test` serves a model directory, sends the smoke reviews to the V1 route and compares the
answers with evaluate's.

Errors: the server exiting before it is ready (a model directory that does not load, a port taken meanwhile)
raises `ValueError` with the server's own ``error:`` line; not ready in time raises `ServerNotReadyError`.
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common import processes
from components.deploy.smoke import SmokeResult, SmokeReview, compare, v1_predictions

HOST = "127.0.0.1"
#: Texts per smoke request (the server's default limit is 64).
CHUNK = 32


class ServerNotReadyError(RuntimeError):
    """The model server did not become ready in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def check_port(port: int) -> None:
    """Fail now, not after the server's start-up, when ``port`` on 127.0.0.1 is taken.

    Raises:
        ValueError: The port is in use or needs privileges, naming the option to change.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            sock.bind((HOST, port))
        except OSError as error:
            what = "is in use" if error.errno == errno.EADDRINUSE else f"cannot be used ({error.strerror})"
            raise ValueError(
                f"--local-port {port} on {HOST} {what}: pass a free port, or 0 to let deploy pick one."
            ) from error


def _request(url: str, body: Any = None, timeout: float = 60.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def predict_v1(endpoint: str, texts: list[str], timeout: float = 120.0) -> list[dict[str, Any]]:
    """The V1 predictions of ``texts`` by the model at ``endpoint`` (…/v1/models/<name>:predict), in requests of
    `CHUNK` texts.

    Raises:
        RuntimeError: The server answered with an error status, or without predictions.
    """
    answers: list[dict[str, Any]] = []
    for start in range(0, len(texts), CHUNK):
        status, body = _request(endpoint, {"instances": texts[start : start + CHUNK]}, timeout)
        predictions = v1_predictions(body) if status == 200 else None
        if predictions is None:
            raise RuntimeError(f"The model server answered HTTP {status} on {endpoint}: {body[:300]!r}")
        answers += predictions
    return answers


@dataclass
class LocalServer:
    """`python -m serving` for ``model_dir`` under ``name`` on 127.0.0.1:``port`` (0: a free port); its output
    goes to ``log``.  ``args``: more `python -m serving` flags."""

    model_dir: Path
    log: Path
    name: str
    port: int = 0
    args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.url}/v1/models/{self.name}:predict"

    def start(self) -> LocalServer:
        if self.port:
            check_port(self.port)
        else:
            self.port = free_port()
        command = [sys.executable, "-m", "serving", "--model-dir", str(self.model_dir), "--host", HOST]
        command += ["--port", str(self.port), "--model-name", self.name, *self.args]
        self.process = processes.start_group(command, self.log)
        return self

    def wait(self, timeout: float) -> LocalServer:
        """Block until the model is ready.

        Raises:
            ValueError: The server exited (its ``error:`` line: a model that does not load, a port in use).
            ServerNotReadyError: Not ready within ``timeout`` seconds (with the end of its log).
        """
        if self.process is None:
            raise RuntimeError("LocalServer.wait() before start()")
        deadline = time.monotonic() + timeout
        while True:
            try:
                if _request(f"{self.url}/v2/models/{self.name}/ready", timeout=2)[0] == 200:
                    return self
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None:
                raise ValueError(f"The model server for {str(self.model_dir)!r} exited: {self.error_line()}")
            if time.monotonic() > deadline:
                raise ServerNotReadyError(
                    f"The model server for {str(self.model_dir)!r} was not ready within {timeout:.0f} s "
                    f"(--rollout-timeout-seconds); the end of its log ({self.log}):\n{self.tail()}"
                )
            time.sleep(0.2)

    def error_line(self) -> str:
        """The server's ``error:`` line (`python -m serving` prints one on bad input), else its log's end."""
        lines = self.tail().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        return errors[-1][len("error: ") :] if errors else f"exit code {self.process.returncode}; log:\n{self.tail()}"

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def predict(self, texts: list[str], timeout: float = 120.0) -> list[dict[str, Any]]:
        """The V1 predictions of ``texts`` (see `predict_v1`)."""
        return predict_v1(self.v1, texts, timeout)

    def stop(self) -> None:
        """SIGTERM the server's process group; SIGKILL it after `processes.STOP_GRACE_S`."""
        if self.process is not None:
            processes.stop_group(self.process)


def serve_args(reviews: list[SmokeReview], max_seq_length: int) -> tuple[str, ...]:
    """Server flags for the smoke test: the training's token limit, and limits that admit every smoke review."""
    longest = max((len(r.text) for r in reviews), default=0)
    return (
        "--max-seq-length",
        str(max_seq_length),
        "--max-texts",
        str(CHUNK),
        "--max-text-chars",
        str(max(5000, longest)),
    )


def smoke_test(
    model_dir: str | Path,
    reviews: list[SmokeReview],
    *,
    name: str,
    max_seq_length: int,
    timeout: float,
    log: Path,
    port: int = 0,
) -> tuple[str, SmokeResult]:
    """Serve ``model_dir`` locally, send ``reviews``, compare with evaluate's answers, stop the server.

    Returns:
        (the V1 endpoint it was served at, the comparison).

    Raises:
        ValueError: No such model directory, a port in use, or the server exited (its error line).
        ServerNotReadyError: Not ready within ``timeout`` seconds.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise ValueError(f"Model directory {str(model_dir)!r} does not exist; pass the `model` output of train.")
    server = LocalServer(path, log, name, port, serve_args(reviews, max_seq_length))
    try:
        server.start().wait(timeout)
        answers = server.predict([r.text for r in reviews])
    finally:
        server.stop()
    return server.v1, compare(reviews, answers)
