"""Helpers for the server's tests and benchmark: a servable model directory without training, the server
in a subprocess on a free loopback port, and a small HTTP client (standard library only)."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common import modeling, processes, schema


def untrained_classifier(base_model: str | Path, directory: str | Path) -> Path:
    """Save ``base_model`` with a new (random) 3-label head and its tokenizer under ``directory``, as train
    writes a model — servable, though its answers mean nothing (for tests and speed measurements)."""
    import torch

    path = Path(directory)
    name = modeling.resolve_base_model(str(base_model))
    torch.manual_seed(0)
    model = modeling.load_classifier(name)
    tokenizer = modeling.load_tokenizer(name)
    with modeling.quiet_transformers():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 60.0) -> Response:
    """GET ``url`` (``body`` None) or POST ``body`` (bytes as they are, anything else as JSON); any status."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"content-type": "application/json"} if data is not None and not isinstance(body, bytes) else {}
    sent.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=sent, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return Response(reply.status, reply.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.read())


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ServerProcess:
    """`python -m serving` in a process group of its own on 127.0.0.1, its output in ``log``; `wait` for
    readiness, `stop` with SIGTERM (SIGKILL after 15 s).  ``program``: the command before the flags instead
    (e.g. the serve image's ``serve``); ``env``: the server's whole environment instead of this process's."""

    def __init__(
        self,
        model_dir: str | Path,
        log: Path,
        *args: str,
        port: int = 0,
        name: str = schema.MODEL_NAME,
        program: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ):
        self.port = port or free_port()
        self.name = name
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [*(program or (sys.executable, "-m", "serving")), "--model-dir", str(model_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--model-name", name, *args]
        self.process = processes.start_group(command, log, env=env)

    @property
    def v1(self) -> str:
        return f"{self.url}/v1/models/{self.name}:predict"

    @property
    def v2(self) -> str:
        return f"{self.url}/v2/models/{self.name}/infer"

    def wait(self, timeout: float = 180.0) -> ServerProcess:
        """Block until the model is ready (V2 model-ready route answers 200).

        Raises:
            RuntimeError: The server exited or was not ready within ``timeout`` seconds (with its log's end).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                if request(f"{self.url}/v2/models/{self.name}/ready", timeout=2).status == 200:
                    return self
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"the model server exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the model server was not ready within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        processes.stop_group(self.process)
