"""Run `ReviewSentimentModel` in KServe's model server (REST only: V1, V2, readiness, /metrics).

The listening socket is bound first — a port in use fails at once, with a clear message, before the model
loads — and handed to KServe's REST server (uvicorn), which would otherwise bind every interface.  Exception
handlers join KServe's: a request over a limit is HTTP 413, a V2 body FastAPI cannot parse (malformed JSON, a
missing field) is HTTP 400 instead of FastAPI's 422, and a rejected request is one log line, not a traceback.
Any method but POST on a V1 predict route is HTTP 405 (`add_post_only_routes`).  Two routes join KServe's for
SageMaker's hosting contract (`add_sagemaker_routes`): ``GET /ping`` and ``POST /invocations``.

KServe's public API is `kserve.ModelServer` and its FastAPI application `kserve.model_server.app` (which
KServe's own custom-model example extends with ``add_middleware``); the REST server itself is assembled from
KServe's internals in one function, `kserve_rest_server`, whose docstring names the public hooks that
`ModelServer` lacks (checked on `KSERVE_CHECKED`).

`kserve` parses ``sys.argv`` when it is first imported (its own server flags), so it is imported here,
inside the functions, after `python -m serving` has parsed its own flags.
"""

from __future__ import annotations

import dataclasses
import errno
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.config import ServeConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from fastapi import FastAPI
    from kserve import Model, ModelServer

    from serving.model import ReviewSentimentModel

#: The kserve release `kserve_rest_server` was checked on (pyproject.toml pins it; a test compares the two).
KSERVE_CHECKED = "0.21.0"


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening (uvicorn listens on it).

    Raises:
        ValueError: The port is in use, needs privileges, or the host is no address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ValueError(f"Port {port} on {host} is in use (another server?); pass a free --port.") from error
        if error.errno == errno.EACCES:
            raise ValueError(f"Port {port} on {host} needs privileges; pass a --port above 1023.") from error
        if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(error, socket.gaierror):
            raise ValueError(f"--host {host} is no address of this machine; use 127.0.0.1 or 0.0.0.0.") from error
        raise ValueError(f"Cannot listen on {host}:{port}: {error.strerror or error}.") from error
    return sock


def add_exception_handlers(app: FastAPI) -> None:
    """HTTP 413 for `LimitExceeded`, 404 for `UnknownReviews` (review ids the feature store does not hold),
    400 (not 422) for request bodies FastAPI cannot parse, and for every rejected request (these, KServe's
    `InvalidInput` 400 and `ModelNotFound` 404) one log line with the reason, where KServe's own handlers log
    a traceback.  Added after KServe's handlers (`run`), so they
    replace its handlers of the same exceptions."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve.errors import InvalidInput, ModelNotFound
    from kserve.logging import logger

    from serving.features import UnknownReviews
    from serving.model import LimitExceeded

    def rejected(request: Any, status: int, message: str) -> JSONResponse:
        logger.warning("%s %s rejected with HTTP %d: %s", request.method, request.url.path, status, _one_line(message))
        return JSONResponse(status_code=status, content={"error": message})

    async def too_large(request: Any, error: Exception) -> JSONResponse:
        return rejected(request, 413, str(error))

    async def invalid(request: Any, error: Exception) -> JSONResponse:
        return rejected(request, 400, str(error))

    async def not_found(request: Any, error: Exception) -> JSONResponse:
        return rejected(request, 404, str(error))

    async def unparsable(request: Any, error: Exception) -> JSONResponse:
        details = getattr(error, "errors", lambda: [])()
        parts = [f"{'.'.join(map(str, d.get('loc', ())))}: {d.get('msg', '')}" for d in details[:3]]
        return rejected(request, 400, f"Malformed request: {'; '.join(parts) or error}")

    app.add_exception_handler(LimitExceeded, too_large)
    app.add_exception_handler(InvalidInput, invalid)
    app.add_exception_handler(ModelNotFound, not_found)
    app.add_exception_handler(UnknownReviews, not_found)
    app.add_exception_handler(RequestValidationError, unparsable)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: The V1 routes that take POST only.
POST_ONLY_ROUTES = ("/v1/models/{model_name}:predict", "/v1/models/{model_name}:explain")


async def _post_only(request: Any) -> Any:  # a Starlette route: called with the request
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=405,
        headers={"Allow": "POST"},
        content={
            "error": f"{request.method} is not allowed on {request.url.path}: send the texts with POST "
            '(a JSON body {"instances": ["text", ...]}); GET /v1/models/<name> says whether the model is ready.'
        },
    )


#: Every method but POST (the 405 routes).
_NOT_POST = ["GET", "HEAD", "PUT", "PATCH", "DELETE"]


def add_post_only_routes(app: FastAPI) -> None:
    """Any method but POST on a V1 predict or explain route: HTTP 405 with ``Allow: POST``.  Without these,
    KServe's ``GET /v1/models/{model_name}`` takes ``review-sentiment:predict`` for a model name and answers
    404 "model does not exist".  They must come before KServe's routes (`run` adds them first); a POST passes
    them by to KServe's."""
    for path in POST_ONLY_ROUTES:
        app.add_route(path, _post_only, methods=_NOT_POST, include_in_schema=False)


