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
