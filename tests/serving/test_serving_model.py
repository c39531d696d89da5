"""The server's model logic without HTTP: texts → probabilities agree with the bare model, request parsing and
limits of both protocols, the `kserve.Model` called as KServe's data plane calls it, bad model directories."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.classifier import SentimentClassifier
from serving.config import ServeConfig

TEXTS = ["lovely dress, perfect fit", "awful", "it was okay I guess, the fabric is fine but the color " * 3, ""]


def bare_probabilities(classifier: SentimentClassifier, text: str) -> np.ndarray:
    """One text through the Hugging Face model itself: no batching, no padding."""
    import torch

    encoded = classifier.tokenizer(text, truncation=True, max_length=classifier.max_seq_length, return_tensors="pt")
    with torch.inference_mode():
        logits = classifier.model(**encoded).logits.float()
    return torch.softmax(logits, dim=-1)[0].numpy()


def test_batched_probabilities_agree_with_the_bare_model_one_text_at_a_time(classifier: SentimentClassifier) -> None:
    rows = classifier.probabilities(TEXTS)
    assert rows.shape == (len(TEXTS), 3)
    for text, row in zip(TEXTS, rows, strict=True):
        np.testing.assert_allclose(row, bare_probabilities(classifier, text), atol=1e-5)
    predictions = classifier.classify(TEXTS)
    assert classifier.labels == ("negative", "neutral", "positive")
    for prediction, row in zip(predictions, rows, strict=True):
        assert prediction.label == classifier.labels[int(row.argmax())]
        assert prediction.score == pytest.approx(float(row.max()))
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_long_texts_are_cut_to_max_seq_length(classifier: SentimentClassifier) -> None:
    ids = classifier.token_ids(["word " * 500, "short"])
    assert [len(i) for i in ids] == [classifier.max_seq_length, 3]


V2_GOOD = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["good", "bad"]}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"instances": "one text"}, "must be a list"),
        ({"instances": ["ok", 3]}, r"instances\[1\] is int"),
        ({"texts": ["ok"]}, "with 'instances'"),
        ([1, 2], "with 'instances', got list"),
        ({"instances": []}, "no texts"),
        (b'{"instances": ["unterminated', "not valid JSON"),
        ({"inputs": [V2_GOOD, V2_GOOD]}, "exactly one input"),
        ({"inputs": [{**V2_GOOD, "datatype": "INT32", "data": [1, 2]}]}, "expected BYTES"),
        ({"inputs": [{**V2_GOOD, "shape": [3]}]}, "does not fit shape"),
        ({"inputs": [{**V2_GOOD, "data": []}]}, "does not fit shape|no texts"),
        # Training drops empty texts: the model has no answer for them.
        ({"instances": ["ok", ""]}, r"instances\[1\] is empty: .*\(training drops empty ones\)"),
        ({"instances": [" \n\t"]}, r"instances\[0\] is only whitespace"),
        ({"inputs": [{**V2_GOOD, "shape": [2], "data": ["fine", ""]}]}, r"Input element 1 is empty"),
    ],
)
def test_bad_requests_are_invalid_input(body: object, match: str) -> None:
    from kserve.errors import InvalidInput

    from serving.model import LimitExceeded, ReviewSentimentModel

    model = ReviewSentimentModel(ServeConfig(model_dir="unused"))
    with pytest.raises(InvalidInput, match=match) as error:
        asyncio.run(model.preprocess(_payload(body)))
    assert not isinstance(error.value, LimitExceeded)


@pytest.mark.parametrize(
    ("texts", "match"),
    [(["a"] * 5, "has 5 texts; at most 4 per request"), (["ok", "x" * 11], "Text 1 has 11 characters; at most 10")],
)
@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_requests_over_a_limit_are_limit_exceeded(texts: list[str], match: str, protocol: str) -> None:
    from serving.model import LimitExceeded, ReviewSentimentModel

    model = ReviewSentimentModel(ServeConfig(model_dir="unused", max_texts=4, max_text_chars=10))
    body = {"instances": texts} if protocol == "v1" else {"inputs": [{**V2_GOOD, "shape": [len(texts)], "data": texts}]}
    with pytest.raises(LimitExceeded, match=match):
        asyncio.run(model.preprocess(_payload(body)))


def _payload(body: object) -> object:
    """What KServe's data plane hands the model: a dict (V1 JSON), bytes (V1, other content type) or an
    InferRequest (V2)."""
    from kserve.protocol.infer_type import InferRequest
    from kserve.protocol.rest.v2_datamodels import InferenceRequest

    if isinstance(body, dict) and "inputs" in body:
        return InferRequest.from_inference_request(InferenceRequest.model_validate(body), "review-sentiment")
    return body


def test_the_kserve_model_answers_v1_and_v2_like_the_classifier(classifier: SentimentClassifier) -> None:
    from serving.model import ReviewSentimentModel

    model = ReviewSentimentModel(ServeConfig(model_dir="unused", max_latency_ms=1), classifier)
    texts = TEXTS[:3]
    expected = classifier.probabilities(texts)

    async def call_both() -> tuple[object, object, object]:
        try:
            return await asyncio.gather(
                model({"instances": texts}, {}),
                model(b'{"instances": ["awful"]}', {}),  # a body KServe did not decode (not JSON content)
                model(_payload({"inputs": [{**V2_GOOD, "shape": [3], "data": texts}]}), {}),
            )
        finally:
            assert model.batcher is not None
            await model.batcher.close()

    (v1, _), (raw, _), (v2, _) = asyncio.run(call_both())
    got = np.array([[p["probabilities"][c] for c in classifier.labels] for p in v1["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [p["label"] for p in v1["predictions"]] == [classifier.labels[i] for i in expected.argmax(axis=1)]
    assert raw["predictions"][0]["probabilities"]["negative"] == pytest.approx(float(expected[1][0]), abs=1e-5)
    outputs = {o.name: o for o in v2.outputs}
    np.testing.assert_allclose(np.asarray(outputs["probabilities"].data).reshape(3, 3), expected, atol=1e-5)
    assert list(outputs["label"].data) == [p["label"] for p in v1["predictions"]]
    assert v2.parameters == {"classes": "negative,neutral,positive"}


def _config_only(model_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, target / name)
    return target


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d, t: t / "missing", "does not exist"),
        (lambda d, t: (t / "empty").mkdir() or t / "empty", "has no config.json"),
        (lambda d, t: _config_only(d, t / "no-weights"), "Cannot load the classifier in"),
        (lambda d, t: d.parent / "base", "predicts labels"),  # the tiny BERT without the pipeline's head
    ],
    ids=["missing", "empty", "no-weights", "other-labels"],
)
def test_a_model_directory_that_does_not_load_is_a_value_error(model_dir: Path, tmp_path: Path, make, match) -> None:
    with pytest.raises(ValueError, match=match):
        SentimentClassifier.load(make(model_dir, tmp_path))


def test_a_max_seq_length_above_the_models_positions_is_refused_before_loading(model_dir: Path) -> None:
    """The tiny BERT has 512 positions: a longer text would fail in torch (HTTP 500 for every such text). The
    champion's directory takes this path too (`--champion` knows its model only once downloaded)."""
    with pytest.raises(ValueError, match=r"--max-seq-length 513 is more than model .* 512 tokens per text"):
        SentimentClassifier.load(model_dir, max_seq_length=513)
    with pytest.raises(ValueError, match=r"--max-seq-length 600 is more than model"):
        ServeConfig(model_dir=str(model_dir), max_seq_length=600).validate()
    assert SentimentClassifier.load(model_dir, max_seq_length=512).max_seq_length == 512


def test_v2_binary_tensors_in_and_out(classifier: SentimentClassifier) -> None:
    """KServe's binary extension: texts as a serialized BYTES tensor after the JSON header, binary outputs."""
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    from serving.model import ReviewSentimentModel

    texts = TEXTS[:2]
    tensor = InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=True)
    wanted = [RequestedOutput("probabilities", {"binary_data": True}), RequestedOutput("label", {"binary_data": False})]
    body, json_length = InferRequest("review-sentiment", [tensor], request_outputs=wanted).to_rest()
    request = InferRequest.from_bytes(body, json_length, "review-sentiment")
    model = ReviewSentimentModel(ServeConfig(model_dir="unused"), classifier)

    async def call() -> object:
        try:
            return (await model(request, {}))[0]
        finally:
            assert model.batcher is not None
            await model.batcher.close()

    reply, reply_json_length = asyncio.run(call()).to_rest()
    header = json.loads(reply[:reply_json_length])
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "label"]
    rows = np.frombuffer(reply[reply_json_length:], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(rows, classifier.probabilities(texts), atol=1e-5)
    assert header["outputs"][1]["data"] == [classifier.labels[i] for i in rows.argmax(axis=1)]
