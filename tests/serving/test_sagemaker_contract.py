"""SageMaker's hosting contract, on the real model server: the serve image's own `serve` program
(images/serve, `python -m serving serve`) started in a subprocess on a free loopback port with a tiny
classifier, its options from the environment as CreateModel's ``Environment`` gives them. ``GET /ping`` is 200
once ready (503 for a model that is not loaded, in this process); ``POST /invocations``
with SageMaker's extra headers answers exactly as ``:predict`` does, and with evaluate's labels (evaluate's core
on the same model and test reviews)."""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from components.common import schema
from components.deploy.smoke import SmokeReview, compare, smoke_set
from components.evaluate import core as evaluate
from serving import __main__ as cli
from serving.testing import ServerProcess, request
from tests import testing

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "images" / "serve"
#: The training's token limit (evaluate's features): the endpoint's server must cut texts to it as well.
SEQ = 8
MAX_TEXTS = 16
#: Headers SageMaker's runtime adds to what a client sends to InvokeEndpoint.
SAGEMAKER_HEADERS = {
    "Accept": "application/json",
    "X-Amzn-SageMaker-Custom-Attributes": "trace=1,source=test",
    "X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678",
    "X-Amzn-SageMaker-Inference-Id": "smoke-1",
}


@dataclass(frozen=True)
class Evaluated:
    reviews: list[SmokeReview]


@pytest.fixture(scope="module")
def evaluated(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    """Evaluate's core on the tiny classifier and 24 synthetic test reviews cut to `SEQ` tokens; the smoke set
    (12 reviews, their texts and evaluate's answers) as deploy builds it."""
    root = tmp_path_factory.mktemp("contract")
    texts, labels, facets = testing.synthetic_reviews(24, seed=7)
    features = testing.features(texts, labels, SEQ, facets=facets)
    pd.DataFrame({schema.REVIEW_ID: features[schema.REVIEW_ID], schema.TEXT: texts}).to_parquet(root / "r.parquet")
    evaluate.run(features, model_dir, root / "e.json", root / "e.html", 0.0, None, predictions_path=root / "p.parquet")
    return Evaluated(smoke_set(root / "p.parquet", root / "r.parquet", 12))


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """images/serve with the venv's python first on the PATH (as in the image) and two options from the
    environment (as CreateModel's Environment sets them); the test's flags after `serve` pick the directory,
    the loopback address and a free port."""
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SERVING_MAX_SEQ_LENGTH": str(SEQ),
        "SERVING_MAX_TEXTS": str(MAX_TEXTS),
    }
    log = tmp_path_factory.mktemp("sagemaker-server") / "server.log"
    process = ServerProcess(model_dir, log, program=[str(SERVE)], env=environment)
    try:
        yield process.wait()
    finally:
        process.stop()


def test_ping_is_200_once_the_model_is_ready(server: ServerProcess) -> None:
    reply = request(f"{server.url}/ping", headers=SAGEMAKER_HEADERS)
    assert reply.status == 200


def test_invocations_answer_as_predict_does_and_as_evaluate_did(server: ServerProcess, evaluated: Evaluated) -> None:
    texts = [r.text for r in evaluated.reviews]
    invoked = request(f"{server.url}/invocations", {"instances": texts}, headers=SAGEMAKER_HEADERS)
    predicted = request(server.v1, {"instances": texts})
    assert invoked.status == predicted.status == 200, invoked.body
    assert invoked.json() == predicted.json()
    result = compare(evaluated.reviews, invoked.json()["predictions"])
    assert result.ok, result.describe()
    assert result.matched + result.ties == len(texts) == 12
    assert result.max_probability_difference < 1e-4


def test_invocations_takes_a_json_body_whatever_its_content_type(server: ServerProcess) -> None:
    body = b'{"instances": ["lovely dress", "awful"]}'
    plain = request(f"{server.url}/invocations", body, headers={"Content-Type": "text/plain"})
    assert plain.status == 200, plain.body
    assert plain.json() == request(server.v1, {"instances": ["lovely dress", "awful"]}).json()


