"""`serving.server.kserve_rest_server`, the one use of KServe's internals, holds on the installed kserve: fails
when kserve changes what the wrapper relies on (see its docstring), in this process, without a socket.

- the installed kserve is the release the wrapper was checked on, and pyproject.toml pins that release;
- RESTServer's ``run`` takes listening sockets, and the server's application is `kserve.model_server.app`;
- RESTServer's ``create_application`` adds KServe's routes and exception handlers, then the wrapper's hook
  runs and its handlers replace KServe's: a rejected request is answered by ours (one log line), not by
  KServe's (a traceback).
"""

from __future__ import annotations

import inspect
import logging
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from serving import server as S

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_kserve_is_the_release_the_wrapper_was_checked_on() -> None:
    pinned = re.search(r'"kserve==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned and pinned.group(1) == S.KSERVE_CHECKED
    assert metadata.version("kserve") == S.KSERVE_CHECKED, (
        "kserve changed: check serving.server.kserve_rest_server against its model_server.py and "
        "protocol/rest/server.py (a host or socket for ModelServer? handlers after KServe's?), then KSERVE_CHECKED"
    )


def test_kserves_rest_server_runs_on_our_socket_and_our_handlers_replace_kserves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fastapi.testclient import TestClient
    from kserve import Model, ModelServer
    from kserve.errors import InvalidInput
    from kserve.model_server import app

    class Refusing(Model):
        def __init__(self) -> None:
            super().__init__("refusing")
            self.ready = True

        async def predict(self, payload: Any, headers: Any = None) -> Any:
            raise InvalidInput("instances[0] is not a text")

    server = ModelServer(http_port=0, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.register_model(Refusing())
    seen: list[Any] = []

    def after_kserve(application: Any) -> None:
        seen.append((application, application.exception_handlers.get(InvalidInput)))
        S.add_exception_handlers(application)

    rest = S.kserve_rest_server(server, after_kserve)
    assert "sockets" in inspect.signature(rest.run).parameters  # how `run` hands it the bound socket
    assert seen == []  # nothing before the server builds its application
    rest.create_application()  # what rest.run does first
    (application, kserves), *more = seen
    assert application is app and more == []
    assert kserves is not None and kserves is not app.exception_handlers[InvalidInput]  # KServe's, then ours

    client = TestClient(app)
    assert client.get("/v1/models/refusing").json() == {"name": "refusing", "ready": True}  # KServe's routes
    with caplog.at_level(logging.INFO):
        reply = client.post("/v1/models/refusing:predict", json={"instances": ["a"]})
    assert reply.status_code == 400 and reply.json() == {"error": "instances[0] is not a text"}
    rejected = [r for r in caplog.records if "rejected with HTTP 400" in r.getMessage()]
    assert len(rejected) == 1 and not any(r.exc_info for r in caplog.records)
