"""The real model server (`python -m serving` in a subprocess) over HTTP on a free loopback port: V1 and V2
answers agree with the model called directly, concurrent requests are batched (the server's own metrics
count the forward passes) and each caller gets its own answer, limits give 413, malformed requests 400, the
server keeps serving after them; a bad model directory and a port in use stop the CLI with one clear line."""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving.classifier import SentimentClassifier
from serving.testing import Response, ServerProcess, free_port, request

pytestmark = pytest.mark.integration

MAX_TEXTS, MAX_TEXT_CHARS = 8, 200


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server on the tiny model: small limits, batches wait up to 50 ms for more requests."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    process = ServerProcess(
        model_dir, log, "--max-latency-ms", "50", "--max-texts", str(MAX_TEXTS), "--max-text-chars", str(MAX_TEXT_CHARS)
    )
    try:
        yield process.wait()
    finally:
        process.stop()


def v1(server: ServerProcess, texts: list[str]) -> Response:
    return request(server.v1, {"instances": texts})


def v2(server: ServerProcess, texts: list[str], request_id: str = "") -> Response:
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    return request(server.v2, {"id": request_id, "inputs": [tensor]} if request_id else {"inputs": [tensor]})


def v1_rows(reply: Response, labels: tuple[str, ...]) -> np.ndarray:
    assert reply.status == 200, reply.body
    return np.array([[p["probabilities"][c] for c in labels] for p in reply.json()["predictions"]])


def v2_rows(reply: Response) -> np.ndarray:
    assert reply.status == 200, reply.body
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    return np.array(outputs["probabilities"]["data"], dtype=np.float64).reshape(outputs["probabilities"]["shape"])


def metric(server: ServerProcess, name: str) -> float:
    text = request(f"{server.url}/metrics").body.decode()
    found = re.search(rf'^{name}\{{model_name="{server.name}"\}} ([0-9.e+]+)$', text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


TEXTS = ["lovely dress, perfect fit", "awful, returned it", "okay I guess " * 15, "é ✓ 中文 emoji 🙂"]


def test_ready_routes_and_metadata(server: ServerProcess) -> None:
    routes = ("/v2/health/live", "/v2/health/ready", f"/v1/models/{server.name}", f"/v2/models/{server.name}/ready")
    for route in routes:
        assert request(server.url + route).status == 200, route
    metadata = request(f"{server.url}/v2/models/{server.name}").json()
    assert [o["name"] for o in metadata["outputs"]] == ["label", "score", "probabilities"]
    assert request(f"{server.url}/v1/models/no-such-model").status == 404


def test_v1_and_v2_agree_with_the_model_called_directly(server: ServerProcess, classifier: SentimentClassifier) -> None:
    expected = classifier.probabilities(TEXTS)
    np.testing.assert_allclose(v1_rows(v1(server, TEXTS), classifier.labels), expected, atol=1e-5)
    reply = v2(server, TEXTS, request_id="r-1")
    np.testing.assert_allclose(v2_rows(reply), expected, atol=1e-5)
    body = reply.json()
    assert body["id"] == "r-1" and body["parameters"] == {"classes": "negative,neutral,positive"}
    labels = next(o for o in body["outputs"] if o["name"] == "label")
    assert labels["data"] == [classifier.labels[i] for i in expected.argmax(axis=1)]
    predictions = v1(server, TEXTS).json()["predictions"]
    assert [p["label"] for p in predictions] == labels["data"]
    assert [p["score"] for p in predictions] == pytest.approx(expected.max(axis=1).tolist(), abs=1e-5)


def test_concurrent_requests_are_batched_and_each_caller_gets_its_own_answer(
    server: ServerProcess, classifier: SentimentClassifier
) -> None:
    """24 requests at once from 12 threads, V1 and V2 mixed, each with texts of its own."""
    requests = [[f"review {i}: " + "great " * (i % 7) + "bad " * (i % 3)] * (1 + i % 3) for i in range(24)]
    expected = [classifier.probabilities(texts) for texts in requests]
    passes_before, requests_before = (metric(server, f"sentiment_batch_{n}_count") for n in ("texts", "requests"))
    served_before = metric(server, "sentiment_batch_requests_sum")

    def call(i: int) -> np.ndarray:
        if i % 2:
            return v2_rows(v2(server, requests[i]))
        return v1_rows(v1(server, requests[i]), classifier.labels)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(call, range(len(requests))))
    for got, want in zip(answers, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    passes = metric(server, "sentiment_batch_texts_count") - passes_before
    served = metric(server, "sentiment_batch_requests_sum") - served_before
    assert served == len(requests)
    assert passes < len(requests), f"{len(requests)} requests took {passes:.0f} forward passes: nothing was batched"
    assert metric(server, "request_predict_seconds_count") >= len(requests)  # kserve's own metrics are there too
    assert requests_before == passes_before


TENSOR = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["fine"]}
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("route", "body", "headers", "status", "message"),
    [
        ("v1", {"instances": ["a"] * (MAX_TEXTS + 1)}, {}, 413, f"at most {MAX_TEXTS} per request"),
        ("v1", {"instances": ["ok", "x" * (MAX_TEXT_CHARS + 1)]}, {}, 413, f"at most {MAX_TEXT_CHARS}"),
        ("v2", {"inputs": [{**TENSOR, "shape": [MAX_TEXTS + 1], "data": ["a"] * (MAX_TEXTS + 1)}]}, {}, 413, "texts"),
        ("v2", {"inputs": [{**TENSOR, "data": ["x" * (MAX_TEXT_CHARS + 1)]}]}, {}, 413, "characters"),
        ("v1", b'{"instances": ["unterminated', JSON, 400, ""),
        ("v1", b'{"instances": ["no content type"', {}, 400, "not valid JSON"),
        ("v1", b"\xff\xfe not even text", JSON, 400, ""),
        ("v2", b'{"inputs": [{"name": "text",', JSON, 400, "Malformed request"),
        ("v2", {"inputs": [{"name": "text"}]}, {}, 400, "Malformed request"),
        ("v1", {"instances": [1, 2]}, {}, 400, "not a text"),
        ("v1", {"instances": []}, {}, 400, "no texts"),
        ("v1", {"text": "hello"}, {}, 400, "instances"),
        ("v2", {"inputs": [{**TENSOR, "datatype": "FP32", "data": [1.0]}]}, {}, 400, "expected BYTES"),
        ("v2", {"inputs": [{**TENSOR, "shape": [2]}]}, {}, 400, "does not fit shape"),
        ("v1", {"instances": [""]}, {}, 400, "instances[0] is empty"),
        ("v2", {"inputs": [{**TENSOR, "data": ["   "]}]}, {}, 400, "Input element 0 is only whitespace"),
    ],
)
def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(
    server: ServerProcess, route: str, body: object, headers: dict[str, str], status: int, message: str
) -> None:
    reply = request(server.v1 if route == "v1" else server.v2, body, headers)
    assert reply.status == status, reply.body
    assert message in reply.json()["error"]
    assert v1(server, ["still serving"]).status == 200
    assert v2(server, ["still serving"]).status == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_predict_route_answers_other_methods_405_not_model_not_found(server: ServerProcess, method: str) -> None:
    """KServe's own GET /v1/models/{name} used to take 'review-sentiment:predict' for a model name: 404."""
    req = urllib.request.Request(server.v1, method=method)
    with pytest.raises(urllib.error.HTTPError) as reply:
        urllib.request.urlopen(req, timeout=30)
    assert reply.value.code == 405 and reply.value.headers["Allow"] == "POST"
    assert "send the texts with POST" in json.loads(reply.value.read())["error"]
    assert request(f"{server.url}/v1/models/{server.name}").status == 200  # the ready route is still there
    assert v1(server, ["still serving"]).status == 200