def test_serve_reads_its_options_from_the_environment(server: ServerProcess) -> None:
    """SERVING_MAX_SEQ_LENGTH: two texts alike in their first tokens only get the same answer; SERVING_MAX_TEXTS:
    one text more than allowed is HTTP 413, on /invocations as on :predict."""
    head = "lovely dress perfect fit great colour and such soft fabric"
    answers = request(f"{server.url}/invocations", {"instances": [f"{head} awful", f"{head} returned it broken"]})
    first, second = answers.json()["predictions"]
    assert first == second
    too_many = {"instances": ["fine"] * (MAX_TEXTS + 1)}
    refused = request(f"{server.url}/invocations", too_many)
    assert refused.status == 413 and f"at most {MAX_TEXTS} per request" in refused.body.decode()
    assert request(server.v1, too_many).status == 413


@pytest.mark.parametrize(
    ("body", "status"),
    [({"inputs": ["a"]}, 400), ({"instances": []}, 400), (b"not json", 400)],
)
def test_invocations_refuses_what_predict_refuses(server: ServerProcess, body: object, status: int) -> None:
    invoked = request(f"{server.url}/invocations", body)
    assert invoked.status == request(server.v1, body).status == status


def test_invocations_answers_other_methods_405_as_predict_does(server: ServerProcess) -> None:
    for url in (f"{server.url}/invocations", server.v1):
        with pytest.raises(urllib.error.HTTPError) as reply:
            urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=30)
        assert reply.value.code == 405 and reply.value.headers["Allow"] == "POST"
        assert "send the texts with POST" in json.loads(reply.value.read())["error"]


def test_ping_is_503_while_the_model_is_not_ready(model_dir: Path) -> None:
    """The route in this process, on the model before and after it loads."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from serving.config import ServeConfig
    from serving.model import ReviewSentimentModel
    from serving.server import add_sagemaker_routes

    model = ReviewSentimentModel(ServeConfig(model_dir=str(model_dir)))
    app = FastAPI()
    add_sagemaker_routes(app, model)
    client = TestClient(app)
    assert client.get("/ping").status_code == 503
    model.load()
    assert client.get("/ping").status_code == 200


def test_serve_defaults_are_sagemakers() -> None:
    """No flags, no variables: /opt/ml/model on every interface, port 8080 (or SAGEMAKER_BIND_TO_PORT)."""
    args = cli.parser().parse_args(cli.serve_argv([], {}))
    assert (args.model_dir, args.host, args.port) == ("/opt/ml/model", "0.0.0.0", 8080)
    environ = {"SAGEMAKER_BIND_TO_PORT": "9090", "SERVING_MAX_TEXT_CHARS": "9000", "SERVING_CHAMPION": "false"}
    args = cli.parser().parse_args(cli.serve_argv(["--max-text-chars", "7000"], environ))
    assert (args.port, args.max_text_chars, args.champion) == (9090, 7000, False)  # a flag beats the variable


def test_a_bad_option_in_the_environment_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERVING_MAX_TEXTS", "many")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve"])
    assert stopped.value.code == 2
    assert re.fullmatch(r"error: argument --max-texts: expected int, got 'many'.*\n", capsys.readouterr().err)


def test_the_serve_image_runs_serve_for_sagemaker() -> None:
    """`docker run IMAGE serve` runs the program `serve` on the PATH: images/serve, copied into the venv's bin."""
    stage = (ROOT / "images" / "Dockerfile").read_text().split("FROM serve-deps AS serve", 1)[1]
    assert "COPY images/serve /opt/venv/bin/serve" in stage
    assert "!images/serve" in (ROOT / ".dockerignore").read_text().splitlines()
    assert os.access(SERVE, os.X_OK)
    assert SERVE.read_text().rstrip().endswith('exec python -m serving serve "$@"')
