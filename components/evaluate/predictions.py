"""The test split's predictions, handed on to deploy: each test review's predicted label and class probabilities.

Deploy sends a few of these reviews (their texts, from prepare's `reviews`) to the model server it starts
and checks that the server answers with the labels evaluate found here: the served model, its tokenizer and
its settings are then the ones that were evaluated.

The file is Parquet with the columns `review_id`, `predicted_label` (class name) and one
`probability_<class>` per class in class-id order (`components.common.schema`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.common import batching as D
from components.common import inference, modeling, schema
from components.common.logs import Progress

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd


def predict_probabilities(
    model_dir: str | Path, examples: D.Examples, batch_size: int = 64, backend: str = "auto"
) -> np.ndarray:
    """Class probabilities of ``examples`` (input order, shape (n, classes)) by the classifier in ``model_dir``,
    loaded as the model server loads it (`components.common.inference.load`: its ONNX model when the directory
    has one, else PyTorch), so the gate and deploy's smoke check judge the variant that is served. Says where
    it is at least every `components.common.logs.PROGRESS_EVERY_S` seconds.

    Raises:
        ValueError: See `inference.load`; or token ids the model's tokenizer cannot have produced.
    """
    classifier = inference.load(model_dir, backend)
    tokenizer = classifier.tokenizer
    D.check_vocabulary(examples, "test", classifier.vocab_size, modeling.first_token_id(tokenizer), str(model_dir))
    with Progress("evaluate") as progress:
        progress.update(f"predicting {len(examples)} reviews ({classifier.variant})")
        logits = classifier.logits(examples, batch_size)
    return modeling.softmax(logits)


def probability_columns() -> list[str]:
    """`probability_<class>` for each class, in class-id order."""
    return [f"{schema.PROBABILITY_PREFIX}{name}" for name in D.CLASS_NAMES]


def prediction_table(review_ids: list[str], probabilities: np.ndarray) -> pd.DataFrame:
    """One row per review: id, predicted class name, class probabilities."""
    import pandas as pd

    table = pd.DataFrame({schema.REVIEW_ID: [str(r) for r in review_ids]})
    table[schema.PREDICTED_LABEL] = [D.CLASS_NAMES[i] for i in probabilities.argmax(axis=1)]
    for column, values in zip(probability_columns(), probabilities.T, strict=True):
        table[column] = values
    return table


def write_predictions(table: pd.DataFrame, path: str | Path) -> None:
    """The predictions as Parquet (the evaluate step's `predictions` output)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
