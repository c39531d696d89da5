"""The `kserve.Model` of the review classifier: V1 and V2 (Open Inference Protocol) requests, batched.

- V1: ``POST /v1/models/<name>:predict`` with ``{"instances": ["text", …]}`` →
  ``{"predictions": [{"label", "score", "probabilities": {class: p}}, …]}``.
- V2: ``POST /v2/models/<name>/infer`` with one ``BYTES`` input of texts (shape ``[n]``; any name) → outputs
  ``label`` (BYTES ``[n]``), ``score`` (FP32 ``[n]``) and ``probabilities`` (FP32 ``[n, classes]``, columns in
  the order of the response's ``classes`` parameter).
- By review id, when the server reads a feature store (``--feature-store``, `serving.features`): a V1 instance
  ``{"review_id": "…"}`` in place of a text, or a V2 input named ``review_id``; the review's token ids come
  from the Feast online store (as KServe's Feast transformer sample reads its entities' features), the answer
  is the same as for its text.  Ids the store does not hold: HTTP 404 naming them.

`preprocess` turns either protocol's body into texts and checks the limits (a request body that kserve did
not decode — any content type other than JSON — reaches it as bytes); `predict` hands the texts to the
`MicroBatcher`, which runs one forward pass of `SentimentClassifier` for many concurrent requests.  Bad
requests — a text that is empty or only whitespace among them, which training never sees — raise
`kserve.errors.InvalidInput` (HTTP 400); requests over a limit raise `LimitExceeded`
(HTTP 413, see `serving.server`).  Metrics: kserve's request histograms plus the batch sizes here.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Histogram

from components.common import schema
from serving.batcher import MicroBatcher
from serving.classifier import SentimentClassifier
from serving.config import ServeConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from collections.abc import Mapping

    from serving.features import OnlineFeatures

_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Texts per forward pass (its ``_count`` is the number of forward passes).
BATCH_TEXTS = Histogram(
    "sentiment_batch_texts", "Texts per forward pass of the batcher", ["model_name"], buckets=_BUCKETS
)
#: Requests per forward pass (> 1: requests were batched together).
BATCH_REQUESTS = Histogram(
    "sentiment_batch_requests", "Requests per forward pass of the batcher", ["model_name"], buckets=_BUCKETS
)
#: Seconds per forward pass (tokenize, pad, forward, softmax).
BATCH_SECONDS = Histogram("sentiment_batch_seconds", "Seconds per forward pass of the batcher", ["model_name"])

V1_FORMAT = 'V1 requests are {"instances": ["text", ...]} (or {"review_id": "..."} objects, with --feature-store)'
V2_FORMAT = (
    'V2 requests have one BYTES input of texts: {"inputs": [{"name": "text", "shape": [n], "datatype": "BYTES", '
    '"data": ["text", ...]}]}'
)


class LimitExceeded(InvalidInput):
    """A request over a limit (too many texts, too long a text): HTTP 413 with the message."""


@dataclass(frozen=True)
class ReviewId:
    """An instance given by review id (its features are in the feature store), not by text."""

    value: str


@dataclass
class TextRequest:
    """What `preprocess` hands `predict`: the texts (or, for a review given by id, its stored token ids), and
    the V2 request they came in (None for V1)."""

    texts: list[str | np.ndarray]
    v2: InferRequest | None = None


def _json(body: bytes | str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"The request body is not valid JSON: {error}. {V1_FORMAT}.") from error


def texts_from_v1(payload: Any) -> list[str | ReviewId]:
    """The texts of a V1 body (already parsed JSON); an instance ``{"review_id": "…"}`` is a `ReviewId`.

    Raises:
        InvalidInput: Not ``{"instances": [str or {"review_id": str}, …]}``.
    """
    if not isinstance(payload, dict) or "instances" not in payload:
        keys = f"keys {sorted(payload)}" if isinstance(payload, dict) else type(payload).__name__
        raise InvalidInput(f"Expected an object with 'instances', got {keys}. {V1_FORMAT}.")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f"'instances' must be a list of texts, got {type(instances).__name__}. {V1_FORMAT}.")
    items: list[str | ReviewId] = []
    for i, text in enumerate(instances):
        if isinstance(text, dict) and schema.REVIEW_ID in text:
            if set(text) != {schema.REVIEW_ID} or not isinstance(text[schema.REVIEW_ID], str):
                raise InvalidInput(f"instances[{i}] must be {{'review_id': '<id>'}} (one string key), got {text!r}.")
            items.append(ReviewId(text[schema.REVIEW_ID]))
        elif isinstance(text, str):
            items.append(text)
        else:
            raise InvalidInput(f"instances[{i}] is {type(text).__name__}, not a text (string). {V1_FORMAT}.")
    return items


def texts_from_v2(request: InferRequest) -> list[str]:
    """The texts of a V2 request's single BYTES input.

    Raises:
        InvalidInput: Not exactly one input, not BYTES, a shape that does not fit the data, or bytes that are
            not UTF-8.
    """
    if len(request.inputs) != 1:
        raise InvalidInput(f"Expected exactly one input, got {len(request.inputs)}. {V2_FORMAT}.")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"Input {tensor.name!r} has datatype {tensor.datatype}, expected BYTES. {V2_FORMAT}.")
    try:
        values = tensor.as_numpy().reshape(-1)
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"Input {tensor.name!r}: its data does not fit shape {tensor.shape} ({error}).") from error
    texts = []
    for i, value in enumerate(values.tolist()):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidInput(f"Input {tensor.name!r}, element {i}: not UTF-8 ({error}).") from error
        if not isinstance(value, str):
            raise InvalidInput(f"Input {tensor.name!r}, element {i} is {type(value).__name__}, not a text.")
        texts.append(value)
    return texts


def check_limits(texts: list[Any], max_texts: int, max_text_chars: int) -> None:
    """Raises: InvalidInput for no texts; `LimitExceeded` for too many or too long a text."""
    if not texts:
        raise InvalidInput("The request has no texts; send at least one.")
    if len(texts) > max_texts:
        raise LimitExceeded(
            f"The request has {len(texts)} texts; at most {max_texts} per request (--max-texts). Split it."
        )
    for i, text in enumerate(texts):
        if isinstance(text, str) and len(text) > max_text_chars:
            raise LimitExceeded(
                f"Text {i} has {len(text)} characters; at most {max_text_chars} (--max-text-chars). Shorten it."
            )


def check_not_blank(texts: list[Any], v2: bool) -> None:
    """Raises: InvalidInput naming the first text that is empty or only whitespace: prepare_data drops such
    reviews, so the model never learned an answer for them (a label would mean nothing)."""
    for i, text in enumerate(texts):
        if isinstance(text, str) and not text.strip():
            where = f"Input element {i}" if v2 else f"instances[{i}]"
            raise InvalidInput(
                f"{where} is {'empty' if not text else 'only whitespace'}: the model was trained on review texts "
                "only (training drops empty ones), so it has no answer for it. Send the review's text."
            )


def check_vocabulary(review_id: str, token_ids: np.ndarray, vocabulary: int) -> None:
    """Raises: InvalidInput when a review's stored token ids are not all below the model's vocabulary size
    (its features were made with another tokenizer; the embedding lookup would fail with HTTP 500)."""
    if len(token_ids) and int(token_ids.max()) >= vocabulary:
        raise InvalidInput(
            f"Review {review_id!r}'s stored token ids reach {int(token_ids.max())}, beyond this model's vocabulary "
            f"({vocabulary} tokens): its features were made with another tokenizer than the model's. Serve the "
            "model trained on this feature store, or send the review's text."
        )


class ReviewSentimentModel(Model):
    """A trained review classifier behind KServe's V1 and V2 routes, batching concurrent requests."""

    def __init__(
        self,
        config: ServeConfig,
        classifier: SentimentClassifier | None = None,
        features: OnlineFeatures | None = None,
    ) -> None:
        super().__init__(config.model_name)
        self.config = config
        self.classifier = classifier
        self.features = features  # reviews by id (--feature-store); None: texts only
        self.batcher: MicroBatcher[str | np.ndarray, np.ndarray] | None = None
        if classifier is not None:
            self._ready_with(classifier)

    def load(self) -> bool:
        """Load the model directory (see `SentimentClassifier.load`; ValueError when it cannot)."""
        config = self.config
        self._ready_with(
            SentimentClassifier.load(config.model_dir, config.max_seq_length, config.backend, config.torch_threads)
        )
        return self.ready

    def _ready_with(self, classifier: SentimentClassifier) -> None:
        self.classifier = classifier
        labels = {"model_name": self.name}
        texts, requests, seconds = (h.labels(**labels) for h in (BATCH_TEXTS, BATCH_REQUESTS, BATCH_SECONDS))

        def observe(n_texts: int, n_requests: int, elapsed: float) -> None:
            texts.observe(n_texts)
            requests.observe(n_requests)
            seconds.observe(elapsed)

        self.batcher = MicroBatcher(
            classifier.probabilities, self.config.max_batch_size, self.config.max_latency_ms, on_batch=observe
        )
        self.ready = True

    def validate(self, payload: Any) -> Any:
        return payload  # `preprocess` has checked it already

    async def preprocess(self, payload: Any, headers: Mapping[str, str] | None = None) -> TextRequest:
        items: list[str | ReviewId]
        if isinstance(payload, InferRequest):
            items = list(texts_from_v2(payload))
            if len(payload.inputs) == 1 and payload.inputs[0].name == schema.REVIEW_ID:
                items = [ReviewId(value) for value in items]  # texts_from_v2 gives strings
            v2 = payload
        else:
            if isinstance(payload, bytes | bytearray | str):  # a body kserve did not decode (not JSON content)
                payload = _json(payload)
            items, v2 = texts_from_v1(payload), None
        check_limits(items, self.config.max_texts, self.config.max_text_chars)
        check_not_blank(items, v2=v2 is not None)
        return TextRequest(await self._resolve_ids(items, v2 is not None), v2=v2)

    async def _resolve_ids(self, items: list[str | ReviewId], v2: bool) -> list[str | np.ndarray]:
        """Texts as they are; each `ReviewId` replaced by its token ids from the online store.

        Raises:
            InvalidInput: Review ids without a feature store, or stored ids that are not this model's.
            serving.features.UnknownReviews: Ids the store does not hold (HTTP 404).
        """
        at = [i for i, item in enumerate(items) if isinstance(item, ReviewId)]
        if not at:
            return list(items)  # texts only
        if self.features is None:
            where = f"Input {schema.REVIEW_ID!r}" if v2 else f"instances[{at[0]}]"
            raise InvalidInput(
                f"{where} is a review id, but this server reads no feature store: start it with --feature-store "
                "<run>/feature_store (the run's Feast repository), or send the review's text."
            )
        ids = [items[i].value for i in at]
        stored = await asyncio.to_thread(self.features.token_ids, ids)  # a blocking Feast read: off the event loop
        assert self.classifier is not None, "preprocess before load"
        resolved: list[str | np.ndarray] = list(items)
        for i, rid, tokens in zip(at, ids, stored, strict=True):
            check_vocabulary(rid, tokens, self.classifier.vocab_size)
            resolved[i] = tokens
        return resolved

    async def predict(
        self, payload: TextRequest, headers: Mapping[str, str] | None = None, response_headers: Any = None
    ) -> dict[str, Any] | InferResponse:
        assert self.batcher is not None and self.classifier is not None, "predict before load"
        rows = np.asarray(await self.batcher.submit(payload.texts), dtype=np.float32)
        if payload.v2 is None:
            return {"predictions": [p.to_dict() for p in self.classifier.predictions(rows)]}
        return self._v2_response(payload.v2, rows)

    def _v2_response(self, request: InferRequest, rows: np.ndarray) -> InferResponse:
        assert self.classifier is not None
        labels = self.classifier.labels
        best = rows.argmax(axis=1)
        n = len(rows)
        outputs = [
            InferOutput("label", [n], "BYTES", np.array([labels[i] for i in best], dtype=np.object_)),
            InferOutput("score", [n], "FP32", rows[np.arange(n), best].astype(np.float32)),
            InferOutput("probabilities", [n, len(labels)], "FP32", rows),
        ]
        return InferResponse(
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            parameters={"classes": ",".join(labels)},
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        classes = len(self.classifier.labels) if self.classifier is not None else -1
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        ]
