"""Texts → sentiment: the model logic of the server, without HTTP.

`SentimentClassifier` holds a classifier that train wrote (loaded with `components.common.inference.load`,
as evaluate loads it: its ONNX model on ONNX Runtime when the directory has one, else PyTorch) and turns a
list of texts into class probabilities in one call: tokenize (cut to ``max_seq_length`` tokens, as featurize
does), one dynamically padded forward pass, softmax, labels from the model's id2label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.common import inference, modeling, schema


@dataclass(frozen=True)
class Prediction:
    """One text's answer: the most probable class, its probability, and every class's probability."""

    label: str
    score: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "probabilities": self.probabilities}


def cut(ids: np.ndarray, max_seq_length: int) -> np.ndarray:
    """Token ids cut to ``max_seq_length`` as the tokenizer cuts a text (``truncation=True``): the first
    ``max_seq_length - 1`` and the closing special token ([SEP] of BERT-style tokenizers, one at each end), so
    a review stored with more tokens than the server takes gets the ids its text would."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) <= max_seq_length:
        return ids
    return np.concatenate([ids[: max_seq_length - 1], ids[-1:]])


class SentimentClassifier:
    """A trained review classifier on one device: `probabilities(texts)` is one forward pass."""

    def __init__(self, engine: inference.Classifier, max_seq_length: int = schema.MAX_SEQ_LENGTH) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.max_seq_length = max_seq_length
        self.labels: tuple[str, ...] = engine.labels
        #: The PyTorch model (backend pytorch; None on ONNX Runtime).
        self.model = engine.model

    @property
    def backend(self) -> str:
        """What runs the forward pass: ``pytorch-fp32``, ``onnx-fp32`` or ``onnx-int8``."""
        return self.engine.variant

    @property
    def vocab_size(self) -> int:
        return self.engine.vocab_size

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        max_seq_length: int = schema.MAX_SEQ_LENGTH,
        backend: str = "auto",
        threads: int = 0,
    ) -> SentimentClassifier:
        """The classifier in ``model_dir`` (a directory written by train) on ``backend``
        (`components.common.inference.load`: ``auto`` runs its ONNX model when it has one, else PyTorch, on the
        GPU when there is one); ``threads``: CPU threads of one forward pass (0: the runtime's default).

        Raises:
            ValueError: The directory does not exist, lacks weights, config or tokenizer, cannot be loaded,
                its model has other labels than the pipeline's three, takes fewer tokens than
                ``max_seq_length``, or lacks the model of a forced ``backend``.
        """
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise ValueError(f"Model directory {str(model_dir)!r} does not exist; pass a directory written by train.")
        modeling.check_max_seq_length(str(path), max_seq_length)  # the champion's too, before its weights load
        return cls(inference.load(path, backend, threads), max_seq_length)

    def token_ids(self, texts: Sequence[str | np.ndarray]) -> list[np.ndarray]:
        """Each text's token ids, cut to ``max_seq_length`` (special tokens included).  An item that is token
        ids already (a review's stored features: `serving.features`) is cut the same way (`cut`)."""
        strings = [t for t in texts if isinstance(t, str)]
        encoded = iter(
            self.tokenizer(strings, truncation=True, max_length=self.max_seq_length)["input_ids"] if strings else ()
        )
        return [
            np.asarray(next(encoded), dtype=np.int64) if isinstance(t, str) else cut(t, self.max_seq_length)
            for t in texts
        ]

    def probabilities(self, texts: Sequence[str | np.ndarray]) -> np.ndarray:
        """Class probabilities, shape (len(texts), classes), in input order — one forward pass.  Items may be
        texts or token ids (see `token_ids`)."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        ids = self.token_ids(texts)
        return modeling.softmax(self.engine.batch_logits(ids)).astype(np.float32)

    def predictions(self, probabilities: np.ndarray) -> list[Prediction]:
        """`Prediction`s from rows of class probabilities."""
        out = []
        for row in probabilities:
            best = int(row.argmax())
            out.append(
                Prediction(
                    label=self.labels[best],
                    score=float(row[best]),
                    probabilities={label: float(p) for label, p in zip(self.labels, row, strict=True)},
                )
            )
        return out

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """Label, score and class probabilities of each text (input order)."""
        return self.predictions(self.probabilities(texts))