class _InvocationsAsPredict:
    """ASGI middleware: ``POST /invocations`` goes on as ``POST <predict_path>`` (the request is otherwise
    untouched), so KServe's own V1 predict route answers it."""

    def __init__(self, app: Any, predict_path: str) -> None:
        self.app, self.predict_path = app, predict_path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/invocations" and scope["method"] == "POST":
            scope = {**scope, "path": self.predict_path, "raw_path": self.predict_path.encode()}
        await self.app(scope, receive, send)


def add_sagemaker_routes(app: FastAPI, model: Model) -> None:
    """SageMaker's hosting contract beside KServe's routes: ``GET /ping`` answers 200 once the model is ready
    (its public ``healthy()``), else 503; ``POST /invocations`` takes a V1 body (``{"instances": [...]}``) and is
    answered by KServe's own V1 predict route of the model (`_InvocationsAsPredict` hands the request on), so
    exactly as ``/v1/models/<name>:predict`` (other headers SageMaker adds change nothing; a JSON body is read
    whatever its content type); any other method on it is HTTP 405, as on the predict route."""
    from fastapi import Request, Response

    async def ping(_: Request) -> Response:
        return Response(status_code=200 if await model.healthy() else 503)

    # Starlette's routes (the handler gets the request itself): this module's annotations are strings
    app.add_route("/ping", ping, methods=["GET"])
    app.add_route("/invocations", _post_only, methods=_NOT_POST, include_in_schema=False)
    app.add_middleware(_InvocationsAsPredict, predict_path=f"/v1/models/{model.name}:predict")


def kserve_rest_server(server: ModelServer, after_kserve: Callable[[FastAPI], None]) -> Any:
    """KServe's REST server (uvicorn, one worker) for ``server``'s models, whose application is
    `kserve.model_server.app` with ``after_kserve(app)`` applied once KServe has added its own routes,
    middleware and exception handlers.  Serve with its ``run(sockets=[sock])`` (blocks until SIGINT/SIGTERM).

    The one place this project uses KServe internals — `kserve.protocol.rest.server.RESTServer`, its
    ``create_application`` (overridden) and ``run(sockets=...)``, `FASTAPI_APP_IMPORT_STRING` — because
    `kserve.ModelServer`'s public API lacks two hooks (checked on kserve `KSERVE_CHECKED`, and on KServe's
    main branch of 2026-08-21, python/kserve/kserve/model_server.py and protocol/rest/server.py):

    - **a host or a listening socket**: `ModelServer.start` always binds ``0.0.0.0:http_port`` itself
      (RESTServer's ``uvicorn.Config(host="0.0.0.0")``), so ``--host`` could not be honoured and a port in
      use would be found only after the model has loaded (`serve` binds first);
    - **exception handlers after KServe's**: RESTServer's ``create_application`` adds KServe's handlers
      (InvalidInput, ModelNotFound, ...: a traceback logged per rejected request) when the server starts,
      replacing any added to `kserve.model_server.app` before; ``after_kserve`` replaces them in turn.

    tests/serving/test_kserve_rest_server.py fails when either changes.
    """
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_server import app
    from kserve.protocol.rest.server import RESTServer

    class Server(RESTServer):
        def create_application(self) -> None:
            super().create_application()
            after_kserve(app)

    return Server(
        FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, server.http_port, workers=1
    )


def run(model: ReviewSentimentModel, sock: socket.socket) -> None:
    """Serve ``model`` on the bound socket ``sock`` until SIGINT/SIGTERM (blocks)."""
    from kserve import ModelServer
    from kserve.logging import logger
    from kserve.model_server import app

    port = sock.getsockname()[1]
    server = ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.register_model(model)
    add_post_only_routes(app)
    add_sagemaker_routes(app, model)
    rest = kserve_rest_server(server, add_exception_handlers)  # after KServe's handlers, to replace theirs
    host = sock.getsockname()[0]
    logger.info(
        "Serving model %r on http://%s:%d (V1 and V2 routes, /ping and /invocations, /metrics)", model.name, host, port
    )
    # kserve 0.21 answers with FastAPI's ORJSONResponse, which newer FastAPI deprecates (a warning per route)
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    rest.run(sockets=[sock])


def serve(config: ServeConfig) -> None:
    """Check the options, bind the port, open the feature store (``--feature-store``), fetch the champion
    (``--champion``), load the model, serve (blocks).

    Raises:
        ValueError: A bad option, a port that cannot be bound, a feature store with nothing ingested or a
            configuration that does not load, a model directory that does not load, or (``--champion``) no
            champion in the MLflow registry.
    """
    config.validate()
    sock = bind(config.host, config.port)  # before the slow imports and the model: a port in use fails at once
    with sock, tempfile.TemporaryDirectory(prefix="serving-") as tmp:
        features = None
        if config.feature_store.strip():
            from serving.features import OnlineFeatures

            features = OnlineFeatures(config.feature_store, config.feast_config)
            print(f"Serving by review id too, from the feature store at {features.where}", file=sys.stderr, flush=True)
        if config.champion:
            from serving.champion import champion_dir

            path, version = champion_dir(config.mlflow_tracking_uri, config.registered_model, Path(tmp))
            print(f"Serving the champion: {version}", file=sys.stderr, flush=True)
            config = dataclasses.replace(config, model_dir=str(path), champion=False)
        from serving.model import ReviewSentimentModel

        model = ReviewSentimentModel(config, features=features)
        model.load()
        assert model.classifier is not None
        backend = f"Inference backend: {model.classifier.backend} (--backend {config.backend})"
        print(backend, file=sys.stderr, flush=True)
        run(model, sock)
