"""Serving by review id: the real model server (`python -m serving --feature-store DIR`) reads reviews' token
ids from a real embedded Feast store (SQLite online store) that featurize and feast_ingest wrote, and answers
exactly as for the reviews' texts; unknown ids are HTTP 404 naming them; a server without a store says how to
start one.  Without HTTP: the tokenizer's own truncation equals `cut` of a longer stored sequence, ids beyond
the model's vocabulary are refused, a store with nothing ingested stops the server before the model loads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.common import schema
from serving.classifier import SentimentClassifier, cut
from serving.config import ServeConfig
from serving.testing import ServerProcess, free_port, request

MAX_SEQ_LENGTH = 32  # what tests.stores' featurize cut the stored reviews to


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Feast store (SQLite online, DuckDB/Parquet offline) of 40 synthetic reviews, through the real featurize
    and feast_ingest cores; ``reviews.parquet`` beside it holds their texts."""
    from tests.stores import synthetic_feature_store

    return synthetic_feature_store(tmp_path_factory.mktemp("fs-serving"), rows=40, seed=7)


@pytest.fixture(scope="module")
def texts(store: Path) -> dict[str, str]:
    table = pq.read_table(store.parent / "reviews.parquet", columns=[schema.REVIEW_ID, schema.TEXT])
    return dict(zip(table[schema.REVIEW_ID].to_pylist(), table[schema.TEXT].to_pylist(), strict=True))


@pytest.fixture(scope="module")
def server(model_dir: Path, store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("fs-server") / "server.log"
    process = ServerProcess(model_dir, log, "--feature-store", str(store), "--max-seq-length", str(MAX_SEQ_LENGTH))
    try:
        yield process.wait()
    finally:
        process.stop()


def _v1(server: ServerProcess, instances: list) -> list[dict]:
    reply = request(server.v1, {"instances": instances})
    assert reply.status == 200, reply.body
    return reply.json()["predictions"]


@pytest.mark.integration
def test_predicting_by_review_id_answers_as_by_its_text(server: ServerProcess, texts: dict[str, str]) -> None:
    ids = sorted(texts)[::5]
    by_id = _v1(server, [{"review_id": rid} for rid in ids])
    by_text = _v1(server, [texts[rid] for rid in ids])
    assert [p["label"] for p in by_id] == [p["label"] for p in by_text]
    for a, b in zip(by_id, by_text, strict=True):
        assert a["probabilities"].keys() == b["probabilities"].keys()
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5)
    mixed = _v1(server, [texts[ids[0]], {"review_id": ids[1]}])  # texts and ids in one request
    assert [p["label"] for p in mixed] == [by_text[0]["label"], by_text[1]["label"]]

    tensor = {"name": "review_id", "shape": [len(ids)], "datatype": "BYTES", "data": ids}
    reply = request(server.v2, {"inputs": [tensor]})
    assert reply.status == 200, reply.body
    labels = next(o for o in reply.json()["outputs"] if o["name"] == "label")["data"]
    assert labels == [p["label"] for p in by_text]


@pytest.mark.integration
def test_unknown_review_ids_are_one_404_naming_them(server: ServerProcess, texts: dict[str, str]) -> None:
    known = sorted(texts)[0]
    reply = request(server.v1, {"instances": [{"review_id": "no-such-1"}, {"review_id": known}, {"review_id": "x-2"}]})
    assert reply.status == 404, reply.body
    error = reply.json()["error"]
    assert "Unknown review id(s) 'no-such-1', 'x-2'" in error and known not in error
    assert "send the review texts" in error
    assert _v1(server, [{"review_id": known}])  # still serving
    assert request(server.v1, {"instances": [{"review_id": 7}]}).status == 400


def test_a_server_without_a_feature_store_says_how_to_serve_by_id(classifier: SentimentClassifier) -> None:
    from kserve.errors import InvalidInput

    from serving.model import ReviewSentimentModel

    model = ReviewSentimentModel(ServeConfig(model_dir="unused"), classifier)
    with pytest.raises(InvalidInput, match=r"instances\[1\] is a review id, .* start it with --feature-store"):
        asyncio.run(model.preprocess({"instances": ["a text", {"review_id": "id-00001"}]}))


def test_stored_ids_from_another_tokenizer_are_refused(classifier: SentimentClassifier) -> None:
    from kserve.errors import InvalidInput

    from serving.model import check_vocabulary

    vocabulary = classifier.model.config.vocab_size
    check_vocabulary("r0", np.array([101, vocabulary - 1, 102]), vocabulary)
    with pytest.raises(InvalidInput, match=rf"Review 'r1'.* reach {vocabulary}, beyond this model's vocabulary"):
        check_vocabulary("r1", np.array([101, vocabulary, 102]), vocabulary)


def test_cut_stored_ids_equal_the_tokenizers_truncation(classifier: SentimentClassifier) -> None:
    text = "the fabric is lovely but the sizing runs small and the colour faded after one wash " * 3
    full = classifier.tokenizer(text, truncation=True, max_length=64)["input_ids"]
    for length in (8, 20, 64):
        expected = classifier.tokenizer(text, truncation=True, max_length=length)["input_ids"]
        assert cut(np.array(full), length).tolist() == expected


def test_a_feature_store_with_nothing_ingested_stops_the_server(model_dir: Path, tmp_path: Path) -> None:
    from serving.server import serve

    config = ServeConfig(model_dir=str(model_dir), port=free_port(), feature_store=str(tmp_path))
    with pytest.raises(ValueError, match=r"No feature store registry at .*run the feast_ingest step first"):
        serve(config)
    with pytest.raises(ValueError, match=r"--feature-store .*no-such: no such directory"):
        ServeConfig(model_dir=str(model_dir), feature_store=str(tmp_path / "no-such")).validate()