def test_a_rejected_request_is_one_log_line_without_a_traceback(server: ServerProcess) -> None:
    marker = "marker-" + "x" * (MAX_TEXT_CHARS + 1)
    assert v1(server, [marker]).status == 413
    assert v1(server, [1, 2]).status == 400  # KServe's own InvalidInput handler logged a traceback for this
    assert request(f"{server.url}/v1/models/no-such-model:predict", {"instances": ["a"]}).status == 404
    time.sleep(0.5)  # the log is written by the server process
    log = server.tail(200_000)
    assert "Traceback" not in log and "kserve/errors.py" not in log
    assert len([line for line in log.splitlines() if "rejected with HTTP 413" in line and "Text 0 has" in line]) >= 1
    assert any("rejected with HTTP 400" in line and "instances[0] is int" in line for line in log.splitlines())
    assert any("rejected with HTTP 404" in line for line in log.splitlines())


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_a_port_in_use_is_one_clear_error(model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--model-dir", str(model_dir), "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: Port {port} on 127.0.0.1 is in use (another server?); pass a free --port."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-dir", "{tmp}/missing"], "no such directory"),
        (["--model-dir", "{tmp}"], "has no config.json"),
        (["--model-dir", "{base}"], "predicts labels"),
        (["--port", "0"], "--port: must be at least 1"),
        ([], "--model-dir is required"),
        # The tiny BERT has 512 positions: a longer text would be HTTP 500 from torch, every time.
        (["--model-dir", "{model}", "--max-seq-length", "600"], "--max-seq-length 600 is more than model"),
    ],
    ids=["missing", "empty", "other-labels", "bad-port", "no-model-dir", "seq-length-above-positions"],
)
def test_a_model_directory_that_does_not_load_is_one_clear_error(
    model_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    argv = [a.format(tmp=tmp_path, base=model_dir.parent / "base", model=model_dir) for a in args]
    result = run_cli(*argv, "--port", str(free_port())) if "--port" not in argv else run_cli(*argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_no_champion_is_one_clear_error(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_cli("--champion", "--mlflow-tracking-uri", uri, "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: No champion to serve: the MLflow registry at {uri} has no version")
    assert "--model-dir DIR (make serve MODEL_DIR=DIR)" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()  # looking created no database


def test_the_champion_is_downloaded_and_loads(model_dir: Path, tmp_path: Path) -> None:
    from components.common import tracking
    from serving.champion import champion_dir

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.register_version(uri, "reviews", str(model_dir), "", {}, alias=tracking.CHAMPION)
    path, version = champion_dir(uri, "reviews", tmp_path / "download")
    assert version.startswith("reviews version 1 (alias champion")
    assert SentimentClassifier.load(path).labels == ("negative", "neutral", "positive")
