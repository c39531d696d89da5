"""Texts → sentiment: the model logic of the server, without HTTP.

`SentimentClassifier` holds a classifier that train wrote (loaded with
`components.common.modeling.load_trained_classifier`) and turns a list of texts into class probabilities
in one call: tokenize (cut to ``max_seq_length`` tokens, as featurize does), one dynamically padded
forward pass through `components.common.modeling.predict`, softmax, labels from the model's id2label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common import batching as D
from components.common import modeling, schema

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Prediction:
    """One text's answer: the most probable class, its probability, and every class's probability."""

    label: str
    score: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "probabilities": self.probabilities}


class SentimentClassifier:
    """A trained review classifier on one device: `probabilities(texts)` is one forward pass."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_seq_length: int = schema.MAX_SEQ_LENGTH,
        device: torch.device | None = None,
    ) -> None:
        import torch

        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.autocast_dtype = modeling.pick_precision("auto", self.device)
        config = model.config
        self.labels: tuple[str, ...] = tuple(config.id2label[i] for i in range(config.num_labels))

    @classmethod
    def load(cls, model_dir: str | Path, max_seq_length: int = schema.MAX_SEQ_LENGTH) -> SentimentClassifier:
        """The classifier in ``model_dir`` (a directory written by train), on the GPU when there is one.

        Raises:
            ValueError: The directory does not exist, lacks weights, config or tokenizer, cannot be loaded,
                its model has other labels than the pipeline's three, or takes fewer tokens than
                ``max_seq_length``.
        """
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise ValueError(f"Model directory {str(model_dir)!r} does not exist; pass a directory written by train.")
        modeling.check_max_seq_length(str(path), max_seq_length)  # the champion's too, before its weights load
        try:
            model, tokenizer = modeling.load_trained_classifier(path)
        except ValueError:
            raise
        except Exception as error:  # transformers raises OSError, RuntimeError, safetensors errors...
            reason = " ".join(str(error).split())[:300].rstrip(".")
            raise ValueError(
                f"Cannot load the classifier in {str(model_dir)!r}: {reason}. Pass a directory written by train."
            ) from error
        return cls(model, tokenizer, max_seq_length)

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's token ids, cut to ``max_seq_length`` (special tokens included)."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length)["input_ids"]
        return [np.asarray(ids, dtype=np.int64) for ids in encoded]

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), classes), in input order — one forward pass."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        ids = self.token_ids(texts)
        examples = D.Examples(input_ids=ids, labels=np.zeros(len(ids), dtype=np.int64))
        logits, _ = modeling.predict(
            self.model, examples, self.tokenizer.pad_token_id, len(ids), self.device, self.autocast_dtype
        )
        return modeling.softmax(logits).astype(np.float32)

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
