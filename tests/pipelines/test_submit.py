"""`python -m pipelines submit` against a local HTTP server that speaks the part of the KFP v2beta1 REST API the
`kfp` client uses to start a run (healthz; experiments: list by name, create; runs: create with the pipeline
spec inline). The server records every request; the tests check their bodies and headers: the compiled
pipeline that travels, the run's parameters and ServiceAccount, the credentials."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp
import pytest

from pipelines.__main__ import main

API = "/apis/v2beta1"
TOKEN = "s3cr3t-token"
Json = dict[str, Any]


@dataclass
class FakeKfp:
    """What the server answers (set by a test) and what it received."""

    multi_user: bool = True
    namespaces: tuple[str, ...] = ("team-a",)
    token: str | None = TOKEN
    cookie: str | None = None
    experiments: list[Json] = field(default_factory=list)
    login_page: bool = False
    requests: list[Json] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    state: FakeKfp

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Json | str) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> Json:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        request = {
            "method": self.command,
            "path": url.path,
            "query": {k: v[0] for k, v in parse_qs(url.query).items()},
            "headers": {k.lower(): v for k, v in self.headers.items()},  # names are case-insensitive
            "body": json.loads(raw) if raw else None,
        }
        self.state.requests.append(request)
        return request

    def _authorised(self, request: Json) -> bool:
        headers, state = request["headers"], self.state
        if state.token is not None and headers.get("authorization") == f"Bearer {state.token}":
            return True
        return state.cookie is not None and headers.get("cookie") == state.cookie

    def _handle(self) -> None:
        request = self._record()
        state, path = self.state, request["path"]
        if state.login_page:
            return self._reply(200, "<html><body>Log in to Kubeflow</body></html>")
        if not self._authorised(request):
            return self._reply(401, {"error": "Unauthorized", "code": 16, "message": "Unauthorized"})
        if path == f"{API}/healthz" and self.command == "GET":
            return self._reply(200, {"multi_user": state.multi_user})
        namespace = request["query"].get("namespace") or (request["body"] or {}).get("namespace")
        if state.multi_user and path.startswith(f"{API}/experiments") and namespace not in state.namespaces:
            return self._reply(403, {"error": f"no access to namespace {namespace}", "code": 7})
        if path == f"{API}/experiments" and self.command == "GET":
            name = json.loads(request["query"]["filter"])["predicates"][0]["stringValue"]
            found = [e for e in state.experiments if e["display_name"] == name and e["namespace"] == namespace]
            return self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
        if path == f"{API}/experiments" and self.command == "POST":
            experiment = {**request["body"], "experiment_id": f"exp-{len(state.experiments) + 1}"}
            state.experiments.append(experiment)
            return self._reply(200, experiment)
        if path == f"{API}/runs" and self.command == "POST":
            known = {e["experiment_id"] for e in state.experiments}
            if request["body"].get("experiment_id") not in known:
                return self._reply(404, {"error": "experiment not found", "code": 5})
            return self._reply(200, {**request["body"], "run_id": "run-42", "state": "PENDING"})
        return self._reply(404, {"error": f"no route {self.command} {path}", "code": 5})

    do_GET = do_POST = _handle


@pytest.fixture
def kfp_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, FakeKfp]]:
    state = FakeKfp()
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("KFP_HOST", "KFP_NAMESPACE", "KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KFP_COOKIE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("KFP_SERVICE_ACCOUNT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    # The client reads a saved context (namespace, cookie) from the user's home: not in a test.
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.setenv("KFP_HOST", host)
    yield host, state
    server.shutdown()
    server.server_close()


def _submit(tmp_path: Path, *args: str, profile: str = "onprem") -> list[str]:
    return ["submit", "--profile", profile, "--package", str(tmp_path / "pipeline.yaml"), *args]


def _calls(state: FakeKfp) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in state.requests]


def test_submit_sends_the_compiled_pipeline_and_the_run_arguments(
    kfp_server: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    host, state = kfp_server
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    monkeypatch.setenv("KFP_SERVICE_ACCOUNT", "bert-pipeline")
    argv = _submit(
        tmp_path,
        "--data",
        "s3://reviews/womens_clothing.csv",
        "--epochs",
        "2",
        "--experiment",
        "bert-nightly",
        "--run-name",
        "nightly 1",
        "--param",
        "max_rows=500",
        "--param",
        "checkpoint_root=/mnt/ckpt",
        "--no-cache",
    )
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{host}/#/runs/details/run-42" in out

    assert _calls(state) == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ]
    assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in state.requests)
    listing, created, run = state.requests[1], state.requests[2], state.requests[3]
    assert listing["query"]["namespace"] == "team-a"
    assert json.loads(listing["query"]["filter"])["predicates"][0]["stringValue"] == "bert-nightly"
    assert created["body"] == {"display_name": "bert-nightly", "namespace": "team-a"}

    body = run["body"]
    assert body["experiment_id"] == "exp-1" and body["display_name"] == "nightly 1"
    assert body["service_account"] == "bert-pipeline"
    assert body["runtime_config"]["parameters"] == {
        "data": "s3://reviews/womens_clothing.csv",
        "num_train_epochs": 2,
        "max_rows": 500,
        "checkpoint_root": "/mnt/ckpt",
    }
    pipeline, platform = body["pipeline_spec"]["pipeline_spec"], body["pipeline_spec"]["platform_spec"]
    assert pipeline["pipelineInfo"]["name"] == "bert-review-sentiment"
    declared = pipeline["root"]["inputDefinitions"]["parameters"]
    assert set(body["runtime_config"]["parameters"]) <= set(declared)
    assert declared["feature_store_dir"]["defaultValue"] == "/mnt/feast"  # compiled for the onprem profile
    assert declared["feast_config"]["defaultValue"] == "cluster"
    assert all(
        task["cachingOptions"].get("enableCache", False) is False for task in pipeline["root"]["dag"]["tasks"].values()
    )
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounts = [m["constant"] for e in executors.values() for m in e.get("pvcMount", [])]
    assert "feast-store" in mounts
    # What was sent is what was compiled: the package on disk.
    assert (tmp_path / "pipeline.yaml").read_text().count("bert-review-sentiment") >= 1


def test_an_existing_experiment_is_reused_and_the_cookie_authenticates(
    kfp_server: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, state = kfp_server
    state.token, state.cookie = None, "authservice_session=abc123"
    state.experiments.append({"experiment_id": "exp-7", "display_name": "review-sentiment", "namespace": "team-a"})
    monkeypatch.setenv("KFP_COOKIE", "authservice_session=abc123")
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    assert main(_submit(tmp_path, "--data", "/mnt/data/reviews.csv", profile="cpu")) == 0
    assert ("POST", f"{API}/experiments") not in _calls(state)
    run = state.requests[-1]
    assert run["headers"]["cookie"] == "authservice_session=abc123" and "authorization" not in run["headers"]
    assert run["body"]["experiment_id"] == "exp-7"
    assert run["body"]["runtime_config"]["parameters"] == {"data": "/mnt/data/reviews.csv"}
    assert run["body"]["service_account"] == "bert-pipeline"  # no flag, no KFP_SERVICE_ACCOUNT: the profile's
    assert run["body"]["display_name"].startswith("review-sentiment cpu ")


def test_a_token_file_single_user_install(
    kfp_server: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, state = kfp_server
    state.multi_user = False
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", "--service-account", "bert-pipeline", profile="cpu")) == 0
    assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in state.requests)
    assert state.requests[-1]["body"]["service_account"] == "bert-pipeline"


def test_a_refused_token_is_a_clear_401(
    kfp_server: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = kfp_server
    monkeypatch.setenv("KFP_TOKEN", "expired")
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", profile="cpu")) == 1
    err = capsys.readouterr().err
    assert "401 Unauthorized" in err and "KFP_TOKEN" in err
    assert _calls(state) == [("GET", f"{API}/healthz")]


def test_a_namespace_not_yours_is_a_clear_403(
    kfp_server: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = kfp_server
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.setenv("KFP_NAMESPACE", "team-b")
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", profile="cpu")) == 1
    err = capsys.readouterr().err
    assert "403 Forbidden" in err and "KFP_NAMESPACE" in err
    assert ("POST", f"{API}/runs") not in _calls(state)


def test_multi_user_without_a_namespace_and_a_login_page_are_named(
    kfp_server: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = kfp_server
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", profile="cpu")) == 1
    assert "multi-user: set KFP_NAMESPACE" in capsys.readouterr().err
    state.login_page = True
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", profile="cpu")) == 1
    assert "did not answer as the KFP API" in capsys.readouterr().err
    assert ("POST", f"{API}/runs") not in _calls(state)


def test_an_unreachable_host_fails_fast_and_clearly(
    kfp_server: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", profile="cpu")) == 1
    assert time.monotonic() - started < 60  # compile included; no 5 x 5 s retries
    err = capsys.readouterr().err
    assert f"KFP at http://127.0.0.1:{port} is unreachable" in err and "KFP_HOST" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--param", "nope=1"], "the pipeline has no parameter nope"),
        (["--param", "max_rows=many"], "max_rows is NUMBER_INTEGER"),
        (["--param", "max_rows"], "write NAME=VALUE"),
        (["--param", "min_accuracy=3"], "--min-accuracy must be at most 1"),
        (["--profile", "moon"], "Unknown --profile 'moon'"),
    ],
)
def test_bad_input_sends_nothing(
    kfp_server: tuple[str, FakeKfp],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: str,
) -> None:
    _, state = kfp_server
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", *args, profile="cpu")) == 2
    assert expected in capsys.readouterr().err
    assert state.requests == []


def test_no_data_and_no_host_are_named(
    kfp_server: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = kfp_server
    assert main(_submit(tmp_path, profile="cpu")) == 2
    assert "the pipeline needs data: give --data" in capsys.readouterr().err
    monkeypatch.delenv("KFP_HOST")
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", profile="cpu")) == 2  # bad input, as docs/cluster.md says
    assert "no KFP endpoint: set KFP_HOST" in capsys.readouterr().err
    assert state.requests == []


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("", "no KFP endpoint: set KFP_HOST"),
        ("kubeflow.example.com/pipeline", "has no scheme: write http://kubeflow.example.com/pipeline"),
        ("ftp://kubeflow.example.com", "is not an http(s) URL"),
        ("https:///pipeline", "is not an http(s) URL"),
    ],
)
def test_a_missing_or_malformed_endpoint_is_bad_input(
    kfp_server: tuple[str, FakeKfp],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    host: str,
    words: str,
) -> None:
    """Exit 2 and one line, nothing compiled or sent (it was 1, the code of an endpoint that failed)."""
    _, state = kfp_server
    monkeypatch.setenv("KFP_HOST", host)
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", profile="cpu")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert state.requests == [] and not (tmp_path / "pipeline.yaml").exists()


def test_an_unreadable_token_file_is_bad_input(
    kfp_server: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state = kfp_server
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    assert main(_submit(tmp_path, "--data", "s3://b/r.csv", profile="cpu")) == 2
    assert "KF_PIPELINES_SA_TOKEN_PATH" in capsys.readouterr().err and state.requests == []
