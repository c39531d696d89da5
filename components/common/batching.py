"""Feature rows → training batches: validation, seeded length-grouped batch order, dynamic padding.

The features are what `featurize` wrote and Feast serves: unpadded `input_ids` per review and a class id
`label_id` in 0..2.  Padding happens per batch (to the longest review in it), and batches are built from
reviews of similar length, so little compute goes to padding.  The order of an epoch's batches is a
function of (seed, epoch) alone: a resumed run regenerates it and skips the batches it already trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common import schema

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd
    import torch

INPUT_IDS = "input_ids"
LABEL_ID = "label_id"
NUM_LABELS = len(schema.SENTIMENTS)
#: Class id -> class name, in class-id order (what the model's config carries as id2label).
CLASS_NAMES: tuple[str, ...] = tuple(schema.SENTIMENTS[schema.ID_TO_LABEL[i]] for i in range(NUM_LABELS))
#: How many batches' worth of reviews are sorted by length together (Hugging Face uses 50).
MEGABATCH_FACTOR = 50


@dataclass
class Examples:
    """One split in memory: token ids per review (int64 arrays), labels and, where given, ids and facets."""

    input_ids: list[np.ndarray]
    labels: np.ndarray
    review_ids: list[str] | None = None
    facets: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def max_token_id(self) -> int:
        return max((int(ids.max()) for ids in self.input_ids if len(ids)), default=-1)


def _class_ids() -> str:
    return ", ".join(f"{i} {name}" for i, name in enumerate(CLASS_NAMES))


def _frame(rows: Any) -> pd.DataFrame:
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, Mapping):
        return pd.DataFrame(dict(rows))
    return pd.DataFrame(list(rows))


def _shorten(ids: np.ndarray, max_length: int) -> np.ndarray:
    """Cut to ``max_length`` tokens keeping the last one (the closing special token: [SEP], </s>)."""
    if len(ids) <= max_length:
        return ids
    return np.concatenate([ids[: max_length - 1], ids[-1:]])


def to_examples(
    rows: Any,
    split: str,
    max_seq_length: int | None = None,
    require: Sequence[str] = (INPUT_IDS, LABEL_ID),
) -> Examples:
    """Validate one split's feature rows and turn them into `Examples`.

    Args:
        rows: A pandas DataFrame, a list of row dicts or a dict of columns with `input_ids`
            (list of ints, unpadded) and `label_id` (0 negative, 1 neutral, 2 positive); `review_id` and
            `product_category` are kept when present.
        split: The split's name, for error messages.
        max_seq_length: Cut longer reviews to this many tokens (keeping the closing special token).
        require: Columns that must be present.

    Raises:
        ValueError: Missing columns, no rows, missing or empty token lists, negative token ids, or labels
            other than 0, 1, 2.
    """
    frame = _frame(rows)
    missing = [c for c in require if c not in frame.columns]
    if missing:
        raise ValueError(
            f"The {split} split lacks column(s) {missing} (has {list(frame.columns)}); train and evaluate read "
            "the features written by featurize (input_ids, label_id, review_id, product_category)."
        )
    if len(frame) == 0:
        raise ValueError(
            f"The {split} split is empty: there is nothing to train or evaluate on. Check that featurize assigned "
            f"rows to {split!r} (raise --max-rows or the split fractions) and that feast_ingest wrote them."
        )
    import pandas as pd

    labels = frame[LABEL_ID]
    numeric = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isin(numeric, np.arange(NUM_LABELS))
    if bad.any():
        shown = sorted({repr(v) for v in labels[bad].tolist()})[:5]
        raise ValueError(
            f"The {split} split has {int(bad.sum())} row(s) with label_id outside 0..{NUM_LABELS - 1} "
            f"(e.g. {', '.join(shown)}). label_id is the class id ({_class_ids()}); "
            "featurize maps sentiment -1/0/1 to it. Re-run featurize on data labelled with those three classes."
        )
    input_ids: list[np.ndarray] = []
    for position, value in enumerate(frame[INPUT_IDS].tolist()):
        ids = None if value is None else np.asarray(value, dtype=np.int64).reshape(-1)
        if ids is None or ids.size == 0 or (ids < 0).any():
            what = "no token ids" if ids is None or ids.size == 0 else "negative token ids"
            rid = frame[schema.REVIEW_ID].iloc[position] if schema.REVIEW_ID in frame else position
            raise ValueError(
                f"The {split} split has {what} for review {rid!r}; input_ids must be the tokenizer's ids "
                "(featurize writes them). Re-run featurize."
            )
        input_ids.append(_shorten(ids, max_seq_length) if max_seq_length else ids)
    return Examples(
        input_ids=input_ids,
        labels=numeric.astype(np.int64),
        review_ids=[str(v) for v in frame[schema.REVIEW_ID]] if schema.REVIEW_ID in frame else None,
        facets=[str(v) for v in frame[schema.FACET]] if schema.FACET in frame else None,
    )


def check_vocabulary(examples: Examples, split: str, vocab_size: int, first_token_id: int | None, model: str) -> None:
    """Check that ``examples`` were tokenized for the model: ids within its vocabulary, the right first token.

    Raises:
        ValueError: An id is outside the embedding table, or reviews do not start with the tokenizer's
            first special token ([CLS], <s>): the features come from another tokenizer.
    """
    top = examples.max_token_id()
    if top >= vocab_size:
        raise ValueError(
            f"The {split} split has token id {top}, but {model} has only {vocab_size} embeddings: the features "
            "were tokenized with another tokenizer. Featurize with the same --base-model you train."
        )
    if first_token_id is not None:
        starts = np.fromiter((ids[0] for ids in examples.input_ids), dtype=np.int64, count=len(examples))
        wrong = int((starts != first_token_id).sum())
        if wrong:
            raise ValueError(
                f"{wrong} of {len(examples)} reviews in the {split} split do not start with token id "
                f"{first_token_id}, which {model}'s tokenizer puts first: the features were tokenized with "
                "another tokenizer. Featurize with the same --base-model you train."
            )


def epoch_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool = True
) -> list[np.ndarray]:
    """The batches (arrays of row indices) of one epoch, in training order; a function of (seed, epoch).

    Without grouping: a seeded permutation cut into batches.  With grouping: the permutation is cut into
    megabatches of ``MEGABATCH_FACTOR`` batches, each sorted by length and cut into batches, and then the
    order of all batches is shuffled, so each batch holds reviews of similar length while the sequence of
    batches stays random.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * MEGABATCH_FACTOR
    batches: list[np.ndarray] = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches for inference: rows sorted by length (least padding), in a fixed order."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass(frozen=True)
class Collator:
    """Pad a batch to its longest review (optionally to a multiple of ``pad_to_multiple_of``)."""

    examples: Examples
    pad_token_id: int
    pad_to_multiple_of: int = 0

    def __call__(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        import torch

        rows = [self.examples.input_ids[i] for i in indices]
        width = max(len(r) for r in rows)
        if self.pad_to_multiple_of > 1:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = r
            mask[j, : len(r)] = 1
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(self.examples.labels[np.asarray(indices)]),
        }


def balanced_class_weights(label_ids: Any) -> list[float]:
    """Weights per class id that make every class count alike in the loss: rows ÷ (classes × the class's rows)
    (scikit-learn's ``class_weight="balanced"``).

    Raises:
        ValueError: A class has no row (its weight would be infinite).
    """
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=NUM_LABELS)
    if (counts == 0).any():
        missing = ", ".join(CLASS_NAMES[i] for i in np.flatnonzero(counts == 0))
        raise ValueError(f"Class weights need rows of every class; the training split has none of: {missing}.")
    return [float(w) for w in counts.sum() / (len(counts) * counts)]
